"""Concept profiles of training words: what the frame encoder saw behind each, saved beside the model."""
from __future__ import annotations

import numpy as np
import pytest

from trainer.concepts import CONCEPTS_FILE, WordConcepts


def test_profiles_average_each_words_clips_and_round_trip(tmp_path):
    labels = ("a", "b", "c")
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.4, 0.4, 0.2]], dtype=np.float32)
    concepts = WordConcepts.fit([["circle", "falls"], ["square", "falls"], ["circle"]], probs, labels)
    assert concepts.words == ["circle", "falls", "square"]
    assert np.allclose(concepts.profiles[0], [0.6, 0.25, 0.15]) and np.allclose(concepts.profiles[1], [0.5, 0.35, 0.15])
    assert np.allclose(concepts.base, probs.mean(0))

    concepts.save(tmp_path)
    again = WordConcepts.load(tmp_path)
    assert again.words == concepts.words and again.labels == labels
    assert np.allclose(again.profiles, concepts.profiles, atol=1e-3) and np.allclose(again.base, concepts.base)
    assert WordConcepts.load(tmp_path / "nowhere") is None


def test_a_damaged_profiles_file_is_named(tmp_path):
    (tmp_path / CONCEPTS_FILE).write_bytes(b"not an npz")
    with pytest.raises(ValueError, match=CONCEPTS_FILE):
        WordConcepts.load(tmp_path)
    with pytest.raises(ValueError, match="do not match"):
        WordConcepts(["circle"], np.zeros((2, 3)), np.zeros(3), ("a", "b", "c"))


def _words_encoder(dim: int = 64, salt: int = 0):
    """A deterministic sentence encoder for tests: one fixed random unit vector per text (per salt)."""
    import zlib

    def encode(texts):
        rows = [np.random.default_rng(zlib.crc32(t.encode()) + salt).normal(size=dim) for t in texts]
        out = np.asarray(rows, np.float32)
        encode.calls += len(texts)
        return out / np.linalg.norm(out, axis=1, keepdims=True)
    encode.calls = 0
    return encode


def test_shipped_class_embeddings_serve_only_the_encoder_they_were_made_with(tmp_path, monkeypatch):
    from search import concepts
    from search.concepts import NULL_PROBES, ClassEmbeddings, random_strings

    classes = [{"names": ["tabby", "tabby cat"], "gloss": "a cat with a striped coat"},
               {"names": ["moped"], "gloss": "a motorbike with pedals"}]
    made_with = _words_encoder()
    built = ClassEmbeddings.build(made_with, classes)
    path = tmp_path / "class_embeddings.npz"
    built.save(path, probes=made_with(random_strings(NULL_PROBES)), classes=classes)

    same = _words_encoder()
    got = ClassEmbeddings.shipped(same, classes, path)
    assert got is not None and same.calls == NULL_PROBES               # only the probes are embedded
    assert np.allclose(got.names, built.names, atol=1e-3) and got.null_cosine == pytest.approx(built.null_cosine)
    assert ClassEmbeddings.shipped(_words_encoder(salt=1), classes, path) is None       # another encoder
    assert ClassEmbeddings.shipped(same, classes[:1], path) is None                     # other classes
    assert ClassEmbeddings.shipped(same, classes, tmp_path / "missing.npz") is None

    # `cached` takes the shipped file and builds nothing; another encoder builds and caches its own.
    monkeypatch.setattr(concepts, "SHIPPED", path)
    monkeypatch.setenv("VIDSEARCH_CACHE", str(tmp_path / "cache"))
    fresh = _words_encoder()
    ClassEmbeddings.cached(fresh, classes, "key")
    assert fresh.calls == NULL_PROBES and not (tmp_path / "cache").exists()
    other = _words_encoder(salt=2)
    ClassEmbeddings.cached(other, classes, "other")
    assert other.calls > NULL_PROBES and list((tmp_path / "cache").glob("class-embeddings-*.npz"))


def _reader(tmp_path, monkeypatch, encode):
    from search.concepts import ConceptReader

    monkeypatch.setenv("VIDSEARCH_CACHE", str(tmp_path / "cache"))
    return ConceptReader(encode, encoder_key="test")


