"""The ONNX Runtime paths of the encoders give the fp32 torch path's outputs, and the runtime choice is explicit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.encoders import EfficientNetLite0Encoder, TextEncoder
from trainer.encoders.onnx_runtime import OrtModule, cache_dir, resolve_runtime

from .test_encoders import disc_scene, photo, write_tiny_bert


def test_resolve_runtime(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("VIDSEARCH_RUNTIME", raising=False)
    assert resolve_runtime("auto", cpu) == "onnx"
    assert resolve_runtime("torch", cpu) == "torch"
    monkeypatch.setenv("VIDSEARCH_RUNTIME", "torch")
    assert resolve_runtime("auto", cpu) == "torch"
    assert resolve_runtime("onnx", cpu) == "onnx"          # an explicit request beats the environment
    monkeypatch.setenv("VIDSEARCH_RUNTIME", "tensorrt")
    with pytest.raises(ValueError, match="VIDSEARCH_RUNTIME"):
        resolve_runtime("auto", cpu)
    with pytest.raises(ValueError, match="runtime must be one of"):
        resolve_runtime("fast", cpu)


def test_resolve_runtime_keeps_torch_on_cuda(monkeypatch):
    monkeypatch.delenv("VIDSEARCH_RUNTIME", raising=False)
    assert resolve_runtime("auto", torch.device("cuda")) == "torch"
    with pytest.raises(ValueError, match="CPU only"):
        resolve_runtime("onnx", torch.device("cuda"))


def test_lite0_onnx_matches_torch():
    torch_enc = EfficientNetLite0Encoder(device="cpu", runtime="torch", batch_size=2)
    onnx_enc = EfficientNetLite0Encoder(device="cpu", runtime="onnx", batch_size=2)
    assert torch_enc._ort is None and onnx_enc._ort is not None
    frames = np.stack([disc_scene(60), disc_scene(170), disc_scene(110, radius=60)])
    ref, got = torch_enc.encode(frames), onnx_enc.encode(frames)     # 3 frames: batches of 2 and of 1
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-4)
    onnx_enc.batch_size, onnx_enc.ORT_FRAMES_PER_RUN = 3, 2     # one batch of 3, run as 2 frames and 1
    np.testing.assert_allclose(onnx_enc.encode(frames), got, rtol=1e-5, atol=1e-6)
    img = photo()[None]
    np.testing.assert_allclose(onnx_enc.encode(img), torch_enc.encode(img), rtol=1e-4, atol=2e-4)
    assert onnx_enc.labels(img, top=1)[0][0][0] == torch_enc.labels(img, top=1)[0][0][0] == "military uniform"


def test_text_encoder_onnx_matches_torch(tmp_path):
    write_tiny_bert(tmp_path)
    texts = ["a red ball", "the blue squares moves left left left right", "a circle", "red"]
    ref = TextEncoder(str(tmp_path), device="cpu", runtime="torch", batch_size=3).encode(texts)
    fast = TextEncoder(str(tmp_path), device="cpu", runtime="onnx", batch_size=3)
    np.testing.assert_allclose(fast.encode(texts), ref, atol=1e-5)       # padded batches of 3 and 1
    np.testing.assert_allclose(np.stack([fast.encode([t])[0] for t in texts]), ref, atol=1e-5)
    raw = fast.encode(texts, normalize=False)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), ref, atol=1e-5)


def test_model_text_tower_onnx_matches_torch(tiny_model_dir):
    import trainer

    texts = ["a red circle moves left", "a blue square", "green triangle grows on a dark background now"]
    reference = trainer.load(tiny_model_dir, device="cpu", runtime="torch")
    fast = trainer.load(tiny_model_dir, device="cpu", runtime="onnx")
    assert reference._text_tower is None and fast._text_tower is not None
    np.testing.assert_allclose(fast.embed_text(texts), reference.embed_text(texts), atol=1e-5)
    np.testing.assert_allclose(fast.embed_text(texts[:1]), reference.embed_text(texts[:1]), atol=1e-5)


def test_model_video_tower_onnx_matches_torch(tiny_captioner_dir):
    import trainer

    reference = trainer.load(tiny_captioner_dir, device="cpu", runtime="torch")
    fast = trainer.load(tiny_captioner_dir, device="cpu", runtime="onnx")
    dim = reference.model.config.feature_dim
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal((n, dim)).astype(np.float32) for n in (1, 3, reference.model.config.max_frames, 2)]
    fast.batch_size = reference.batch_size = 3                          # padded batches of 3 and 1
    np.testing.assert_allclose(fast.embed_clips(clips, features=True), reference.embed_clips(clips, features=True),
                               atol=1e-5)
    assert fast._video_tower is not None and reference._video_tower is None
    for got, ref in zip(fast.video_states(clips, features=True), reference.video_states(clips, features=True)):
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-4)
    assert reference.can_describe                                       # the decoder reads the runtime's states
    assert fast.describe(clips, features=True, num_beams=2) == reference.describe(clips, features=True, num_beams=2)


def test_ort_module_cache_is_keyed_by_weights_and_repaired():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    args = ((torch.zeros(2, 4),), ["x"], ["y"], {"x": {0: "b"}, "y": {0: "b"}})
    first = OrtModule(layer, *args, name="test-linear", threads=1)
    assert first.path.parent == cache_dir() and first.path.is_file()
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(first.run(x)[0], layer(torch.from_numpy(x)).detach().numpy(), atol=1e-6)
    with torch.no_grad():
        layer.weight.add_(1.0)
    changed = OrtModule(layer, *args, name="test-linear", threads=1)
    assert changed.path != first.path                              # new weights, new export
    changed.path.write_bytes(b"not an onnx file")                  # a damaged cache file is exported again
    repaired = OrtModule(layer, *args, name="test-linear", threads=1)
    np.testing.assert_allclose(repaired.run(x)[0], layer(torch.from_numpy(x)).detach().numpy(), atol=1e-6)


def test_training_features_are_the_same_under_both_runtimes(tmp_path):
    """The frame features training reads (trainer.features, decoded and encoded once per video, kept as
    float16) come out of the ONNX Runtime encoder as out of torch's: same frames, times and order, and values
    equal up to float16 rounding. A model trained on either learns from the same data, and an entry written
    under one runtime is a valid hit for the other."""
    from tests.fixtures.store import make_mp4
    from trainer.features import FeatureCache
    from trainer.media import SamplingConfig

    videos = [make_mp4(tmp_path / f"v{i}.mp4", seconds=2.0 + i) for i in range(2)]
    sampling = SamplingConfig(fps=2.0, size=96, clip_seconds=4.0, stride_seconds=4.0)
    got = {}
    for runtime in ("torch", "onnx"):
        encoder = EfficientNetLite0Encoder(device="cpu", runtime=runtime)
        cache = FeatureCache(tmp_path / runtime, encoder.spec, sampling)
        got[runtime] = cache.load_all(videos, encoder, workers=1)
        assert cache.load_all(videos).keys() == got[runtime].keys()        # written to disk, read back
    assert list(got["onnx"]) == list(got["torch"]) == [str(v) for v in videos]
    for path, ref in got["torch"].items():
        fast = got["onnx"][path]
        np.testing.assert_array_equal(fast.times, ref.times)
        assert fast.features.shape == ref.features.shape and len(ref.times) >= 4
        np.testing.assert_allclose(fast.features, ref.features, rtol=2e-3, atol=2e-3)   # 1 float16 step apart
