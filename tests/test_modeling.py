"""VideoBERT model on random tensors: shapes, losses only with labels, save/load round trip, masking, reversal."""
from __future__ import annotations

import pytest
import torch

from trainer.modeling import (MASKED_FRAME, VideoBertConfig, VideoBertForPreTraining, VideoBertModel,
                              reverse_time)

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=200,
            max_position_embeddings=64, visual_vocab_size=8, feature_dim=12, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, cls_token_id=1, sep_token_id=2, mask_token_id=3)


def _batch(b=4, lt=6, t=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    text_ids = torch.randint(10, 200, (b, lt), generator=g)
    text_ids[:, 0], text_ids[:, -1] = 1, 2
    text_mask = torch.ones(b, lt, dtype=torch.long)
    text_mask[0, 4:] = 0
    frame_mask = torch.ones(b, t, dtype=torch.bool)
    frame_mask[1, 3:] = False
    return {"text_ids": text_ids, "text_mask": text_mask,
            "visual_ids": torch.randint(0, 8, (b, t), generator=g),
            "features": torch.randn(b, t, 12, generator=g), "frame_mask": frame_mask}


def _labels(batch):
    mlm_labels = torch.full_like(batch["text_ids"], -100)
    mlm_labels[:, 2] = batch["text_ids"][:, 2]
    mlm_ids = batch["text_ids"].clone()
    mlm_ids[:, 2] = 3
    mvp_labels = torch.full_like(batch["visual_ids"], -100)
    mvp_labels[:, 1] = batch["visual_ids"][:, 1]
    mvp_ids = batch["visual_ids"].clone()
    mvp_ids[:, 1] = MASKED_FRAME
    return {"mlm_text_ids": mlm_ids, "mlm_labels": mlm_labels, "mvp_visual_ids": mvp_ids, "mvp_labels": mvp_labels}


@pytest.fixture
def model():
    torch.manual_seed(0)
    config = VideoBertConfig(**TINY, trainable_layers=2, fusion_layers=1, align_prior=True)
    return VideoBertForPreTraining(config).eval()


def test_embeddings_are_unit_vectors_and_no_loss_without_labels(model):
    out = model(**_batch())
    assert out.loss is None and out.mlm_loss is None
    assert out.text_embeds.shape == out.video_embeds.shape == (4, 32)
    assert torch.allclose(out.text_embeds.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.allclose(out.video_embeds.norm(dim=-1), torch.ones(4), atol=1e-5)


def test_all_four_objectives_weighted_and_trainable(model):
    batch = _batch()
    out = model(**batch, **_labels(batch), return_loss=True)
    parts = {k: getattr(out, k) for k in ("mlm_loss", "mvp_loss", "align_loss", "nce_loss")}
    assert all(v is not None and torch.isfinite(v) for v in parts.values())
    cfg = model.config
    expected = (cfg.mlm_weight * parts["mlm_loss"] + cfg.mvp_weight * parts["mvp_loss"]
                + cfg.align_weight * parts["align_loss"] + cfg.nce_weight * parts["nce_loss"])
    assert torch.allclose(out.loss, expected)
    out.loss.backward()
    assert model.videobert.visual_embeddings.weight.grad is not None
    assert model.videobert.logit_scale.grad is not None
    assert model.align_head.out.weight.grad is not None


def test_zero_weight_drops_an_objective():
    torch.manual_seed(0)
    model = VideoBertForPreTraining(VideoBertConfig(**TINY, mlm_weight=0.0, align_weight=0.0))
    batch = _batch()
    out = model(**batch, return_loss=True)
    assert out.align_loss is None and out.nce_loss is not None
    assert torch.allclose(out.loss, out.nce_loss)


def test_joint_input_layout(model):
    batch = _batch()
    hidden = model.videobert(**batch)
    assert hidden.shape == (4, 6 + 5 + 1, 32)            # [CLS] text [SEP] + video + [SEP]
    text_only = model.videobert(text_ids=batch["text_ids"], text_mask=batch["text_mask"])
    video_only = model.videobert(visual_ids=batch["visual_ids"], features=batch["features"],
                                 frame_mask=batch["frame_mask"])
    assert text_only.shape == (4, 6, 32) and video_only.shape == (4, 1 + 5 + 1, 32)
    with pytest.raises(ValueError, match="text_ids, visual_ids"):
        model.videobert()


def test_frame_order_matters(model):
    batch = _batch()
    v = model.videobert.get_video_embeddings(batch["visual_ids"], batch["features"], batch["frame_mask"])
    flipped = {k: reverse_time(batch[k], batch["frame_mask"]) for k in ("visual_ids", "features")}
    r = model.videobert.get_video_embeddings(flipped["visual_ids"], flipped["features"], batch["frame_mask"])
    assert (v - r).abs().max() > 1e-4


def test_colour_histograms_are_left_to_the_caption_decoder():
    """With colour_dim, the last values of each frame's features do not reach VideoBERT; the rest do."""
    torch.manual_seed(0)
    model = VideoBertForPreTraining(VideoBertConfig(**TINY, colour_dim=4)).eval()
    assert model.videobert.feature_proj.proj.in_features == 8
    batch = _batch()
    embed = model.videobert.get_video_embeddings
    v = embed(batch["visual_ids"], batch["features"], batch["frame_mask"])
    recoloured, changed = batch["features"].clone(), batch["features"].clone()
    recoloured[..., 8:] = torch.randn(4, 5, 4)
    changed[..., :8] = torch.randn(4, 5, 8)
    assert torch.allclose(v, embed(batch["visual_ids"], recoloured, batch["frame_mask"]))
    assert not torch.allclose(v, embed(batch["visual_ids"], changed, batch["frame_mask"]))


def test_reverse_time_keeps_padding_in_place():
    x = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    assert reverse_time(x, mask).tolist() == [[4, 3, 2, 1], [6, 5, 0, 0]]


def test_masked_frame_hides_its_features(model):
    batch = _batch()
    ids = batch["visual_ids"].clone()
    ids[:, 2] = MASKED_FRAME
    a = model.videobert(visual_ids=ids, features=batch["features"], frame_mask=batch["frame_mask"])
    feats = batch["features"].clone()
    feats[:, 2] += 100.0
    b = model.videobert(visual_ids=ids, features=feats, frame_mask=batch["frame_mask"])
    assert torch.allclose(a, b, atol=1e-5)


def test_frozen_encoder_leaves_text_path_untouched():
    torch.manual_seed(0)
    model = VideoBertForPreTraining(VideoBertConfig(**TINY, trainable_layers=0, text_adapter=False))
    for p in model.videobert.bert.parameters():
        p.requires_grad_(False)
    batch = _batch()
    before = model.videobert.get_text_embeddings(batch["text_ids"], batch["text_mask"]).detach()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(**batch, **_labels(batch), return_loss=True).loss.backward()
    opt.step()
    after = model.videobert.get_text_embeddings(batch["text_ids"], batch["text_mask"])
    assert torch.equal(before, after)


def test_save_load_round_trip_and_base_model_without_heads(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file() and (tmp_path / "model.safetensors").is_file()
    again = VideoBertForPreTraining.from_pretrained(tmp_path).eval()
    assert again.config.visual_vocab_size == 8 and again.config.model_type == "videobert"
    batch = _batch()
    a, b = model(**batch), again(**batch)
    assert torch.allclose(a.text_embeds, b.text_embeds) and torch.allclose(a.video_embeds, b.video_embeds)
    base = VideoBertModel.from_pretrained(tmp_path).eval()
    assert not hasattr(base, "align_head")
    v = base.get_video_embeddings(batch["visual_ids"], batch["features"], batch["frame_mask"])
    assert torch.allclose(v, a.video_embeds, atol=1e-6)
    logits = again.alignment_logits(**batch)
    assert logits.shape == (4,) and torch.allclose(logits, model.alignment_logits(**batch), atol=1e-6)


def test_only_joint_inputs_pass_the_fusion_layers(model):
    batch = _batch()
    base = model.videobert
    text = base(text_ids=batch["text_ids"], text_mask=batch["text_mask"])
    plain = base.bert(input_ids=batch["text_ids"], attention_mask=batch["text_mask"]).last_hidden_state
    real = batch["text_mask"].bool()
    assert torch.allclose(text[real], plain[real], atol=1e-5)   # text alone: the encoder as it is
    joint = base(**batch)
    fusion = base.fusion
    base.fusion = None
    try:
        unfused = base(**batch)
    finally:
        base.fusion = fusion
    assert joint.shape == unfused.shape and not torch.allclose(joint, unfused, atol=1e-3)
    old = VideoBertConfig(**TINY)                               # configs saved before fusion layers existed
    assert old.fusion_layers == 0 and VideoBertModel(old).fusion is None


def test_adapter_starts_as_identity():
    torch.manual_seed(0)
    with_adapter = VideoBertModel(VideoBertConfig(**TINY, text_adapter=True)).eval()
    without = VideoBertModel(VideoBertConfig(**TINY, text_adapter=False)).eval()
    without.load_state_dict(with_adapter.state_dict(), strict=False)
    batch = _batch()
    assert torch.allclose(with_adapter.get_text_embeddings(batch["text_ids"], batch["text_mask"]),
                          without.get_text_embeddings(batch["text_ids"], batch["text_mask"]), atol=1e-6)
