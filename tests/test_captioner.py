"""Caption decoder: shapes, generation, save/load, learning, `vidsearch caption`, descriptions in the index, eval."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from tests.fixtures.model import TINY_MODEL, tiny_config
from tests.test_train import COLORS, synthetic_examples
from trainer.caption_eval import AttributeReader, attribute_accuracy, caption_metrics, renderings
from trainer.caption_training import load_captioner, save_captioner
from trainer.captioner import caption_logits, caption_loss, decoder_config, frame_memory_spec, generate, new_captioner
from trainer.modeling import VideoBertConfig
from trainer.training import fit


def _tiny_decoder(kind: str, frames: bool = False, colour: int = 0):
    video = VideoBertConfig(vocab_size=50, **{k: v for k, v in TINY_MODEL.items()})
    extra = {"frame_memory": frame_memory_spec(8, 4, colour)} if frames else {}
    torch.manual_seed(0)
    return new_captioner(decoder_config(kind, video, bos=1, eos=2, pad=0, **extra))


def _states(b=3, s=6, h=32):
    states = torch.randn(b, s, h)
    mask = torch.ones(b, s, dtype=torch.bool)
    mask[1, 4:] = False                                  # a shorter clip
    return states, mask


@pytest.mark.parametrize("kind", ["bert", "bart"])
def test_decoder_shapes_loss_and_generation(kind):
    decoder = _tiny_decoder(kind).eval()
    states, mask = _states()
    ids = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 9, 2, 0], [1, 5, 2, 0, 0]])
    tmask = (ids != 0).long()
    logits = caption_logits(decoder, states, mask, ids, tmask)
    assert logits.shape == (3, 5, 50)
    loss = caption_loss(decoder, states, mask, ids, tmask)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    out = generate(decoder, states, mask, num_beams=3, max_length=9)
    assert out.shape[0] == 3 and out.shape[1] <= 9 and (out[:, 0] == 1).all()
    for row in out.tolist():                             # no trigram twice (no_repeat_ngram_size=3)
        grams = [tuple(row[i:i + 3]) for i in range(len(row) - 2) if 0 not in row[i:i + 3]]
        assert len(grams) == len(set(grams))


@pytest.mark.parametrize("kind", ["bert", "bart"])
def test_cached_greedy_generation_matches_teacher_forcing(kind):
    """generate() with its cache gives the tokens a step-by-step argmax over the full prefix gives."""
    decoder = _tiny_decoder(kind).eval()
    states, mask = _states()
    out = generate(decoder, states, mask, num_beams=1, max_length=7, no_repeat_ngram_size=0, min_length=7)
    ids = out[:, :1]
    with torch.no_grad():
        for _ in range(6):
            logits = caption_logits(decoder, states, mask, ids, torch.ones_like(ids))
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ids)


def _frames(b=3, t=4, f=8):
    feats = torch.randn(b, t, f)
    fmask = torch.ones(b, t, dtype=torch.bool)
    fmask[1, 2:] = False                                 # the shorter clip (its states end at 4 = 2 frames + 2)
    return feats, fmask


@pytest.mark.parametrize("kind", ["bert", "bart"])
def test_frame_memory_follows_the_states_and_changes_the_caption(kind):
    """A decoder with a frame memory attends to the states, then one projected slot per frame; the frames
    matter (other features give other logits) and a padded frame does not."""
    decoder = _tiny_decoder(kind, frames=True).eval()
    states, mask = _states()
    feats, fmask = _frames()
    memory, memory_mask = decoder.memory(states, mask, feats, fmask)
    assert memory.shape == (3, 6 + 4, 32) and torch.equal(memory[:, :6], states)
    assert torch.equal(memory_mask, torch.cat([mask, fmask], 1))
    ids = torch.tensor([[1, 5, 6, 2]] * 3)
    with torch.no_grad():
        logits = caption_logits(decoder, memory, memory_mask, ids, torch.ones_like(ids))
        other = caption_logits(decoder, *decoder.memory(states, mask, -feats, fmask), ids, torch.ones_like(ids))
        padded = feats.clone()
        padded[1, 2:] = 100.0
        same = caption_logits(decoder, *decoder.memory(states, mask, padded, fmask), ids, torch.ones_like(ids))
    assert not torch.allclose(logits, other) and torch.allclose(logits, same, atol=1e-5)
    out = generate(decoder, memory, memory_mask, num_beams=2, max_length=6)
    assert out.shape[0] == 3 and (out[:, 0] == 1).all()
    with pytest.raises(ValueError, match="frame features"):
        decoder.memory(states, mask)


@pytest.mark.parametrize("kind", ["bert", "bart"])
def test_colour_histograms_get_slots_of_their_own(kind):
    """With a colour block (the last 3 of 8 feature values here), each frame gives a slot of its network
    features and then one of its colour histogram; each slot reads only its own part of the features."""
    decoder = _tiny_decoder(kind, frames=True, colour=3).eval()
    assert frame_memory_spec(8, 4, 3)["colour_dim"] == 3 and "colour_dim" not in frame_memory_spec(8, 4)
    states, mask = _states()
    feats, fmask = _frames()
    memory, memory_mask = decoder.memory(states, mask, feats, fmask)
    assert memory.shape == (3, 6 + 2 * 4, 32)
    assert torch.equal(memory_mask, torch.cat([mask, fmask, fmask], 1))
    recoloured = feats.clone()
    recoloured[..., 5:] = -feats[..., 5:]               # (a shift alone would be normalised away)
    again, _ = decoder.memory(states, mask, recoloured, fmask)
    assert torch.allclose(again[:, :10], memory[:, :10])       # the states and network slots stay
    assert not torch.allclose(again[0, 10:], memory[0, 10:])   # the colour slots move
    ids = torch.tensor([[1, 5, 6, 2]] * 3)
    with torch.no_grad():
        logits = caption_logits(decoder, memory, memory_mask, ids, torch.ones_like(ids))
    assert torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="colour_dim"):
        _tiny_decoder(kind, frames=True, colour=8)


def test_by_default_a_frame_is_one_slot_and_its_colour_cells_are_slots_of_their_own(tiny_captioner_dir):
    """The trained decoder's layout: one slot per frame for the network's features, one per frame and cell for
    the colour histograms (the default frame encoder's whole frame and 2 x 2 cells)."""
    from trainer.captioner import FrameMemory

    spec = frame_memory_spec(18, 4, colour_dim=6, colour_cells=2)
    assert spec["colour_cells"] == 2 and "cells" not in spec
    memory = FrameMemory(18, 16, 4, colour_dim=6, colour_cells=2).eval()
    feats, fmask = torch.randn(2, 3, 18), torch.ones(2, 3, dtype=torch.bool)
    slots = memory(feats, fmask)
    assert slots.shape == (2, 3 + 3 * 2, 16)
    moved = feats.clone()
    moved[0, 2, 15:] = torch.randn(3)                                # frame 2, colour cell 1
    again = memory(moved, fmask)
    assert [i for i in range(9) if not torch.allclose(again[0, i], slots[0, i])] == [3 + 2 * 2 + 1]
    assert memory.slot_mask(torch.tensor([[True, False, False]]))[0].tolist() == [True, False, False] + \
        [True, True] + [False] * 4
    with pytest.raises(ValueError, match="colour_cells"):
        FrameMemory(18, 16, 4, colour_dim=6, colour_cells=4)
    decoder = load_captioner(tiny_captioner_dir, "cpu")
    assert decoder.frames.colour_cells == 5
    # Trained by default with each cell's look in its colour slot, colour erased from the looks.
    assert decoder.frames.cell_looks and decoder.frames.look_erase.abs().sum() > 0


def test_cell_looks_share_their_cells_colour_slot_and_carry_no_linear_colour(tmp_path):
    from trainer.captioner import FrameMemory

    look, bins, cells = 4, 3, 2
    width = (look + bins) * cells
    spec = frame_memory_spec(width, 4, colour_dim=bins * cells, colour_cells=cells, cell_looks=True)
    assert spec["cell_looks"] and "cell_looks" not in frame_memory_spec(width, 4, bins * cells, cells)
    torch.manual_seed(0)
    memory = FrameMemory(width, 16, 4, colour_dim=bins * cells, colour_cells=cells, cell_looks=True).eval()
    feats, fmask = torch.randn(2, 3, width), torch.ones(2, 3, dtype=torch.bool)
    slots = memory(feats, fmask)
    assert slots.shape == (2, 3 + 3 * cells, 16)                     # no slots added: looks join colour slots
    moved = feats.clone()
    moved[0, 2, look:2 * look] = torch.randn(look)                   # frame 2, block 1's network features
    again = memory(moved, fmask)
    assert [i for i in range(9) if not torch.allclose(again[0, i], slots[0, i])] == [2, 3 + 2 * cells + 1]

    # Training frames whose looks hold their colour along two directions: fit_eraser removes them.
    gen = torch.Generator().manual_seed(1)
    colour = torch.rand(500, cells, bins, generator=gen)
    mix = torch.zeros(bins, look)
    mix[0, 0], mix[1, 3] = 2.0, -1.5
    looks = torch.randn(500, cells, look, generator=gen) + colour @ mix
    train = torch.cat([looks.reshape(500, -1), colour.reshape(500, -1)], 1)

    def cross(x):
        x, z = x.reshape(-1, look), colour.reshape(-1, bins)
        return ((x - x.mean(0)).T @ (z - z.mean(0)) / len(x)).abs().max().item()

    assert cross(memory._looks(train)) > 0.1                          # nothing erased before fitting
    assert 2 <= memory.fit_eraser(train) <= bins                      # the sample's chance covariance too
    assert cross(memory._looks(train)) < 1e-5
    planted = memory.look_erase.T @ torch.eye(look)[:, [0, 3]]         # the two directions colour was put in
    assert (planted.norm(dim=0) > 0.99).all()
    assert FrameMemory(width, 16, 4, bins * cells, cells).fit_eraser(train) == 0     # no cell looks: nothing
    with pytest.raises(ValueError, match="cell_looks"):
        FrameMemory(width, 16, 4, cell_looks=True)

    # The erased directions are saved with the decoder and come back with it.
    video = VideoBertConfig(vocab_size=50, **{k: v for k, v in TINY_MODEL.items()})
    decoder = new_captioner(decoder_config("bert", video, bos=1, eos=2, pad=0, frame_memory=spec)).eval()
    decoder.frames.fit_eraser(train)
    save_captioner(decoder, tmp_path)
    again = load_captioner(tmp_path, "cpu")
    assert again.frames.cell_looks and torch.equal(again.frames.look_erase, decoder.frames.look_erase)
    assert torch.allclose(again.frames(feats, fmask), decoder.frames(feats, fmask))


def test_memory_drop_hides_all_but_the_colour_slots_of_the_clips_it_draws():
    from trainer.caption_training import drop_memory
    from trainer.train_config import TrainConfig

    decoder = _tiny_decoder("bert", frames=True, colour=3)
    states, smask = _states()
    feats, fmask = torch.randn(3, 4, 8), torch.ones(3, 4, dtype=torch.bool)
    _, mask = decoder.memory(states, smask, feats, fmask)
    assert mask.shape == (3, 6 + 4 + 4)
    gen = torch.Generator().manual_seed(0)
    assert drop_memory(decoder, mask, 4, 0.0, gen) is mask                      # off: nothing drawn
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(0).get_state())
    hidden = drop_memory(decoder, mask, 4, 0.999, gen)
    assert not hidden[:, :10].any() and torch.equal(hidden[:, 10:], mask[:, 10:])  # colour slots stay
    assert mask[:, :10].any()                                                      # the caller's mask is kept
    some = drop_memory(decoder, mask, 4, 0.5, torch.Generator().manual_seed(2))
    drawn = [not some[i, :10].any() for i in range(3)]
    assert any(drawn) and not all(drawn)
    for i in range(3):
        assert drawn[i] or torch.equal(some[i], mask[i])                            # the others untouched
    plain = _tiny_decoder("bert", frames=True, colour=0)                          # no colour slots: unchanged
    _, plain_mask = plain.memory(states, smask, feats, fmask)
    assert drop_memory(plain, plain_mask, 4, 0.5, gen) is plain_mask
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="caption_memory_drop"):
            TrainConfig(caption_memory_drop=bad).check()


