"""Training: model dir layout, repeatable seeds, exact resume, feature cache reuse, the front door, the CLI."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.fixtures.model import tiny_config
from trainer.encoders import DEFAULT_FRAME_ENCODER
from trainer.lexicon import caption_vocabulary, load_vocabulary
from trainer.training import Batcher, _choose, epoch_batches, fit, make_scheduler, train, Dist

COLORS = ("red", "green", "blue")
MOVES = ("left", "right")
FEATURE_DIM = (1280 + 27) * 5  # the default frame encoder's size (network features and colour histograms, each
                               # for the frame and 4 grid cells), so `trainer.load` can pair the two


def synthetic_examples(n: int = 18, frames: int = 4, seed: int = 0):
    """Captions and (T, F) features where colour sets a constant direction and motion a moving bump."""
    rng = np.random.default_rng(seed)
    texts, feats = [], []
    for i in range(n):
        c, m = i % 3, (i // 3) % 2
        f = 0.1 * rng.standard_normal((frames, FEATURE_DIM)).astype(np.float32)
        f[:, c] += 3.0
        for t in range(frames):
            f[t, 10 + (t if m == 0 else frames - 1 - t)] += 3.0
        texts.append(f"a {COLORS[c]} shape moves {MOVES[m]}")
        feats.append(f)
    return texts, feats


def _weights(model_dir):
    return load_file(os.path.join(model_dir, "model.safetensors"))


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fit_writes_a_complete_model_dir(tmp_path):
    texts, feats = synthetic_examples()
    out = fit(texts, feats, tmp_path / "m", tiny_config(tmp_path / "cache", batch_size=6))
    names = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "visual_vocab.npz",
            "frame_encoder.json", "train_config.json", "metrics.jsonl", "loss.png", "checkpoint.pt",
            "caption_words.json"} <= names
    assert load_vocabulary(out) == caption_vocabulary(texts)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["kind"] == "step"]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert len(epochs) == 2 and len(steps) == 6            # 18 clips / 6 per batch * 2 epochs
    assert all(r["clips_per_s"] > 0 and np.isfinite(r["loss"]) for r in steps)
    assert {"nce_loss", "align_loss", "mlm_loss", "mvp_loss", "lr", "temperature"} <= set(steps[0])
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "videobert" and config["visual_vocab_size"] == 4
    assert config["sampling"]["fps"] == 1.0
    assert json.loads((out / "frame_encoder.json").read_text()) == {"spec": DEFAULT_FRAME_ENCODER,
                                                                      "dim": FEATURE_DIM}


def test_same_seed_repeats_exactly_on_cpu(tmp_path):
    texts, feats = synthetic_examples()
    cfg = tiny_config(tmp_path / "cache", epochs=1, batch_size=6)
    a = fit(texts, feats, tmp_path / "a", cfg)
    b = fit(texts, feats, tmp_path / "b", cfg)
    assert _same(_weights(a), _weights(b))
    c = fit(texts, feats, tmp_path / "c", tiny_config(tmp_path / "cache", epochs=1, batch_size=6, seed=1))
    assert not _same(_weights(a), _weights(c))


def test_resume_continues_exactly_where_training_stopped(tmp_path):
    texts, feats = synthetic_examples()
    straight = fit(texts, feats, tmp_path / "straight", tiny_config(tmp_path / "cache", batch_size=6))
    part = fit(texts, feats, tmp_path / "part", tiny_config(tmp_path / "cache", batch_size=6, stop_after_epoch=1))
    ckpt = torch.load(part / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 1
    resumed = fit(texts, feats, part, tiny_config(tmp_path / "cache", batch_size=6, resume=True))
    assert _same(_weights(straight), _weights(resumed))
    lines = lambda d: [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert [r["step"] for r in lines(straight)] == [r["step"] for r in lines(resumed)]
    assert [r["loss"] for r in lines(straight)] == [r["loss"] for r in lines(resumed)]


def test_batcher_masks_caption_tokens_and_frames():
    from transformers import AutoTokenizer

    from trainer.encoders import default_text_model_dir
    from trainer.modeling import MASKED_FRAME

    tok = AutoTokenizer.from_pretrained(default_text_model_dir())
    texts, feats = synthetic_examples(6)
    vis = [np.arange(4) % 3 for _ in feats]
    batch = Batcher(tok, texts, feats, vis, mask_prob=0.15)(list(range(6)), torch.Generator().manual_seed(0))
    labels, ids = batch["mlm_labels"], batch["text_ids"]
    assert ((labels != -100).sum(1) >= 1).all()                       # every caption has a masked token
    masked = labels != -100
    assert torch.equal(labels[masked], ids[masked])
    special = torch.isin(ids, torch.tensor(tok.all_special_ids))
    assert not (masked & special).any()
    assert ((batch["mvp_labels"] != -100).sum(1) >= 1).all()
    assert (batch["mvp_visual_ids"][batch["mvp_labels"] != -100] == MASKED_FRAME).all()
    assert batch["features"].shape == (6, 4, FEATURE_DIM) and batch["frame_mask"].all()


def test_word_dropout_keeps_words_in_order_and_only_when_training():
    from transformers import AutoTokenizer

    from trainer.encoders import default_text_model_dir

    tok = AutoTokenizer.from_pretrained(default_text_model_dir())
    words = "one two three four five six seven eight".split()
    batcher = Batcher(tok, [" ".join(words)], [np.zeros((1, 4), np.float32)], [np.zeros(1, np.int64)], 0.0,
                      word_dropout=0.5)
    gen = torch.Generator().manual_seed(0)
    seen = [batcher._caption(0, gen).split() for _ in range(20)]
    assert any(len(kept) < len(words) for kept in seen)
    for kept in seen:
        positions = [words.index(w) for w in kept]
        assert kept and positions == sorted(set(positions))          # a non-empty subsequence
    assert batcher._caption(0, None) == " ".join(words)


def test_choose_respects_allowed_positions():
    allowed = torch.tensor([[True, False, True], [False, False, False]])
    pick = _choose(allowed, 0.0, torch.Generator().manual_seed(0))
    assert pick[0].sum() == 1 and not (pick & ~allowed).any() and pick[1].sum() == 0


def test_epoch_batches_shuffle_per_epoch_and_split_between_ranks():
    a0 = epoch_batches(10, 4, 0, Dist(0, 1), seed=0)
    assert sorted(i for b in a0 for i in b) == list(range(10))
    assert a0 == epoch_batches(10, 4, 0, Dist(0, 1), seed=0)
    assert a0 != epoch_batches(10, 4, 1, Dist(0, 1), seed=0)
    r0 = epoch_batches(10, 4, 0, Dist(0, 2), seed=0)
    r1 = epoch_batches(10, 4, 0, Dist(1, 2), seed=0)
    assert not set(i for b in r0 for i in b) & set(i for b in r1 for i in b)


def test_warmup_then_cosine_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, total_steps=20, warmup=0.1)
    lrs = []
    for _ in range(20):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert all(x >= y for x, y in zip(lrs[1:], lrs[2:])) and lrs[-1] < 0.02


def test_bad_settings_are_named(tmp_path):
    texts, feats = synthetic_examples(4)
    with pytest.raises(ValueError, match="epochs"):
        fit(texts, feats, tmp_path / "x", tiny_config(tmp_path, epochs=0))
    with pytest.raises(ValueError, match="mask_prob"):
        fit(texts, feats, tmp_path / "x", tiny_config(tmp_path, mask_prob=1.5))


def test_second_run_reads_the_feature_cache(tiny_model_dir, synth_library, feature_cache_dir, tmp_path):
    entries = sorted(feature_cache_dir.rglob("*.npz"))
    assert len(entries) == len(synth_library.videos)
    stamps = [e.stat().st_mtime_ns for e in entries]
    out = train([synth_library.manifest], tmp_path / "again", tiny_config(feature_cache_dir, epochs=1))
    assert (out / "model.safetensors").is_file()
    assert [e.stat().st_mtime_ns for e in sorted(feature_cache_dir.rglob("*.npz"))] == stamps


def test_front_door_embeds_text_clips_and_matches(tiny_model_dir, synth_library):
    import trainer
    from trainer.media import decode

    model = trainer.load(tiny_model_dir)
    assert model.dim == 32 and model.sampling.fps == 1.0
    assert model.identity["name"] == tiny_model_dir.name and len(model.identity["hash"]) == 64
    text = model.embed_text(["a red circle moves left", "two shapes grow"])
    assert text.shape == (2, 32) and text.dtype == np.float32
    assert np.allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    clips = [c.frames for c in decode(synth_library.videos[0], model.sampling).clips(model.sampling)]
    clips.append(decode(synth_library.videos[1], model.sampling).frames)
    video = model.embed_clips(clips)
    assert video.shape == (len(clips), 32) and np.allclose(np.linalg.norm(video, axis=1), 1.0, atol=1e-5)
    feats = [model.encode_frames(c) for c in clips]
    assert feats[0].shape == (len(clips[0]), FEATURE_DIM)
    assert np.allclose(model.embed_clips(feats, features=True), video, atol=1e-5)
    probs = model.match(["a red circle moves left"] * len(clips), clips)
    assert probs.shape == (len(clips),) and ((probs >= 0) & (probs <= 1)).all()
    tags = model.tags(clips[0], top=3)
    assert len(tags) == 3 and all(isinstance(n, str) and 0 <= p <= 1 for n, p in tags)
    with pytest.raises(ValueError, match="list of strings"):
        model.embed_text("a single string")
    with pytest.raises(ValueError, match="one clip per text"):
        model.match(["a", "b"], clips[:1])


def test_load_names_what_is_missing(tmp_path):
    import trainer

    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        trainer.load(tmp_path)


@pytest.mark.slow
def test_cli_train_from_minilm_keeps_the_text_encoder(synth_library, feature_cache_dir, tmp_path, capsys):
    from transformers import AutoModel

    import trainer
    from trainer.encoders import default_text_model_dir
    from webui.cli import main

    out = tmp_path / "cli_model"
    code = main(["train", str(synth_library.manifest), "--out", str(out), "--epochs", "1", "--batch-size", "8",
                 "--branching", "2", "--depth", "2", "--cache-dir", str(feature_cache_dir), "--workers", "1",
                 "--no-progress"])
    assert code == 0 and str(out) in capsys.readouterr().out
    model = trainer.load(out)
    assert model.dim == 384 and model.model.config.visual_vocab_size == 4
    minilm = AutoModel.from_pretrained(default_text_model_dir()).state_dict()
    ours = model.model.videobert.bert.state_dict()
    assert all(torch.equal(ours[k], minilm[k]) for k in ours)       # frozen: text space kept exactly
    # A training caption with one word swapped for a WordNet synonym is read back from the saved vocabulary.
    from search import QueryReader

    swaps = {"diamond": "rhombus", "falls": "descends"}
    caption, word = next((row["caption"], w) for row in synth_library.rows for w in swaps
                         if w in row["caption"].split())
    query = caption.replace(word, swaps[word])
    assert QueryReader.load(out).read(query)[0] == caption
    assert not np.allclose(model.embed_text([query]), model.embed_text([caption]), atol=1e-3)


def test_training_saves_what_the_frame_encoder_saw_behind_each_word(tiny_model_dir, synth_library):
    import trainer
    from trainer.concepts import CONCEPTS_FILE, WordConcepts
    from trainer.lexicon import load_vocabulary

    concepts = WordConcepts.load(tiny_model_dir)
    assert (tiny_model_dir / CONCEPTS_FILE).is_file() and len(concepts.labels) == 1000
    assert set(concepts.words) == set(load_vocabulary(tiny_model_dir))
    assert np.allclose(concepts.profiles.sum(1), 1.0, atol=1e-2) and np.isclose(concepts.base.sum(), 1.0, atol=1e-3)
    assert not hasattr(trainer.load(tiny_model_dir), "rewrite")      # reading queries is search's part
