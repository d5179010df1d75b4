"""Pretrained encoders that turn frames and sentences into vectors: the first stage of indexing and search."""
from .base import FrameEncoder, check_frames
from .clip import ClipVisionEncoder
from .device import autocast, pick_device, set_thread_budget
from .efficientnet import EfficientNetLite0Encoder, imagenet_labels
from .registry import DEFAULT_FRAME_ENCODER, load_frame_encoder
from .text import TextEncoder, default_text_model_dir

__all__ = [
    "DEFAULT_FRAME_ENCODER",
    "ClipVisionEncoder",
    "EfficientNetLite0Encoder",
    "FrameEncoder",
    "TextEncoder",
    "autocast",
    "check_frames",
    "default_text_model_dir",
    "imagenet_labels",
    "load_frame_encoder",
    "pick_device",
    "set_thread_budget",
]