@pytest.mark.parametrize("frames,colour", [(False, 0), (True, 0), (True, 3)])
def test_save_load_round_trip(tmp_path, frames, colour):
    decoder = _tiny_decoder("bert", frames=frames, colour=colour).eval()
    save_captioner(decoder, tmp_path)
    files = {p.name for p in (tmp_path / "captioner").iterdir()}
    assert files >= {"config.json", "model.safetensors", "generation_config.json"}
    assert ("frame_memory.safetensors" in files) == frames
    again = load_captioner(tmp_path, "cpu")
    assert (again.frames is None) == (not frames)
    assert getattr(again.frames, "colour_dim", 0) == colour
    states, mask = _states()
    feats, fmask = _frames()
    ids = torch.tensor([[1, 5, 6, 2]] * 3)
    with torch.no_grad():
        assert torch.allclose(caption_logits(decoder, *decoder.memory(states, mask, feats, fmask), ids,
                                             torch.ones_like(ids)),
                              caption_logits(again, *again.memory(states, mask, feats, fmask), ids,
                                             torch.ones_like(ids)))
    assert again.generation_config.no_repeat_ngram_size == 3
    save_captioner(None, tmp_path)                       # a run without a decoder leaves none behind
    assert load_captioner(tmp_path, "cpu") is None