def test_a_querys_new_words_are_embedded_in_one_call_with_the_weights_of_one_at_a_time(tmp_path, monkeypatch):
    from trainer.classes import class_table

    # Made-up words that the encoder places on two classes' names, so ConSE reaches those classes, and one it
    # embeds as one of the meaningless strings that set the chance level, so it reaches none.
    from search.concepts import random_strings
    names = [", ".join(c["names"]) for c in class_table()["classes"]]
    alias = {"florp": names[3], "zandle": names[7], "quibbet": random_strings(1)[0]}
    calls = []

    def aliased(encode):
        def run(texts):
            return encode([alias.get(t, t) for t in texts])
        return run

    def counted(texts):
        calls.append(list(texts))
        return words(texts)
    words = aliased(_words_encoder())
    batched = _reader(tmp_path, monkeypatch, counted)
    single = _reader(tmp_path, monkeypatch, aliased(_words_encoder()))
    batched.embeddings(), single.embeddings()
    calls.clear()

    new = ["florp", "quibbet", "zandle"]
    got = batched._similar(new)
    assert calls == [new]                                     # one encoder pass for the query's new words
    one_by_one = {w: single._similar([w])[w] for w in new}
    assert got.keys() == one_by_one.keys()
    for w in new:
        assert [c for c, _ in got[w]] == [c for c, _ in one_by_one[w]]
        assert np.allclose([x for _, x in got[w]], [x for _, x in one_by_one[w]], atol=1e-6)
    assert got["florp"][0][0] == 3 and got["zandle"][0][0] == 7 and got["quibbet"] == []

    again = batched._similar(["zandle", "florp", "wugget"])    # cached words are not embedded again
    assert calls[1:] == [["wugget"]] and again["florp"] == got["florp"]
    query = batched.read("florp quibbet wugget")
    expect: dict[int, float] = {}
    for w in ("florp", "quibbet", "wugget"):
        for c, x in single._similar([w])[w]:
            expect[c] = max(expect.get(c, 0.0), x)
    assert query.weights.keys() == expect.keys()
    assert all(query.weights[c] == pytest.approx(x, abs=1e-6) for c, x in expect.items())


def test_conse_reads_a_noun_by_its_senses_as_the_classes_are_described(tmp_path, monkeypatch):
    from search.concepts import ClassEmbeddings, word_texts
    from trainer.classes import class_table

    # A noun is put to the encoder as each of its senses: names, what it is a kind of, gloss; a word usually
    # read as a verb, or one WordNet lacks, as typed.
    assert word_texts("tomcat") == ["tomcat, a kind of domestic cat: male cat"]
    assert word_texts("moves") == ["moves"] and word_texts("florp") == ["florp"]
    assert len(word_texts("officer")) > 1 and all(t.startswith("officer, a kind of ") for t in word_texts("officer"))
    assert word_texts("bricks")[0].startswith("brick, a kind of building material")   # named by the sense's lemma

    texts = []

    def recorded(batch):
        texts.append(list(batch))
        return _words_encoder()(batch)
    classes = class_table()["classes"]
    ClassEmbeddings.build(recorded, classes)
    sorrel = next(c for c in classes if c["label"] == "sorrel")
    assert sorrel["kinds"] == ["horse"]
    assert "sorrel, a kind of horse: a horse of a brownish orange to light brown color" in texts[0]

    # A query's new words: every sense of each in one encoder call, each word scored by its closest sense.
    reader = _reader(tmp_path, monkeypatch, recorded)
    reader.embeddings()
    texts.clear()
    got = reader._similar(["officer", "moves"])
    assert texts == [word_texts("officer") + ["moves"]]
    emb = reader.embeddings()
    best = emb.similarity(_words_encoder()(word_texts("officer"))).max(axis=0)
    closest = np.argsort(-best, kind="stable")[:10]
    assert [c for c, _ in got["officer"]] == [c for c in closest if best[c] > emb.null_cosine]


def test_shipped_word_readings_spare_the_encoder_and_match_reading_afresh(tmp_path, monkeypatch):
    from search import concepts
    from search.concepts import NULL_PROBES, ClassEmbeddings, ConceptReader, random_strings
    from trainer.classes import class_table

    classes = class_table()["classes"]
    made_with = _words_encoder()
    built = ClassEmbeddings.build(made_with, classes)
    built.words = dict(zip(["officer", "brick", "zandle"], built.conse(made_with, ["officer", "brick", "zandle"])))
    path = tmp_path / "class_embeddings.npz"
    built.save(path, probes=made_with(random_strings(NULL_PROBES)), classes=classes)
    monkeypatch.setattr(concepts, "SHIPPED", path)
    monkeypatch.setenv("VIDSEARCH_CACHE", str(tmp_path / "cache"))

    encode = _words_encoder()
    reader = ConceptReader(encode, "test")
    assert len(reader.embeddings().words) == 3
    before = encode.calls
    words = ["officer", "bricks", "zandle"]          # "bricks" by its base form: the same senses
    got = reader._similar(words)
    assert encode.calls == before                    # no encoder pass
    for word, fresh in zip(words, built.conse(_words_encoder(), words)):
        assert [c for c, _ in got[word]] == [c for c, _ in fresh]
        assert np.allclose([x for _, x in got[word]], [x for _, x in fresh], atol=2e-3)
    reader._similar(["moves", "wugget"])             # not shipped ("moves" is read as typed): read afresh
    assert encode.calls == before + 2


