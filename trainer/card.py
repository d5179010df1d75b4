"""What a model directory declares about itself, read without torch or weights: its identity, frame sampling,
vector width and the outputs of its frame encoder. A process that only plans and writes an index run (the
driver of a Ray run, whose workers load the model) needs no more of the model than this."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .media import SamplingConfig
from .vocab import VOCAB_FILE

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FRAME_ENCODER_FILE = "frame_encoder.json"
# EfficientNet-Lite0: channels of its final 1x1 "head" convolution (the global-pool block of its features) and
# the classes of its ImageNet classifier; trainer.encoders.efficientnet builds the encoder with the same.
LITE0_CHANNELS = 1280
LITE0_CLASSES = 1000
LITE0_COLOUR_BINS = 27  # trainer.encoders.colour.BINS: hue-chroma bins per histogram
# The frame encoder of new models and of stores indexed without one: EfficientNet-Lite0's features and colour
# histograms with hue sectors centred on the named hues, which only the caption decoder reads
# (trainer.encoders.colour).
DEFAULT_FRAME_ENCODER = "efficientnet-lite0:colour=2"


def check_model_dir(model_dir) -> Path:
    """The model directory, resolved; FileNotFoundError naming what is missing when it is not one."""
    path = Path(model_dir).expanduser()
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE, FRAME_ENCODER_FILE) if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} is not a vidsearch model dir (missing {', '.join(missing)})")
    return path.resolve()


def model_hash(model_dir) -> str:
    """sha256 over the files that define the model's outputs (config, weights, visual words, encoder spec)."""
    h = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE, FRAME_ENCODER_FILE):
        path = Path(model_dir) / name
        if path.is_file():
            h.update(name.encode())
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class FrameOutputs:
    """What a frame encoder gives, by its spec: `dim`-wide features whose first `channels` values are the
    global-pool block (the look-alike vector), and a classifier over `classes` classes (0: none)."""

    spec: str
    dim: int
    channels: int
    classes: int


LITE0_OPTIONS = {"grid": int, "colour": int}   # what an "efficientnet-lite0:key=value,..." spec may say


def spec_options(spec: str, text: str, allowed: dict[str, type]) -> dict:
    """Parse the "key=value,key=value" options of a frame encoder spec, converting each value with its declared
    type; an unknown key or a bad value is an error naming the spec."""
    options = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in allowed:
            raise ValueError(f"frame encoder spec {spec!r}: unknown option {item!r} (allowed: {', '.join(allowed)})")
        try:
            options[key] = allowed[key](value.strip())
        except ValueError as exc:
            kind = "integers" if allowed[key] is int else allowed[key].__name__
            raise ValueError(f"frame encoder spec {spec!r}: bad value for {key!r}: {value!r} ({', '.join(allowed)} "
                             f"are {kind})") from exc
    return options


def _lite0_options(spec: str) -> tuple[int, int] | None:
    """(grid, colour) of an EfficientNet-Lite0 spec; None for another encoder."""
    name, _, text = spec.strip().partition(":")
    if name != "efficientnet-lite0":
        return None
    options = spec_options(spec, text, LITE0_OPTIONS)
    return options.get("grid", 2), options.get("colour", 0)


def colour_width(spec: str) -> int:
    """How many trailing feature values of the frame encoder named by `spec` are colour histograms (0: none):
    one histogram for the frame and one per grid cell."""
    options = _lite0_options(spec)
    if options is None or not options[1]:
        return 0
    return LITE0_COLOUR_BINS * (1 + options[0] ** 2)


def frame_cells(spec: str) -> int:
    """How many equal blocks each part of a frame's features is, by the frame encoder named by `spec`: the whole
    frame and each grid cell of a grid-pooled encoder (trainer.encoders.efficientnet.grid_pool), else 1."""
    options = _lite0_options(spec)
    return 1 if options is None else 1 + options[0] ** 2


def frame_outputs(spec: str, dim: int) -> FrameOutputs:
    """The outputs of the frame encoder named by `spec` whose features the model reads as `dim` wide; raises
    ValueError for a spec no frame encoder answers to (as trainer.encoders.load_frame_encoder does)."""
    name = spec.strip().partition(":")[0]
    if name == "efficientnet-lite0":
        return FrameOutputs(spec, dim, LITE0_CHANNELS, LITE0_CLASSES)
    if name == "clip":  # a projection, no classifier: the look-alike vector is the whole feature
        return FrameOutputs(spec, dim, dim, 0)
    raise ValueError(f"unknown frame encoder spec {spec!r}")


@dataclass(frozen=True)
class ModelCard:
    """A model directory as its saved files declare it (`read_card`), with the names a loaded
    trainer.api.VideoSearchModel gives the same facts: `identity`, `sampling`, `dim`, `frame_encoder`."""

    identity: dict  # {"path", "hash", "name"}, as a loaded model's
    sampling: SamplingConfig
    dim: int  # width of the clip and text vectors
    frame_encoder: FrameOutputs


def read_card(model_dir) -> ModelCard:
    """The card of the model directory `model_dir` (checked as `trainer.load` checks it)."""
    path = check_model_dir(model_dir)
    config = json.loads((path / CONFIG_FILE).read_text())
    spec = json.loads((path / FRAME_ENCODER_FILE).read_text())
    sampling = SamplingConfig(**config["sampling"]) if config.get("sampling") else SamplingConfig()
    outputs = frame_outputs(spec["spec"], int(config["feature_dim"]))
    identity = {"path": str(path), "hash": model_hash(path), "name": path.name}
    return ModelCard(identity, sampling, int(config["hidden_size"]), outputs)