def _colour_named(text: str) -> str | None:
    found = [c for c in COLORS if re.search(rf"\b{c}\b", text)]
    return found[0] if len(found) == 1 else None


@pytest.mark.slow
def test_decoder_learns_the_colour(tmp_path):
    """On a tiny generated set the descriptions of new clips name their colour far above chance (1/3)."""
    import trainer

    texts, feats = synthetic_examples(n=36)
    cfg = tiny_config(tmp_path / "cache", batch_size=6, epochs=6, captioner="bert", caption_epochs=25,
                      caption_lr=3e-3)
    out = fit(texts, feats, tmp_path / "m", cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["caption_loss"] for r in rows if r["kind"] == "caption_epoch"]
    assert len(losses) == 25 and losses[-1] < 0.5 * losses[0]
    model = trainer.load(out, device="cpu")
    test_texts, test_feats = synthetic_examples(n=12, seed=1)
    described = model.describe(test_feats, features=True, num_beams=2, max_length=12)
    assert len(described) == 12 and all(isinstance(d, str) and d for d in described)
    hits = [_colour_named(d) == _colour_named(t) for d, t in zip(described, test_texts)]
    assert np.mean(hits) >= 0.6, list(zip(described, test_texts))


def _decoder_weights(model_dir) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "captioner" / "model.safetensors"))