def test_warming_a_reader_loads_wordnet_for_the_words_whose_readings_do_not_ship(tmp_path, monkeypatch):
    from trainer import senses

    reader = _reader(tmp_path, monkeypatch, _words_encoder())
    senses.wordnet.cache_clear()
    reader.warm()
    assert reader._embeddings is not None and senses.wordnet.cache_info().currsize == 1


def test_the_shipped_word_readings_are_those_the_bundled_encoder_gives_now():
    from indexer.offline import OfflineEncoders
    from search.concepts import ClassEmbeddings
    from trainer.classes import class_table

    encode = OfflineEncoders().sentence_vectors
    emb = ClassEmbeddings.shipped(encode, class_table()["classes"])
    assert emb is not None and len(emb.words) > 10_000
    words = ["officer", "meadow", "running", "coin", "kitchen"]
    for word, fresh in zip(words, emb.conse(encode, words)):
        assert [c for c, _ in emb.words[word]] == [c for c, _ in fresh], word
        assert np.allclose([x for _, x in emb.words[word]], [x for _, x in fresh], atol=5e-3), word


def test_the_class_table_files_a_class_under_a_word_only_in_a_sense_the_word_is_read_in():
    from trainer.classes import class_table

    table = class_table()
    label = {i: c["label"] for i, c in enumerate(table["classes"])}
    lexicon = {w: {label[c] for c in cs} for w, cs in table["lexicon"].items()}
    # "man" is a name of the chess piece above "castle" (rook), a sense SemCor never tagged; "red" names red
    # wine only in a sense never tagged, and is an adjective far more often.
    assert "man" not in lexicon and "red" not in lexicon and lexicon["red wine"] == {"red wine"}
    castle = next(c for c in table["classes"] if c["label"] == "castle")
    assert "man" not in castle["broader"]
    # The senses people do mean still reach their classes.
    assert {"brown bear", "ice bear"} <= lexicon["bear"] and lexicon["motorcycle"] == {"moped"}
    assert "tabby" in lexicon["cat"] and {"wall clock", "analog clock"} <= lexicon["clock"]


def test_a_whole_reaches_the_classes_of_its_parts_and_its_clips_keyword_text_names_it():
    from indexer.encode import tag_text
    from trainer.classes import class_table

    table = class_table()
    label = {i: c["label"] for i, c in enumerate(table["classes"])}
    index = {c["label"]: i for i, c in enumerate(table["classes"])}
    lexicon = {w: {label[c] for c in cs} for w, cs in table["lexicon"].items()}
    # A seat belt is part of a car seat, part of a car: a car's interior shows the car by its parts.
    assert {"seat belt", "car mirror", "sports car", "cab"} <= lexicon["car"]
    assert "car" in table["classes"][index["seat belt"]]["part_of"]
    # An ambiguous class name lends no parts ("hammer": the tool, or the one in a piano's action), and a whole
    # is named only by what its word means typed in lower case ("ICE" is an engine, "ice" is frozen water).
    assert "hammer" not in lexicon.get("piano", set()) and "ice" not in lexicon
    labels = [c["label"] for c in table["classes"]]
    text = tag_text(labels, [("seat belt", 0.4)], [(index["seat belt"], 0.4)])
    assert text.startswith("seat belt") and " car " in f" {text} "
    assert " car " not in f" {tag_text(labels, [('seat belt', 0.05)], [(index['seat belt'], 0.05)])} "


def test_a_describing_word_reaches_no_class_even_by_similarity(tmp_path, monkeypatch):
    from search.concepts import ConceptReader

    monkeypatch.setenv("VIDSEARCH_CACHE", str(tmp_path))
    encode = _words_encoder()
    reader = ConceptReader(encode, "test-encoder")
    reader.embeddings()
    before = encode.calls
    red = reader.read("red")
    assert red.weights == {} and red.matches == () and encode.calls == before   # not even embedded
    reader.read("kitten")                                                     # a noun WordNet does not reach
    assert encode.calls == before + 1
    motorcycle = reader.read("a red motorcycle")
    assert [m.source for m in motorcycle.matches] == ["motorcycle"]
