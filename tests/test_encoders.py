"""Tests for the frame and text encoders: device choice, EfficientNet-Lite0, CLIP vision, MiniLM text, registry."""
from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from trainer.encoders import (
    ClipVisionEncoder,
    EfficientNetLite0Encoder,
    TextEncoder,
    autocast,
    default_text_model_dir,
    imagenet_labels,
    load_frame_encoder,
    pick_device,
)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def disc_scene(cx: int, size: int = 224, radius: int = 30) -> np.ndarray:
    """A red disc centred at column `cx` on a plain sky-blue background."""
    yy, xx = np.mgrid[:size, :size]
    img = np.full((size, size, 3), (90, 140, 200), np.uint8)
    img[(xx - cx) ** 2 + (yy - size // 2) ** 2 < radius**2] = (220, 30, 30)
    return img


def photo() -> np.ndarray:
    """A real photograph shipped with matplotlib (Grace Hopper in uniform), as uint8 RGB."""
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLite0Encoder:
    return load_frame_encoder("efficientnet-lite0", device="cpu")


@pytest.fixture()
def no_network(monkeypatch):
    """Offline mode for the hub, and any attempt to open a connection fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --- device -------------------------------------------------------------------------------------------------------


def test_pick_device_auto_and_explicit(monkeypatch):
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    with pytest.raises(ValueError, match="cuda"):
        pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("auto").type == "cuda"
    assert pick_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match="cuda:2"):
        pick_device("cuda:2")


@pytest.mark.parametrize("bad", ["gpu", "mps", "", 3])
def test_pick_device_rejects_unknown(bad):
    with pytest.raises(ValueError, match="device"):
        pick_device(bad)


def test_autocast_is_noop_on_cpu():
    with autocast(torch.device("cpu")):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_autocast_bf16_on_cuda():
    with autocast("cuda"):
        y = torch.ones(4, 4, device="cuda") @ torch.ones(4, 4, device="cuda")
    assert y.dtype == torch.bfloat16


# --- EfficientNet-Lite0 -------------------------------------------------------------------------------------------


def test_lite0_shapes_and_input_checks(lite0):
    assert lite0.spec == "efficientnet-lite0" and lite0.dim == 1280 * 5
    frames = np.stack([disc_scene(60), disc_scene(160)])
    out = lite0.encode(frames)
    assert out.shape == (2, 6400) and out.dtype == np.float32 and np.isfinite(out).all()
    wide = np.zeros((1, 120, 214, 3), np.uint8)  # non-square input is resized in torch
    assert lite0.encode(wide).shape == (1, 6400)
    assert lite0.encode(np.zeros((0, 224, 224, 3), np.uint8)).shape == (0, 6400)
    with pytest.raises(ValueError, match="uint8"):
        lite0.encode(frames.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        lite0.encode(np.zeros((2, 224, 224), np.uint8))


def test_lite0_batching_does_not_change_features(lite0):
    frames = np.stack([disc_scene(x) for x in (40, 100, 180)])
    whole = lite0.encode(frames)
    small = EfficientNetLite0Encoder(device="cpu", batch_size=2)
    np.testing.assert_allclose(small.encode(frames), whole, rtol=1e-4, atol=1e-4)
    # a read-only, strided view (flipped) is accepted and matches its contiguous copy
    flipped = frames[:1, :, ::-1]
    flipped.flags.writeable = False
    np.testing.assert_allclose(lite0.encode(flipped), lite0.encode(flipped.copy()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("runtime, layout", [("torch", torch.channels_last), ("onnx", torch.contiguous_format)])
def test_preprocess_gives_the_plain_arithmetic_in_the_runtime_layout(runtime, layout):
    """Frames at the input size skip the resize and are scaled in place; the values are the bits of
    ((x / 255) - mean) / std, as the resize path computes them, in the layout the runtime reads."""
    enc = EfficientNetLite0Encoder(device="cpu", runtime=runtime)
    frames = np.stack([disc_scene(60), disc_scene(160)])
    frames[0, :5] = (85, 170, 255)  # thirds of 255, where the colour histograms' chroma bins have their edges
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255.0)
    mean, std = torch.tensor(enc.mean).view(1, 3, 1, 1), torch.tensor(enc.std).view(1, 3, 1, 1)
    pixels = enc.preprocess(frames)
    assert torch.equal(pixels, (x - mean) / std)
    assert pixels.is_contiguous(memory_format=layout)
    wide = np.ascontiguousarray(np.pad(frames, ((0, 0), (0, 0), (0, 100), (0, 0))))   # the resize path
    assert enc.preprocess(wide).shape == (2, 3, 224, 224)
    assert enc.preprocess(wide).is_contiguous(memory_format=layout)


def test_lite0_inference_rewrites_keep_outputs(lite0):
    from trainer.encoders.efficientnet import build_lite0

    plain = build_lite0().eval()
    pixels = lite0.preprocess(photo()[None])
    with torch.inference_mode():
        fast_map, plain_map = lite0.model.extract_features(pixels), plain.extract_features(pixels)
        fast_logits, plain_logits = lite0.model(pixels), plain(pixels)
    torch.testing.assert_close(fast_map, plain_map, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast_logits, plain_logits, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in lite0.model.modules())


def test_lite0_grid_keeps_left_right_layout(lite0):
    left, right = disc_scene(56), disc_scene(168)
    feats = lite0.encode(np.stack([left, right]))
    glob, cells = feats[:, :1280], feats[:, 1280:].reshape(2, 4, 1280)  # cells: TL, TR, BL, BR
    # the global part hardly sees where the disc is ...
    assert cosine(glob[0], glob[1]) > 0.97
    # ... the grid part does, by much more
    assert cosine(feats[0, 1280:], feats[1, 1280:]) < cosine(glob[0], glob[1]) - 0.2
    # the cell holding the disc in one image matches the cell holding it in the other, not the same position
    for row in (0, 2):
        assert cosine(cells[0, row], cells[1, row + 1]) > cosine(cells[0, row], cells[1, row]) + 0.1
    # mirroring the left scene gives (almost) the right scene's features
    mirrored = lite0.encode(left[None, :, ::-1])[0]
    assert cosine(mirrored, feats[1]) > 0.98


def test_lite0_grid_option_through_registry():
    enc = load_frame_encoder("efficientnet-lite0:grid=0", device="cpu")
    assert enc.dim == 1280 and enc.spec == "efficientnet-lite0:grid=0"
    assert enc.encode(disc_scene(100)[None]).shape == (1, 1280)
    assert load_frame_encoder(enc.spec, device="cpu").dim == 1280  # spec round-trips
    assert load_frame_encoder("efficientnet-lite0:grid=3", device="cpu").dim == 1280 * 10


def test_lite0_labels_real_photo(lite0):
    img = photo()
    top5 = lite0.labels(img[None], top=5)[0]
    names = [name for name, _ in top5]
    assert "military uniform" in names[:2], top5
    probs = [p for _, p in top5]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert set(names) <= set(imagenet_labels())


def test_lite0_labels_are_a_distribution_and_deterministic(lite0):
    frames = np.stack([disc_scene(80, size=400), photo()[:400, :400]])
    full = lite0.labels(frames, top=1000)
    for row in full:
        assert len(row) == 1000
        assert abs(sum(p for _, p in row) - 1.0) < 1e-3
    again = lite0.labels(frames, top=3)
    assert [r[0][0] for r in again] == [r[0][0] for r in full]
    feats, labels = lite0.encode_with_labels(frames, top=3)
    assert [n for n, _ in labels[1]] == [n for n, _ in again[1]]
    assert lite0.labels_from_features(feats, top=3) == labels
    probs = lite0.label_probs(feats)
    assert probs.shape == (len(frames), 1000) and np.allclose(probs.sum(1), 1.0, atol=1e-4)
    assert [lite0.label_names[i] for i in probs.argmax(1)] == [row[0][0] for row in labels]


def test_imagenet_labels_file():
    labels = imagenet_labels()
    assert len(labels) == 1000 and labels[0] == "tench" and len(set(labels)) > 990


# --- CLIP vision ---------------------------------------------------------------------------------------------------


@pytest.fixture()
def tiny_clip_dir(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8, projection_dim=16,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(tmp_path)
    return tmp_path


def test_clip_tiny_random_model(tiny_clip_dir, no_network):
    enc = load_frame_encoder("clip:" + str(tiny_clip_dir), device="cpu")
    assert isinstance(enc, ClipVisionEncoder)
    assert enc.dim == 16 and enc.input_size == 32 and enc.spec == f"clip:{tiny_clip_dir}"
    frames = np.stack([disc_scene(40, size=64), disc_scene(24, size=64), np.zeros((64, 64, 3), np.uint8)])
    out = enc.encode(frames)
    assert out.shape == (3, 16) and out.dtype == np.float32 and np.isfinite(out).all()
    assert not np.allclose(out[0], out[2])
    # the output is the projected image embedding of the underlying model
    with torch.inference_mode():
        direct = enc.model(pixel_values=enc.preprocess(frames)).image_embeds.numpy()
    np.testing.assert_allclose(out, direct, rtol=1e-5, atol=1e-5)


def test_clip_whole_clipmodel_checkpoint(tmp_path):
    """A full CLIPModel dir (what hub CLIP ids hold) loads its vision tower and projection, text tower ignored."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(tower, vocab_size=100, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(tower, image_size=32, patch_size=8),
        projection_dim=24,
    )
    clip = CLIPModel(config).eval()
    clip.save_pretrained(tmp_path)
    enc = load_frame_encoder(f"clip:{tmp_path}", device="cpu")
    assert enc.dim == 24
    frames = np.random.default_rng(0).integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
    with torch.inference_mode():
        ref = clip.get_image_features(pixel_values=enc.preprocess(frames))
    ref = ref if torch.is_tensor(ref) else ref.pooler_output
    np.testing.assert_allclose(enc.encode(frames), ref.numpy(), rtol=1e-5, atol=1e-5)


def test_clip_preprocessing_matches_image_processor(tiny_clip_dir):
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:
        from transformers import CLIPImageProcessor as Processor
    enc = ClipVisionEncoder(str(tiny_clip_dir), device="cpu")
    yy, xx = np.mgrid[:60, :100]
    img = np.stack([(xx * 2.5) % 256, (yy * 4) % 256, ((xx + yy) * 1.5) % 256], -1).astype(np.uint8)
    processor = Processor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    reference = processor(images=[img], return_tensors="pt")["pixel_values"]
    mine = enc.preprocess(img[None])
    assert mine.shape == reference.shape == (1, 3, 32, 32)
    # torch's antialiased bicubic vs PIL's: same picture up to resampling rounding
    assert (mine - reference).abs().mean().item() < 0.02


def test_clip_missing_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does-not-exist"):
        load_frame_encoder(f"clip:{tmp_path}/does-not-exist", device="cpu")
    with pytest.raises(ValueError, match="clip:"):
        load_frame_encoder("clip:", device="cpu")
    write_tiny_bert(tmp_path)
    with pytest.raises(ValueError, match="not a CLIP model"):
        load_frame_encoder(f"clip:{tmp_path}", device="cpu")


@pytest.mark.parametrize(
    "spec", ["resnet50", "efficientnet-b0", "efficientnet-lite0:size=3", "efficientnet-lite0:grid=x", ""]
)
def test_unknown_frame_encoder_spec(spec):
    with pytest.raises(ValueError) as info:
        load_frame_encoder(spec, device="cpu")
    assert repr(spec) in str(info.value)


# --- text ----------------------------------------------------------------------------------------------------------


def test_default_text_model_offline_and_semantic(no_network):
    assert default_text_model_dir().endswith("model")
    enc = TextEncoder(device="cpu")
    assert enc.dim == 384 and enc.model.config.model_type == "bert"
    vecs = enc.encode(["a red circle", "a red ball", "a blue square"])
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]
    # the tokenizer and bare model are exposed for models that start from these weights
    ids = enc.tokenizer(["a red ball"], return_tensors="pt")
    assert enc.model(**ids).last_hidden_state.shape[-1] == 384