def test_joint_training_trains_the_decoder_with_videobert_and_resumes(tmp_path):
    """With `caption_weight`, the decoder learns in VideoBERT's steps (its loss in their metrics rows, no second
    stage), is saved and describes; a run stopped after its first epoch and resumed ends where an unbroken run
    does, decoder included."""
    import trainer

    texts, feats = synthetic_examples(n=12)
    cfg = tiny_config(tmp_path / "cache", batch_size=6, epochs=2, captioner="bert", caption_weight=1.0,
                      caption_model={"num_hidden_layers": 1})
    whole = fit(texts, feats, tmp_path / "whole", cfg)
    rows = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert all("caption_loss" in r for r in rows if r["kind"] in ("step", "epoch"))
    assert not [r for r in rows if r["kind"].startswith("caption_")]
    assert json.loads((whole / "train_config.json").read_text())["caption_weight"] == 1.0
    described = trainer.load(whole, device="cpu").describe(feats[:2], features=True, num_beams=1, max_length=8)
    assert len(described) == 2 and all(isinstance(d, str) for d in described)
    import dataclasses

    fit(texts, feats, tmp_path / "broken", dataclasses.replace(cfg, stop_after_epoch=1))
    assert not (tmp_path / "broken" / "captioner").exists()
    fit(texts, feats, tmp_path / "broken", dataclasses.replace(cfg, resume=True))
    a, b = _decoder_weights(whole), _decoder_weights(tmp_path / "broken")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fit(texts, feats, tmp_path / "second", dataclasses.replace(cfg, caption_weight=0.0, stop_after_epoch=1))
    with pytest.raises(ValueError, match="without a jointly trained caption decoder"):
        fit(texts, feats, tmp_path / "second", dataclasses.replace(cfg, resume=True))


