"""Stores without a trained model and the concept, keyword-tag and look-alike channels, on clips in tmp_path.

A fake frame classifier gives each generated clip class probabilities the test controls (red clips look like a
sports car, blue ones like a tabby cat), so what the concept channel and the tag text must find is known; the
end-to-end test indexes real generated videos through the CLI with the real offline encoders.
"""
from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from indexer import Store, index_paths
from search import Engine, EngineConfig, QueryError
from tests.fixtures.store import fake_reader, make_mp4, write_fake_video
from trainer.encoders import DEFAULT_FRAME_ENCODER

SPORTS_CAR, TABBY, SEASHORE = 817, 281, 978   # ImageNet class indices


class FakeClassifier:
    """A frame encoder with an ImageNet head: frame features are mean colours; probabilities follow them."""

    spec = "fake-classifier"
    channels = 3
    dim = 3

    def __init__(self):
        from trainer.encoders import imagenet_labels
        self.label_names = imagenet_labels()

    def label_probs(self, features):
        out = np.full((len(features), 1000), 0.05 / 997, np.float32)
        for row, (r, g, b) in zip(out, np.asarray(features)):
            main = SPORTS_CAR if r > b else TABBY
            row[main], row[SEASHORE], row[TABBY if main == SPORTS_CAR else SPORTS_CAR] = 0.8, 0.12, 0.03
        return out


class ClassifierOnly:
    """The offline-encoder interface with the fake classifier: no trained model, so no dense vectors."""

    dim = 0
    identity: dict = {}

    def __init__(self):
        from trainer.media import SamplingConfig
        self.sampling = SamplingConfig(fps=2.0, size=32, clip_seconds=2.0, stride_seconds=2.0)
        self.frame_encoder = FakeClassifier()

    def encode_frames(self, frames):
        return np.asarray(frames, np.float32).mean(axis=(1, 2)) / 255.0


