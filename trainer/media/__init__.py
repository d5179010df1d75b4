"""Video decoding for the pipeline: probe files, sample resized frames at a target fps, cut them into clips
(whole files, or time segments of whole clip windows for long videos)."""
from .types import (
    VIDEO_EXTENSIONS,
    Clip,
    DecodedVideo,
    MediaError,
    SamplingConfig,
    VideoChunk,
    VideoInfo,
    cut_clips,
)
from .workers import DecodePool, decode, decode_window, probe

__all__ = [
    "VIDEO_EXTENSIONS",
    "Clip",
    "DecodePool",
    "DecodedVideo",
    "MediaError",
    "SamplingConfig",
    "VideoChunk",
    "VideoInfo",
    "cut_clips",
    "decode",
    "decode_window",
    "probe",
]