def test_the_joint_caption_loss_reaches_videobert():
    """Joint training reads the video states of VideoBERT's own pass over the batch, with their gradients: the
    caption loss moves VideoBERT's own trainable weights, not only the decoder's."""
    from trainer.caption_training import joint_caption_loss
    from trainer.modeling import VideoBertForPreTraining

    texts, feats = synthetic_examples(n=2)
    config = VideoBertConfig(vocab_size=200, visual_vocab_size=8, feature_dim=feats[0].shape[1],
                             **{k: v for k, v in TINY_MODEL.items()})
    torch.manual_seed(0)
    model = VideoBertForPreTraining(config)
    decoder = _tiny_decoder("bert")
    batch = {"visual_ids": torch.tensor([[1, 2, 3, 4], [4, 3, 2, 1]]), "features": torch.from_numpy(np.stack(feats)),
             "frame_mask": torch.ones(2, 4, dtype=torch.bool)}
    ids = torch.tensor([[1, 7, 8, 9, 2], [1, 9, 8, 2, 0]])
    text = {"text_ids": ids, "text_mask": (ids != 0).long()}
    out = model(**text, **batch)
    joint_caption_loss(out, decoder, batch, ids, (ids != 0).long()).backward()
    moved = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert any(n.startswith("videobert.") for n in moved), moved


def test_a_shortlisted_output_layer_scores_its_tokens_as_the_full_layer_does():
    from trainer.captioner import ShortlistHead, caption_shortlist

    torch.manual_seed(0)
    full = torch.nn.Linear(16, 40)
    ids = torch.tensor([[1, 7, 9, 2, 0], [1, 9, 3, 2, 0]])
    keep = caption_shortlist(ids, ids != 0, eos=2)
    assert keep == [1, 2, 3, 7, 9]                        # the captions' tokens, no padding
    head = ShortlistHead(full, keep)
    x = torch.randn(3, 5, 16)
    out, want = head(x), full(x)
    assert out.shape == want.shape
    assert torch.allclose(out[..., keep], want[..., keep])
    others = [i for i in range(40) if i not in keep]
    assert torch.isinf(out[..., others]).all() and (out[..., others] < 0).all()


def test_a_trained_decoder_writes_with_its_shortlist_what_the_full_layer_writes_within_it(tiny_captioner_dir,
                                                                                          tmp_path):
    """Training records the tokens of its captions; the loaded decoder scores only those. Its greedy
    descriptions are those of the full output layer kept to the same tokens (a barely trained decoder's full
    layer also writes word pieces that no caption holds)."""
    import shutil

    import trainer
    from trainer.captioner import ShortlistHead

    config = json.loads((tiny_captioner_dir / "captioner" / "config.json").read_text())
    assert config["output_shortlist"] and config["eos_token_id"] in config["output_shortlist"]
    full_dir = tmp_path / "full"
    shutil.copytree(tiny_captioner_dir, full_dir)
    config_shortlist = config.pop("output_shortlist")
    (full_dir / "captioner" / "config.json").write_text(json.dumps(config))
    short, full = trainer.load(tiny_captioner_dir, device="cpu"), trainer.load(full_dir, device="cpu")
    assert isinstance(short.captioner.lm.get_output_embeddings(), ShortlistHead)
    assert not isinstance(full.captioner.lm.get_output_embeddings(), ShortlistHead)
    rng = np.random.default_rng(3)
    feats = [rng.random((4, short.model.config.feature_dim), dtype=np.float32) for _ in range(6)]
    others = sorted(set(range(full.captioner.config.vocab_size)) - set(config_shortlist))
    assert short.describe(feats, features=True, num_beams=1) == \
        full.describe(feats, features=True, num_beams=1, suppress_tokens=others)


