"""Video decoding for the pipeline: probe files, sample resized frames at a target fps, cut them into clips."""
from .types import (
    VIDEO_EXTENSIONS,
    Clip,
    DecodedVideo,
    MediaError,
    SamplingConfig,
    VideoInfo,
    cut_clips,
)
from .workers import DecodePool, decode, probe

__all__ = [
    "VIDEO_EXTENSIONS",
    "Clip",
    "DecodePool",
    "DecodedVideo",
    "MediaError",
    "SamplingConfig",
    "VideoInfo",
    "cut_clips",
    "decode",
    "probe",
]