def hashed_words(texts):
    """A sentence encoder for tests: the sum of a fixed random 256-d vector per word ("kitty" is read as "tabby"),
    so texts sharing words are close and unrelated ones nearly orthogonal."""
    out = np.zeros((len(texts), 256), np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().replace(",", " ").replace(":", " ").split():
            seed = zlib.crc32({"kitty": "tabby"}.get(word, word).encode())
            out[i] += np.random.default_rng(seed).normal(size=256).astype(np.float32)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.fixture
def colour_store(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDSEARCH_CACHE", str(tmp_path / "cache"))
    lib = tmp_path / "lib"
    lib.mkdir()
    for name, colour in (("red1", "red"), ("red2", "red"), ("blue1", "blue")):
        write_fake_video(lib / f"{name}.mp4", colour, 2.0)
    encoder = ClassifierOnly()
    report = index_paths([lib], tmp_path / "store", encoder, workers=1, reader=fake_reader(encoder.sampling))
    assert report.exit_code == 0, report.summary()
    store = Store.open(tmp_path / "store")
    yield store, Engine(store, sentences=hashed_words)
    store.close()


def paths(hits):
    return [h.video_path.rsplit("/", 1)[-1] for h in hits]


def test_a_store_without_a_model_records_its_encoders_and_channels(colour_store):
    store, engine = colour_store
    config = store.config
    assert (config.model_hash, config.dim, config.frame_encoder) == ("", 0, "fake-classifier")
    assert (config.look_dim, config.concept_classes) == (3, 1000)
    assert store.channels() == engine.channels == ["keyword", "concept", "lookalike"]
    assert engine.model is None
    red = next(v for v in store.videos() if v.path.endswith("red1.mp4"))
    clip = store.video_clips(red.id)[0]
    concepts = store.clip_concepts(clip)
    # The three classes the fake classifier holds above chance (1 / 1000); its 0.05 / 997 background is not kept.
    assert len(concepts) == 3 < config.concept_top and concepts[0] == (SPORTS_CAR, pytest.approx(0.8, abs=1e-4))
    with pytest.raises(QueryError, match="no dense channel"):
        engine.text("a car", mode="dense")
    with pytest.raises(QueryError, match="rerank"):
        engine.text("a car", rerank=True)


def test_concept_channel_finds_what_the_classifier_saw(colour_store):
    _, engine = colour_store
    cars = engine.text("a car on the road", mode="concept", k=5)
    assert sorted(paths(cars[:2])) == ["red1.mp4", "red2.mp4"]
    assert cars[0].sources == ["concept"] and cars[0].similarities["concept"] == pytest.approx(0.8, abs=1e-3)
    # Blue clips hold 0.03 sports car: thirty times what a classifier that knows nothing gives one class.
    assert paths(cars[2:]) == ["blue1.mp4"] and cars[2].similarities["concept"] == pytest.approx(0.03, abs=1e-3)
    # Every clip holds goldfish (class 1) at 0.05 / 997, under the chance level 1 / 1000: no evidence of it.
    assert engine.read("goldfish").concepts[0].classes == ("goldfish",)
    assert engine.text("goldfish", mode="concept") == []
    assert paths(engine.text("cats", mode="concept"))[0] == "blue1.mp4"            # red clips: 0.03 tabby
    reading = engine.read("motorcycle or a cat")
    assert [(c.source, c.evidence) for c in reading.concepts] == [("motorcycle", "wordnet"), ("cat", "wordnet")]
    assert reading.concepts[0].classes == ("moped",) and "tabby" in reading.concepts[1].classes
    # ConSE: "kitty" is no WordNet noun above a class; its senses ("a kind of domestic cat") reach the cats.
    kitty = engine.read("kitty").concepts
    cats = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
    assert kitty and kitty[0].evidence == "similarity" and kitty[0].classes[0] in cats
    assert paths(engine.text("kitty", mode="concept"))[0] == "blue1.mp4"
    tomcat = engine.read("tomcat").concepts          # "a kind of domestic cat: male cat", as the cats are described
    assert tomcat and tomcat[0].evidence == "similarity" and tomcat[0].classes[0] in cats


def test_keyword_tags_carry_synonyms_and_broader_names(colour_store):
    _, engine = colour_store
    # A sports car is a car, a motor vehicle, a wheeled vehicle, a vehicle: its tag text says so.
    assert sorted(paths(engine.text("vehicle", mode="keyword"))) == ["red1.mp4", "red2.mp4"]
    assert paths(engine.text("felid", mode="keyword")) == ["blue1.mp4"]
    # The weak guesses keep only their label; over-general names ("artifact", "object") are never added.
    assert engine.text("artifact", mode="keyword") == [] and engine.text("object", mode="keyword") == []


def test_hybrid_fuses_channels_and_nonsense_finds_nothing(colour_store):
    _, engine = colour_store
    hits = engine.text("sports car", k=5)
    assert sorted(paths(hits[:2])) == ["red1.mp4", "red2.mp4"]
    assert all(h.sources == ["keyword", "concept"] for h in hits[:2])
    # The blue clip's weak "sports car" guess (0.03) is one of its tag labels and above chance.
    assert paths(hits[2:]) == ["blue1.mp4"] and hits[2].sources == ["keyword", "concept"]
    for q in ("zzzz qqqq", "the of and a", "zz\x00\x07qq"):
        for mode in ("hybrid", "keyword", "concept"):
            assert engine.text(q, mode=mode) == [], (q, mode)
    for bad in ("x" * 10_000, "bad \ud800 text", "   "):
        with pytest.raises(QueryError):
            engine.text(bad)


def test_the_engine_config_chooses_the_text_channels(colour_store):
    store, _ = colour_store
    keyword_only = Engine(store, sentences=hashed_words, config=EngineConfig(text_channels=("keyword",)))
    hits = keyword_only.text("sports car", k=5)
    assert sorted(paths(hits)) == ["blue1.mp4", "red1.mp4", "red2.mp4"]
    assert all(h.sources == ["keyword"] for h in hits)
    with pytest.raises(QueryError, match="switched off"):
        keyword_only.text("sports car", mode="concept")
    # A channel the store lacks is still named as missing, and an unknown name is a config error.
    with pytest.raises(QueryError, match="no dense channel"):
        keyword_only.text("a car", mode="dense")
    with pytest.raises(ValueError, match="text_channels.*'colour'"):
        EngineConfig(text_channels=("keyword", "colour"))


def test_lookalike_similar_finds_the_same_looking_clip(colour_store):
    store, engine = colour_store
    red = store.video_by_path(next(v.path for v in store.videos() if v.path.endswith("red1.mp4")))
    hits = engine.similar(store.video_clips(red.id)[0], k=5)
    assert paths(hits)[0] == "red2.mp4" and hits[0].sources == ["lookalike"]
    assert hits[0].similarities["lookalike"] == pytest.approx(1.0, abs=1e-4)


def test_adding_model_vectors_to_a_model_less_store(colour_store, tmp_path):
    import dataclasses

    from indexer.writer import StoreWriter
    store, _ = colour_store
    store.close()
    writer = StoreWriter.open(tmp_path / "store")
    clips = writer.rows_without_vectors("clips")
    assert len(clips) == 3 and writer.rows_without_vectors("captions") == []
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(clips), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    config = dataclasses.replace(writer.config, model_path="/models/m", model_hash="abc", model_name="m", dim=8)
    assert writer.add_model_vectors(config, zip(clips, vectors)) == 3
    writer.close()
    with Store.open(tmp_path / "store") as reopened:
        assert reopened.channels() == ["dense", "keyword", "concept", "lookalike"]
        scores, ids = reopened.search_clips(vectors[1], 1)
        # A reader searches exact indexes in half precision (indexer.faiss_index.halved).
        assert int(ids[0, 0]) == clips[1] and scores[0, 0] == pytest.approx(1.0, abs=1e-3)
        assert reopened.counts()["pending"] == 0


def transcode(src, dst, codec: str = "mpeg4"):
    """A copy of a video re-encoded with another codec (its pixels change a little, its content not)."""
    from fractions import Fraction

    import av
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = None
        for i, frame in enumerate(inp.decode(video=0)):
            if stream is None:
                stream = out.add_stream(codec, rate=8)
                stream.width, stream.height, stream.pix_fmt = frame.width, frame.height, "yuv420p"
                stream.codec_context.time_base = Fraction(1, 8)
            frame = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24").reformat(
                format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 8)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dst


@pytest.mark.slow
def test_index_without_a_model_end_to_end_through_the_cli(tmp_path, capsys):
    from webui import create_app
    from webui.cli import main
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(2):
        make_mp4(lib / f"clip{i}.mp4", seconds=4.0 + i)
    (lib / "clip0.srt").write_text("1\n00:00:00,000 --> 00:00:03,000\nthe harbour at dawn\n", encoding="utf-8")
    store = tmp_path / "store"
    assert main(["index", str(lib), "--store", str(store), "--workers", "1", "--no-progress"]) == 0
    assert "indexed 2," in capsys.readouterr().out
    saved = json.loads((store / "store.json").read_text())
    assert (saved["model_hash"], saved["dim"]) == ("", 0)
    assert (saved["frame_encoder"], saved["text_encoder"]) == (DEFAULT_FRAME_ENCODER, "all-MiniLM-L6-v2")
    assert (saved["look_dim"], saved["concept_classes"]) == (1280, 1000)

    assert main(["search", "--store", str(store), "harbour", "--mode", "keyword", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["channels"] == ["keyword", "concept", "lookalike"]
    assert found["results"][0]["video_path"].endswith("clip0.mp4") and found["results"][0]["sources"] == ["keyword"]
    # Whatever the frame encoder saw most in the first clip, the concept channel finds by its name.
    with Store.open(store) as s:
        first = s.clips(s.video_clips(s.video_by_path(lib / "clip0.mp4").id))[0]
    label = first.tags[0][0]
    assert main(["search", "--store", str(store), label, "--mode", "concept", "--json"]) == 0
    concept = json.loads(capsys.readouterr().out)
    assert first.id in [r["clip_id"] for r in concept["results"]]
    assert concept["read_as"]["concepts"][0]["classes"][0] == label
    assert main(["search", "--store", str(store), "x", "--mode", "dense"]) == 2
    assert "no dense channel" in capsys.readouterr().err

    # A re-encoded copy (another codec) of the first video finds it first, by look alone.
    copy = transcode(lib / "clip0.mp4", tmp_path / "copy.mkv")
    assert main(["search", "--store", str(store), "--video", str(copy), "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["results"][0]
    assert top["video_path"].endswith("clip0.mp4") and top["sources"] == ["lookalike"]

    client = create_app(store).test_client()
    health = client.get("/api/health").get_json()
    assert health["channels"] == ["keyword", "concept", "lookalike"] and health["model"] == ""
    assert client.get("/api/search?q=x&mode=dense").status_code == 400
    similar = client.get(f"/api/clips/{first.id}/similar?k=3").get_json()["results"]
    assert similar and all(r["sources"] == ["lookalike"] for r in similar)
    page = client.get(f"/?q={label}&mode=concept").get_data(as_text=True)
    assert 'class="badge badge-concept"' in page and "keyword, concept, lookalike" in page


def test_bad_text_gets_a_json_400_or_nothing_in_every_mode(colour_store):
    from webui import create_app
    store, engine = colour_store
    client = create_app(store.dir, engine=engine).test_client()
    for mode in ("hybrid", "keyword", "concept", "dense"):
        # "%ED%A0%80" is the UTF-8 form of a lone surrogate; an unpaired one in a str is refused by the engine.
        for q, expected in (("the of and", 200), ("x" * 10_000, 400), ("a\x00b\x1f", 200), ("%ED%A0%80", 200)):
            r = client.get(f"/api/search?mode={mode}&q={q}")
            want = 400 if mode == "dense" else expected          # this store has no dense channel
            assert r.status_code == want and r.is_json, (mode, q[:12], r.status_code)
            body = r.get_json()
            assert ("error" in body) if want == 400 else body["results"] == []
    health = client.get("/api/health").get_json()
    assert health["channels"] == ["keyword", "concept", "lookalike"] and health["model"] == ""


def tiny_clip(out):
    """A randomly initialised CLIP (both towers, 16-d projections) with a byte-level tokenizer, saved to `out`."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    chars = sorted(ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars])}
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(out)
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(out)
    return out


def test_a_clip_frame_encoder_keeps_image_embeddings_and_searches_them_by_text(tmp_path):
    from indexer.offline import OfflineEncoders
    from trainer.media import SamplingConfig
    model_dir = tiny_clip(tmp_path / "clip")
    lib = tmp_path / "lib"
    lib.mkdir()
    for name, colour in (("red", "red"), ("blue", "blue"), ("green", "green")):
        write_fake_video(lib / f"{name}.mp4", colour, 2.0)
    encoders = OfflineEncoders(f"clip:{model_dir}", sampling=SamplingConfig(fps=2.0, size=32, clip_seconds=2.0,
                                                                            stride_seconds=2.0))
    report = index_paths([lib], tmp_path / "store", encoders, workers=1, reader=fake_reader(encoders.sampling))
    assert report.exit_code == 0, report.summary()
    with Store.open(tmp_path / "store") as store:
        assert (store.config.look_dim, store.config.concept_classes) == (16, 0)
        assert store.channels() == ["keyword", "lookalike", "clip"] and (tmp_path / "store" / "looks.faiss").is_file()
        # Random weights match nothing better than chance, so the cutoffs are off to see the plumbing.
        engine = Engine(store, config=EngineConfig(cutoffs=False))
        hits = engine.text("a red car", mode="clip", k=5)
        assert len(hits) == 3 and all(h.sources == ["clip"] for h in hits)
        query = encoders.clip_text_vectors(["a red car"])[0]
        for h in hits:   # the score is the cosine of the CLIP text embedding with the clip's image embedding
            assert h.similarities["clip"] == pytest.approx(float(store.clip_vector(h.clip_id, "look") @ query),
                                                           abs=1e-3)
        assert "clip" in engine.text("red", k=5)[0].sources
        with pytest.raises(QueryError, match="no concept channel"):
            engine.text("a red car", mode="concept")