def test_fast_descriptions_run_a_bfloat16_decoder_only_where_the_cpu_computes_it(tiny_captioner_dir, monkeypatch):
    """`describe(fast=True)`, as indexing asks for it: the language model in bfloat16 on a CPU with bfloat16
    arithmetic (made once, beside the float32 decoder, which stays), scoring each next token as the float32
    one does within bfloat16's precision; on any other CPU, the float32 decoder and the same sentences."""
    import trainer

    model = trainer.load(tiny_captioner_dir, device="cpu")
    rng = np.random.default_rng(5)
    feats = [rng.random((4, model.model.config.feature_dim), dtype=np.float32) for _ in range(6)]
    plain = model.describe(feats, features=True, num_beams=1)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert model._fast_captioner() is model.captioner
    assert model.describe(feats, features=True, num_beams=1, fast=True) == plain
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    fast = model._fast_captioner()
    assert fast is not model.captioner and model._fast_captioner() is fast
    assert fast.lm.dtype == torch.bfloat16 and model.captioner.lm.dtype == torch.float32
    texts = model.describe(feats, features=True, num_beams=1, fast=True)
    assert len(texts) == len(feats) and all(isinstance(t, str) and t for t in texts)
    # Each next token scored by both from the same memory, teacher-forced on the float32 decoder's sentences.
    with torch.inference_mode():
        batch = model._video_batch(model._clip_features(feats, True))
        states, mask = model._video_states(batch)
        ids = model.tokenizer(plain, return_tensors="pt", padding=True)["input_ids"]
        logp = [caption_logits(d, *d.memory(states, mask, batch["features"], batch["frame_mask"]), ids,
                               torch.ones_like(ids)).float().log_softmax(-1) for d in (model.captioner, fast)]
    scored = torch.isfinite(logp[0])          # the shortlist's tokens (the others are -inf in both)
    assert torch.equal(scored, torch.isfinite(logp[1]))
    assert (logp[0] - logp[1])[scored].abs().max() < 0.05
    assert (logp[0].argmax(-1) == logp[1].argmax(-1)).float().mean() > 0.9


def test_descriptions_keep_the_beam_closest_to_the_clip(tiny_captioner_dir):
    """With several beams, `describe` keeps, of the beam search's finished sentences, the one whose text embedding
    is closest to the clip's embedding; `rerank=False` keeps the likeliest, as `generate()` ranks them."""
    import trainer
    from trainer.captioner import decode_text

    model = trainer.load(tiny_captioner_dir, device="cpu")
    rng = np.random.default_rng(7)
    feats = [rng.random((4, model.model.config.feature_dim), dtype=np.float32) for _ in range(8)]
    with torch.inference_mode():
        batch = model._video_batch(model._clip_features(feats, True))
        states, mask = model._video_states(batch)
        memory, memory_mask = model.captioner.memory(states, mask, batch["features"], batch["frame_mask"])
        ids = generate(model.captioner, memory, memory_mask, num_beams=3, num_return_sequences=3)
    beams = [decode_text(model.tokenizer, ids)[i:i + 3] for i in range(0, 3 * len(feats), 3)]
    likeliest = model.describe(feats, features=True, num_beams=3, rerank=False)
    assert likeliest == [b[0] for b in beams]
    closest = model.describe(feats, features=True, num_beams=3)
    clip_vecs = model.embed_clips(feats, features=True)
    for text, options, clip in zip(closest, beams, clip_vecs):
        assert text in options
        assert model.embed_text([text])[0] @ clip >= (model.embed_text(options) @ clip).max() - 1e-6
    assert closest != likeliest                     # the similarity picked another beam for some clip
    assert model.describe(feats, features=True, num_beams=1) == model.describe(feats, features=True, num_beams=1,
                                                                                rerank=False)


def test_model_without_decoder_loads_and_refuses_to_describe(tiny_model_dir):
    """A model trained without a decoder (as every model before captioning was) still loads and embeds."""
    import trainer

    assert not (tiny_model_dir / "captioner").exists()
    model = trainer.load(tiny_model_dir, device="cpu")
    assert not model.can_describe
    assert model.embed_text(["a red circle"]).shape == (1, model.dim)
    with pytest.raises(ValueError, match="no caption decoder"):
        model.describe([np.zeros((4, 96, 96, 3), np.uint8)])


@pytest.mark.slow
def test_caption_cli_describes_each_clip_and_names_a_bad_file(tiny_captioner_dir, synth_library, tmp_path, capsys):
    from webui.cli import main

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    videos = [str(synth_library.videos[0]), str(bad), str(synth_library.videos[1])]
    code = main(["caption", *videos, "--model", str(tiny_captioner_dir), "--json", "--num-beams", "2"])
    out = capsys.readouterr()
    assert code == 1 and str(bad) in out.err
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert {r["path"] for r in rows} == {videos[0], videos[2]}          # the good files still went through
    assert all(r["end"] > r["start"] >= 0 and r["description"] for r in rows)
    assert main(["caption", videos[0], "--model", str(tiny_captioner_dir)]) == 0
    first = capsys.readouterr().out.splitlines()[0].split("\t")
    assert first[0] == videos[0] and float(first[2]) > float(first[1]) and first[3]