def write_tiny_bert(path) -> None:
    """A random 2-layer BERT and a hand-written WordPiece vocabulary, saved like any HF model dir."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "circle", "ball", "square",
             "moves", "left", "right", "the", "##s"]
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(path)


def test_tiny_bert_dir_through_same_path(tmp_path, no_network):
    write_tiny_bert(tmp_path)
    enc = TextEncoder(str(tmp_path), device="cpu", batch_size=2)
    assert enc.dim == 32 and enc.max_length == 64
    texts = ["a red ball", "the blue squares moves left left left right", "a circle", "red"]
    vecs = enc.encode(texts)
    assert vecs.shape == (4, 32) and np.isfinite(vecs).all()
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # padding is masked out of the mean and results come back in input order whatever the batching
    alone = np.stack([enc.encode([t])[0] for t in texts])
    np.testing.assert_allclose(vecs, alone, atol=1e-5)
    assert enc.encode([]).shape == (0, 32)
    raw = enc.encode(texts, normalize=False)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), vecs, atol=1e-5)


def test_text_encoder_input_errors(tmp_path):
    write_tiny_bert(tmp_path)
    enc = TextEncoder(str(tmp_path), device="cpu")
    with pytest.raises(ValueError, match="list of strings"):
        enc.encode("a red ball")
    with pytest.raises(ValueError, match="strings"):
        enc.encode(["ok", 3])
    with pytest.raises(ValueError, match="missing-model"):
        TextEncoder(str(tmp_path / "missing-model"))
