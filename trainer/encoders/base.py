"""Frame-encoder interface: batches of RGB uint8 frames in, one float32 feature vector per frame out."""
from __future__ import annotations

import abc

import numpy as np
import torch
import torch.nn.functional as F

from .device import autocast, pick_device


def check_frames(frames) -> np.ndarray:
    """Validate a frame batch: a (N, H, W, 3) uint8 RGB array; a single (H, W, 3) frame is promoted to N=1."""
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array of shape (N, H, W, 3), got {type(frames).__name__}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (N, H, W, 3) RGB, got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB, got dtype {frames.dtype}")
    if frames.shape[1] < 1 or frames.shape[2] < 1:
        raise ValueError(f"frames must have a non-empty height and width, got {frames.shape}")
    return frames


def resize_square(x: torch.Tensor, size: int, mode: str, crop: bool) -> torch.Tensor:
    """Bring (B, 3, H, W) float images in [0, 1] to (B, 3, size, size).

    crop=False squashes the whole frame into the square, so every part of the picture stays visible (the grid
    features depend on it); crop=True resizes the short side to `size` and cuts the centre, as CLIP was trained.
    """
    h, w = x.shape[-2:]
    if crop:
        scale = size / min(h, w)
        target = (max(size, round(h * scale)), max(size, round(w * scale)))
    else:
        target = (size, size)
    if (h, w) != target:
        # antialias matches PIL-style downscaling; without it small objects alias away at 1/4 scale.
        x = F.interpolate(x, size=target, mode=mode, align_corners=False, antialias=True).clamp_(0.0, 1.0)
    if crop:
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        x = x[..., top:top + size, left:left + size]
    return x


class FrameEncoder(abc.ABC):
    """Base class: subclasses set `spec`, `dim`, the input size and normalisation, and implement `embed_pixels`.

    `encode` does the shared work: validation, batching, moving uint8 data to the device (4x less traffic than
    float), resizing and normalising in torch, inference mode and autocast.
    """

    spec: str
    dim: int
    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resize_mode: str = "bilinear"
    center_crop: bool = False

    def __init__(self, device: str | torch.device = "auto", batch_size: int = 32):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = pick_device(device)
        self.batch_size = int(batch_size)

    @abc.abstractmethod
    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised float pixels on self.device -> (B, dim) features."""

    # The layout embed_pixels wants: torch's convolutions run faster on channels_last; ONNX Runtime reads NCHW.
    memory_format: torch.memory_format = torch.channels_last

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, S, S) float32, resized and normalised, on self.device."""
        # np.require copies only read-only or strided input (e.g. a decoder's frame buffer or a flipped view).
        x = torch.from_numpy(np.require(frames, requirements=["C", "W"])).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2)
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        if x.shape[-2:] == (self.input_size, self.input_size) and not self.center_crop:
            # Frames decoded at the input size (the usual case) need no resize: converted to float straight into
            # the wanted layout and scaled in place, instead of a new tensor per step and a layout copy after.
            # The arithmetic is the resize path's, step for step, so both give the same bits.
            out = torch.empty(x.shape, dtype=torch.float32, device=self.device, memory_format=self.memory_format)
            return out.copy_(x).div_(255.0).sub_(mean).div_(std)
        x = resize_square(x.float().div_(255.0), self.input_size, self.resize_mode, self.center_crop)
        return x.sub_(mean).div_(std).contiguous(memory_format=self.memory_format)

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """Encode (N, H, W, 3) uint8 RGB frames to an (N, dim) float32 array, `batch_size` frames at a time."""
        frames = check_frames(frames)
        out = np.empty((len(frames), self.dim), dtype=np.float32)
        with torch.inference_mode(), autocast(self.device):
            for start in range(0, len(frames), self.batch_size):
                batch = frames[start:start + self.batch_size]
                out[start:start + len(batch)] = self.embed_pixels(self.preprocess(batch)).float().cpu().numpy()
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(spec={self.spec!r}, dim={self.dim}, device={str(self.device)!r})"