@pytest.mark.slow
def test_index_stores_descriptions_apart_and_searchable(tiny_captioner_dir, synth_library, tmp_path):
    from indexer import Store, index_paths
    from search import Engine

    store = tmp_path / "store"
    assert index_paths([synth_library.manifest], store, tiny_captioner_dir, workers=1).exit_code == 0
    s = Store.open(store)
    clips = s.clips(range(1, 1000))
    assert clips and all(c.description for c in clips)
    from trainer.captions import read_sidecar

    written = {r["caption"] for r in synth_library.rows} | {c.text for c in read_sidecar(synth_library.videos[0])}
    assert all(c.caption is None or c.caption in written for c in clips)      # a caption is never a generated one
    word = next(w for w in clips[0].description.split() if len(w) > 3)
    hits = Engine(str(store)).text(word, mode="keyword", k=50)
    assert clips[0].id in {h.clip_id for h in hits} and all(h.description for h in hits)
    plain = tmp_path / "plain"
    index_paths([synth_library.manifest], plain, tiny_captioner_dir, workers=1, describe=False)
    assert not any(c.description for c in Store.open(plain).clips(range(1, 1000)))
    # manifest captions are the same with or without descriptions
    assert [c.caption for c in Store.open(plain).clips(range(1, 1000))] == [c.caption for c in clips]


def test_references_are_every_training_rendering():
    attrs = {"shapes": ["circle"], "colors": ["red"], "motion": "left", "background": "solid black"}
    refs = renderings(attrs)
    assert len(refs) == len(set(refs)) == 20                 # 5 templates x 4 ways of moving left
    assert "a red circle moves to the left on a black background" in refs
    reader = AttributeReader()
    assert all(reader.score(r, attrs)["colour"] and reader.score(r, attrs)["motion"] for r in refs)


def test_attribute_reading_tells_right_from_wrong():
    attrs = {"shapes": ["star", "cross"], "colors": ["blue", "white"], "motion": "up",
             "background": "noise dark green"}
    acc = attribute_accuracy(["a blue star and a white cross move up on a noisy dark green background",
                              "a blue star and a green cross go down", "the white star rises"], [attrs] * 3)
    assert acc["shape"] == pytest.approx(2 / 3) and acc["colour"] == pytest.approx(1 / 3)
    assert acc["motion"] == pytest.approx(2 / 3) and acc["background"] == pytest.approx(1 / 3)


def test_caption_metrics_reward_the_right_sentence():
    refs = [["a red circle moves left", "the red circle slides left"], ["a blue star grows", "a blue star expands"]]
    right = caption_metrics(["a red circle moves left", "a blue star grows"], refs)
    wrong = caption_metrics(["a green square falls", "two shapes go up"], refs)
    assert set(right) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}
    assert right["BLEU-4"] > 0.9 and right["CIDEr"] > wrong["CIDEr"] and right["METEOR"] > wrong["METEOR"]


@pytest.mark.slow
def test_eval_captions_cli_reports_metrics_and_baselines(tiny_captioner_dir, synth_library, feature_cache_dir,
                                                          capsys):
    from webui.cli import main

    manifest = str(synth_library.manifest)
    assert main(["eval", manifest, "--model", str(tiny_captioner_dir), "--captions", "--train", manifest,
                 "--references", "attrs", "--json", "--cache-dir", str(feature_cache_dir), "--workers", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["clips"] == len(synth_library.rows) and result["references"] == "attrs"
    for row in (result["model"], result["baselines"]["nearest_neighbour"], result["baselines"]["most_frequent"]):
        assert 0.0 <= row["BLEU-4"] <= 1.0 and row["CIDEr"] >= 0.0
        assert set(row["attributes"]) == {"shape", "colour", "motion", "background", "n"}
    # the nearest neighbour of a training clip among the same clips is itself: its caption is a reference
    assert result["baselines"]["nearest_neighbour"]["attributes"]["colour"] == 1.0


@pytest.mark.slow
def test_caption_only_gives_an_existing_model_a_decoder(tiny_model_dir, synth_library, feature_cache_dir, tmp_path):
    """`vidsearch train --caption-only` adds a decoder to a model trained without one; its encoder stays."""
    import shutil

    import trainer
    from webui.cli import main

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    weights = (model / "model.safetensors").read_bytes()
    assert main(["train", str(synth_library.manifest), "--out", str(model), "--caption-only", "--caption-epochs", "2",
                 "--cache-dir", str(feature_cache_dir), "--workers", "1", "--no-progress"]) == 0
    assert (model / "model.safetensors").read_bytes() == weights
    rows = [json.loads(line) for line in (model / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["kind"] == "caption_epoch"] == [1, 2]
    loaded = trainer.load(model, device="cpu")
    assert loaded.can_describe and len(loaded.describe([np.zeros((4, 96, 96, 3), np.uint8)] * 2)) == 2


def test_bert_decoder_starts_from_the_text_model():
    """The default decoder keeps MiniLM's embeddings, self-attention and feed-forward weights; only
    cross-attention and the token head are new."""
    from transformers import AutoModel, AutoTokenizer

    from trainer.caption_training import build_captioner
    from trainer.encoders import default_text_model_dir
    from trainer.train_config import TrainConfig

    text_dir = default_text_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(text_dir)
    decoder = build_captioner(TrainConfig(), VideoBertConfig(), tokenizer, text_dir)
    minilm = AutoModel.from_pretrained(text_dir).state_dict()
    ours = decoder.lm.bert.state_dict()
    shared = [k for k in minilm if k in ours]
    assert len(shared) > 90 and all(torch.equal(ours[k], minilm[k]) for k in shared)
    assert any("crossattention" in k for k in ours) and decoder.config.is_decoder
    assert decoder.generation_config.num_beams == 4 and decoder.config.bos_token_id == tokenizer.cls_token_id
    assert decoder.frames is not None and decoder.config.frame_memory["feature_dim"] == VideoBertConfig().feature_dim


def test_attribute_probe_tells_a_view_that_carries_colour_from_one_that_does_not():
    from trainer.caption_eval import attribute_probe

    rng = np.random.default_rng(0)
    colours, shapes = ["red", "green", "blue"], ["circle", "square"]

    def clips(n):
        attrs = [{"shapes": [shapes[i % 2]], "colors": [colours[i % 3]], "motion": "left"} for i in range(n)]
        carries = rng.normal(size=(n, 8)) * 0.3
        for i, a in enumerate(attrs):
            carries[i, colours.index(a["colors"][0])] += 2.0
        return attrs, carries, rng.normal(size=(n, 8))

    train_attrs, train_carries, train_blind = clips(60)
    test_attrs, test_carries, test_blind = clips(30)
    good = attribute_probe(train_carries, train_attrs, test_carries, test_attrs)
    blind = attribute_probe(train_blind, train_attrs, test_blind, test_attrs)
    assert good["colour"]["accuracy"] >= 0.9 and blind["colour"]["accuracy"] <= 0.6
    assert good["colour"]["majority"] == pytest.approx(1 / 3) and good["colour"]["test"] == 30
    assert good["motion"] is None                        # one motion in training: nothing to probe


def test_probe_views_read_the_network_features_and_the_colour_histograms_apart(tiny_model_dir):
    import trainer
    from trainer.caption_eval import probe_views
    from trainer.encoders.colour import BINS

    model = trainer.load(tiny_model_dir, device="cpu")
    colour = BINS * 5                                    # the default frame encoder: frame and 4 grid cells
    assert model.model.config.colour_dim == colour
    feats = [np.random.default_rng(i).random((4, model.model.config.feature_dim)).astype(np.float32)
             for i in range(3)]
    views = probe_views(model, feats)
    assert list(views) == ["frame features", "colour histograms", "video states"]
    assert views["frame features"].shape == (3, 2 * (1280 * 5))
    assert views["colour histograms"].shape == (3, 2 * colour)
    assert np.allclose(views["colour histograms"][:, :colour], np.stack([f[:, -colour:].mean(0) for f in feats]))
