"""Synthetic captioned videos: coloured shapes in motion, drawn with numpy, encoded with PyAV, listed in JSONL.

The generator is deterministic: the same spec (seed, count, ...) gives byte-identical videos and manifest.
Clip ``i`` depends only on the seed, the split and ``i``, so a larger count extends a smaller one.
``generate_split`` holds out (shape, colour, motion) combinations so a model can be tested on
combinations it never saw, and writes test captions in three phrasings: training words, unseen synonyms, and a
held-out phrasing with its own synonyms and sentence shapes that no query-reading code was written against.
"""
from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import asdict, dataclass, replace
from itertools import combinations
from pathlib import Path

import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
COLORS = {  # object colours: saturated, so they stand out from the muted backgrounds
    "red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 235), "yellow": (245, 215, 40),
    "orange": (250, 140, 30), "purple": (150, 60, 210), "white": (245, 245, 245),
}
MOTIONS = ("left", "right", "up", "down", "grow", "shrink")
# A clip played backwards shows the opposite motion: time-reversed clips make hard negatives.
OPPOSITE_MOTION = {"left": "right", "right": "left", "up": "down", "down": "up", "grow": "shrink", "shrink": "grow"}
BACKGROUND_COLORS = {
    "black": (12, 12, 12), "gray": (120, 120, 120), "navy": (20, 28, 80),
    "dark green": (20, 70, 35), "brown": (95, 60, 30), "beige": (225, 210, 170),
}
BACKGROUND_KINDS = ("solid", "gradient", "stripes", "noise")
PHRASINGS = ("train", "unseen", "heldout")
SPLITS = ("train", "test")

# codec name -> (file extension, PyAV encoder, encoder options). Options favour speed; single-threaded
# encoders keep the output byte-identical from run to run.
CODECS = {
    "h264": (".mp4", "libx264", {"preset": "veryfast", "crf": "20", "x264-params": "mbtree=0"}),
    "vp9": (".webm", "libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "crf": "28", "b": "0"}),
    "mpeg4": (".avi", "mpeg4", {"qscale": "3"}),
    "vp8": (".mkv", "libvpx", {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "1M"}),
    "hevc": (".mp4", "libx265", {"preset": "ultrafast", "x265-params": "log-level=none"}),
    "av1": (".mkv", "libsvtav1", {"preset": "10"}),
}

_MIN_CONTRAST = 140.0  # RGB distance an object keeps from every background colour
_SPLIT_SALT = {"train": 11, "test": 23}
_HOLDOUT_SALT = 5


@dataclass(frozen=True)
class SynthSpec:
    """What to generate. ``split="train"`` avoids the ``holdout`` combos; ``"test"`` uses only them."""

    count: int = 64
    seed: int = 0
    seconds: float = 4.0
    fps: int = 8
    size: int = 128
    codecs: tuple = ("h264", "vp9")
    holdout: frozenset = frozenset()  # {(shape, colour, motion)}
    split: str = "train"
    phrasing: str = "train"
    max_seconds: float | None = None  # when set, each clip lasts between seconds and max_seconds
    two_object_rate: float = 0.3
    captions_per_video: int = 1
    workers: int | None = None  # None: one process per core for large counts, in-process for small ones

    def __post_init__(self):
        # Normalise containers so that specs compare, hash and serialise the same however they were given.
        object.__setattr__(self, "codecs", tuple(self.codecs))
        object.__setattr__(self, "holdout", frozenset(tuple(c) for c in self.holdout))
        _check(self.count >= 0, "count", self.count, "must be >= 0")
        _check(self.seconds > 0, "seconds", self.seconds, "must be > 0")
        _check(self.max_seconds is None or self.max_seconds >= self.seconds, "max_seconds", self.max_seconds,
               "must be >= seconds")
        _check(int(self.fps) == self.fps and self.fps > 0, "fps", self.fps, "must be a positive integer")
        _check(self.size >= 32 and self.size % 2 == 0, "size", self.size, "must be an even number >= 32")
        _check(len(self.codecs) > 0, "codecs", self.codecs, "must name at least one codec")
        for codec in self.codecs:
            _check(codec in CODECS, "codecs", codec, f"unknown codec; choose from {sorted(CODECS)}")
        _check(self.split in SPLITS, "split", self.split, f"must be one of {SPLITS}")
        _check(self.phrasing in PHRASINGS, "phrasing", self.phrasing, f"must be one of {PHRASINGS}")
        _check(0.0 <= self.two_object_rate <= 1.0, "two_object_rate", self.two_object_rate, "must be in [0, 1]")
        _check(self.captions_per_video >= 1, "captions_per_video", self.captions_per_video, "must be >= 1")
        _check(self.split == "train" or self.holdout, "holdout", "empty", "a test split needs held-out combos")
        for combo in self.holdout:
            _check(len(combo) == 3 and combo[0] in SHAPES and combo[1] in COLORS and combo[2] in MOTIONS,
                   "holdout", combo, "entries must be (shape, colour, motion) with known values")


def _check(ok: bool, name: str, value, why: str) -> None:
    if not ok:
        raise ValueError(f"SynthSpec.{name}={value!r}: {why}")


@dataclass(frozen=True)
class ObjectPlan:
    """One shape: its path (centre in pixels) and radius at the first and last frame."""

    shape: str
    color: str
    start: tuple[float, float]
    end: tuple[float, float]
    radius: tuple[float, float]


@dataclass(frozen=True)
class BackgroundPlan:
    """A static background: a solid colour, a two-colour gradient or stripes, or a colour with light noise."""

    kind: str
    colors: tuple[str, ...]
    orientation: str = "h"  # "h", "v" or "d": direction of gradients and stripes
    period: float = 16.0  # stripe period in pixels

    def describe(self) -> str:
        """Short form for manifests, e.g. ``"stripes black-beige"``."""
        return f"{self.kind} {'-'.join(self.colors)}"


@dataclass(frozen=True)
class ClipPlan:
    """Everything needed to render one clip; rendering is a pure function of it."""

    index: int
    video: str  # path relative to the manifest directory
    codec: str
    size: int
    fps: int
    frames: int
    motion: str
    objects: tuple[ObjectPlan, ...]
    background: BackgroundPlan
    seed: tuple[int, ...] = (0,)  # seeds the background noise

    @property
    def seconds(self) -> float:
        """Duration of the encoded video."""
        return self.frames / self.fps

    def attrs(self) -> dict:
        """Structured description written beside each caption, for evaluation."""
        return {
            "shapes": [o.shape for o in self.objects], "colors": [o.color for o in self.objects],
            "motion": self.motion, "background": self.background.describe(), "codec": self.codec,
        }


# ---------------------------------------------------------------- drawing

def _convex_mask(u: np.ndarray, v: np.ndarray, verts: list[tuple[float, float]]) -> np.ndarray:
    """Points inside a convex polygon given counter-clockwise in (u, v) (v grows downwards)."""
    inside = np.ones(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    for (ua, va), (ub, vb) in zip(verts, verts[1:] + verts[:1]):
        inside &= (ub - ua) * (v - va) - (vb - va) * (u - ua) <= 0
    return inside


def _star_mask(u: np.ndarray, v: np.ndarray, outer: float = 1.15, inner: float = 0.48) -> np.ndarray:
    """Five-pointed star: fold every angle into one half-spike, then test against its single edge."""
    rho = np.hypot(u, v)
    sector = 2 * np.pi / 5
    theta = np.mod(np.arctan2(u, -v), sector)  # 0 at the top spike
    theta = np.minimum(theta, sector - theta)
    qx, qy = rho * np.cos(theta), rho * np.sin(theta)
    px, py = outer, 0.0  # spike tip
    ix, iy = inner * np.cos(sector / 2), inner * np.sin(sector / 2)  # inner corner
    # The centre lies on the positive side of the tip->corner edge; keep points on that side.
    return (ix - px) * (qy - py) - (iy - py) * (qx - px) >= 0


_TRIANGLE = [(0.0, -1.2), (-1.04, 0.6), (1.04, 0.6)]
_DIAMOND = [(0.0, -1.15), (-1.15, 0.0), (0.0, 1.15), (1.15, 0.0)]


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of a unit-radius shape at coordinates (u, v) relative to its centre, in radii."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.85
    if shape == "triangle":
        return _convex_mask(u, v, _TRIANGLE)
    if shape == "diamond":
        return _convex_mask(u, v, _DIAMOND)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.34) & (av <= 1.05)) | ((av <= 0.34) & (au <= 1.05))
    if shape == "star":
        return _star_mask(u, v)
    raise ValueError(f"shape={shape!r}: unknown shape; choose from {SHAPES}")


def render_background(bg: BackgroundPlan, size: int, seed: tuple[int, ...]) -> np.ndarray:
    """(size, size, 3) uint8 background image."""
    first = np.array(BACKGROUND_COLORS[bg.colors[0]], dtype=np.float32)
    if bg.kind == "solid":
        return np.broadcast_to(first, (size, size, 3)).astype(np.uint8)
    if bg.kind == "noise":
        noise = np.random.default_rng(seed).normal(0.0, 14.0, (size, size, 3))
        return np.clip(first + noise, 0, 255).astype(np.uint8)
    second = np.array(BACKGROUND_COLORS[bg.colors[1]], dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    coord = {"h": xx, "v": yy, "d": (xx + yy) / 2}[bg.orientation]
    if bg.kind == "gradient":
        w = (coord / (size - 1))[..., None]
    elif bg.kind == "stripes":
        w = (np.floor(coord / (bg.period / 2)) % 2)[..., None]
    else:
        raise ValueError(f"background kind={bg.kind!r}: choose from {BACKGROUND_KINDS}")
    return (first * (1 - w) + second * w).astype(np.uint8)


def render_clip(plan: ClipPlan) -> np.ndarray:
    """Draw a clip: (frames, size, size, 3) uint8 RGB."""
    n, size = plan.frames, plan.size
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    out[:] = render_background(plan.background, size, plan.seed)
    pix = np.arange(size, dtype=np.float32) + 0.5  # pixel centres
    for i in range(n):
        t = i / (n - 1) if n > 1 else 0.0
        for obj in plan.objects:
            cx = obj.start[0] + (obj.end[0] - obj.start[0]) * t
            cy = obj.start[1] + (obj.end[1] - obj.start[1]) * t
            r = obj.radius[0] + (obj.radius[1] - obj.radius[0]) * t
            # Only the box around the shape is tested: every unit shape fits within 1.25 radii of its centre.
            x0, x1 = max(0, int(cx - 1.25 * r)), min(size, int(cx + 1.25 * r) + 2)
            y0, y1 = max(0, int(cy - 1.25 * r)), min(size, int(cy + 1.25 * r) + 2)
            if x0 >= x1 or y0 >= y1:
                continue
            mask = shape_mask(obj.shape, (pix[None, x0:x1] - cx) / r, (pix[y0:y1, None] - cy) / r)  # (h, w)
            out[i, y0:y1, x0:x1][mask] = COLORS[obj.color]
    return out


# ---------------------------------------------------------------- encoding

def write_video(path, frames: np.ndarray, fps: int, codec: str = "h264") -> Path:
    """Encode (T, H, W, 3) uint8 RGB frames to ``path`` (its extension picks the container); atomic."""
    if codec not in CODECS:
        raise ValueError(f"codec={codec!r}: unknown codec; choose from {sorted(CODECS)}")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames for {path}: expected non-empty (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"frames for {path}: height and width must be even for 4:2:0 video, got {frames.shape[1:3]}")
    import av  # deferred so that importing trainer stays light

    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner otherwise
    path = Path(path)
    part = path.with_name(f".{path.stem}.part{path.suffix}")
    _, encoder, options = CODECS[codec]
    from .media.scheduling import keep_scheduling

    # bitexact: no random container UIDs or version strings, so identical frames give identical bytes.
    with keep_scheduling(), av.open(str(part), "w", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(encoder, rate=int(fps), options=dict(options))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    os.replace(part, path)
    return path


# ---------------------------------------------------------------- captions

SHAPE_WORDS = {
    "train": {s: (s,) for s in SHAPES},
    "unseen": {
        "circle": ("ball", "disc", "round dot"), "square": ("box", "block"),
        "triangle": ("wedge", "three-cornered shape"), "star": ("pentagram", "five-pointed shape"),
        "cross": ("plus sign", "plus symbol"), "diamond": ("rhombus", "lozenge"),
    },
    "heldout": {
        "circle": ("circular figure", "orb", "spot"), "square": ("rectangle", "four-sided figure", "tile"),
        "triangle": ("trigon", "three-sided figure", "pyramid outline"),
        "star": ("pentacle", "starlike figure", "spiky emblem"),
        "cross": ("addition mark", "crucifix", "intersecting bars"),
        "diamond": ("rhomb", "kite outline", "tilted square"),
    },
}
MOTION_WORDS = {  # third person singular; plural forms are derived by _plural
    "train": {
        "left": ("moves to the left", "moves left", "slides left", "goes to the left"),
        "right": ("moves to the right", "moves right", "slides right", "goes to the right"),
        "up": ("moves up", "slides up", "goes up", "rises"),
        "down": ("moves down", "slides down", "goes down", "falls"),
        "grow": ("grows", "gets larger", "expands", "grows steadily"),
        "shrink": ("shrinks", "gets smaller", "contracts", "shrinks steadily"),
    },
    "unseen": {
        "left": ("drifts leftward", "travels toward the left edge", "heads leftwards", "glides leftward"),
        "right": ("drifts rightward", "travels toward the right edge", "heads rightwards", "glides rightward"),
        "up": ("drifts upward", "climbs toward the top", "ascends", "floats upward"),
        "down": ("drifts downward", "sinks toward the bottom", "descends", "drops downward"),
        "grow": ("gets bigger", "swells", "increases in size", "becomes bigger"),
        "shrink": ("dwindles", "decreases in size", "becomes tiny", "gets tinier"),
    },
    "heldout": {
        "left": ("shifts to the left side", "proceeds to the left", "goes west", "veers left"),
        "right": ("shifts to the right side", "proceeds to the right", "goes east", "veers right"),
        "up": ("soars", "lifts off", "mounts higher", "goes skyward"),
        "down": ("plunges", "tumbles", "plummets", "comes down"),
        "grow": ("enlarges", "inflates", "balloons", "widens out"),
        "shrink": ("lessens", "deflates", "narrows down", "turns small"),
    },
}
BACKGROUND_WORDS = {
    "train": {"solid": "on a {c} background", "gradient": "on a gradient background",
              "stripes": "on a striped background", "noise": "on a noisy {c} background"},
    "unseen": {"solid": "against a {c} backdrop", "gradient": "over a smoothly shaded backdrop",
               "stripes": "over a backdrop of stripes", "noise": "against a grainy {c} backdrop"},
    "heldout": {"solid": "set on a plain {c} field", "gradient": "in front of a fading canvas",
                "stripes": "with a banded canvas", "noise": "on a speckled {c} field"},
}
TEMPLATES = {
    "train": {
        1: ("{obj} {motion}", "{obj} {motion} {bg}", "the {color} {noun} {motion}",
            "there is {obj} that {motion}", "{bg}, {obj} {motion}"),
        2: ("two shapes: {obj1} and {obj2} {motion}", "{obj1} and {obj2} {motion} {bg}",
            "the {color1} {noun1} and the {color2} {noun2} both {motion}", "two shapes {motion}: {obj1} and {obj2}"),
    },
    "unseen": {
        1: ("in this clip, {obj} {motion}", "watch as the {color} {noun} {motion}",
            "{a_noun}, colored {color}, {motion}",
            "footage of {obj} which {motion}", "here {obj} {motion} {bg}"),
        2: ("a pair of objects, {obj1} alongside {obj2}, which {motion} together",
            "in this clip {obj1} and {obj2} {motion} at the same time", "{obj1} accompanied by {obj2}; they {motion}",
            "together, the {color1} {noun1} and the {color2} {noun2} {motion} {bg}"),
    },
    "heldout": {
        1: ("we see {obj} that {motion}", "{obj} {motion} in the frame", "video of {obj}; it {motion}",
            "look: {a_noun} in {color} {motion}", "the {color} {noun} {motion} {bg}"),
        2: ("{obj1} along with {obj2}: both {motion}", "we see {obj1} and {obj2} that {motion}",
            "the {color1} {noun1} with the {color2} {noun2} {motion} {bg}"),
    },
}


def _a(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def _plural(verb_phrase: str) -> str:
    """'moves to the left' -> 'move to the left', 'goes up' -> 'go up' (for two subjects)."""
    verb, _, rest = verb_phrase.partition(" ")
    verb = verb[:-2] if verb.endswith("oes") else verb[:-1]
    return f"{verb} {rest}".strip()


def _background_phrase(background: str, phrasing: str) -> str:
    kind, _, colours = background.partition(" ")
    return BACKGROUND_WORDS[phrasing][kind].format(c=colours.split("-")[0])


def make_caption(attrs: dict, phrasing: str = "train", rng: np.random.Generator | None = None) -> str:
    """A sentence describing a clip's ``attrs`` (shapes, colors, motion, background) in the given phrasing."""
    if phrasing not in PHRASINGS:
        raise ValueError(f"phrasing={phrasing!r}: must be one of {PHRASINGS}")
    rng = rng if rng is not None else np.random.default_rng(0)
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    shapes, colors = attrs["shapes"], attrs["colors"]
    nouns = [pick(SHAPE_WORDS[phrasing][s]) for s in shapes]
    motion = pick(MOTION_WORDS[phrasing][attrs["motion"]])
    words = {"bg": _background_phrase(attrs["background"], phrasing)}
    if len(shapes) == 1:
        words.update(obj=_a(f"{colors[0]} {nouns[0]}"), color=colors[0], noun=nouns[0], a_noun=_a(nouns[0]),
                     motion=motion)
    else:
        words.update(obj1=_a(f"{colors[0]} {nouns[0]}"), obj2=_a(f"{colors[1]} {nouns[1]}"), color1=colors[0],
                     color2=colors[1], noun1=nouns[0], noun2=nouns[1], motion=_plural(motion))
    return pick(TEMPLATES[phrasing][min(len(shapes), 2)]).format(**words)


# ---------------------------------------------------------------- planning

def holdout_combos(seed: int = 0, per_cell: int = 2) -> frozenset:
    """(shape, colour, motion) triples kept out of training.

    Every (shape, motion) pair loses exactly ``per_cell`` of the 7 colours, and every (shape, colour) and
    (colour, motion) pair loses at most ``per_cell`` triples, so each single value and each pair of
    values still appears in training. The colour index is an affine function of the shape and motion
    indices modulo 7 (a prime), which is what bounds the losses per pair.
    """
    if not 1 <= per_cell <= 3:
        raise ValueError(f"per_cell={per_cell}: must be 1, 2 or 3 so that most combinations stay in training")
    rng = np.random.default_rng([seed, _HOLDOUT_SALT])
    shapes, motions = rng.permutation(SHAPES), rng.permutation(MOTIONS)
    colors = rng.permutation(list(COLORS))
    step = int(rng.integers(1, len(colors)))
    return frozenset(
        (str(s), str(colors[(si + step * mi + 3 * j) % len(colors)]), str(m))
        for si, s in enumerate(shapes) for mi, m in enumerate(motions) for j in range(per_cell)
    )


def _pick_background(rng: np.random.Generator, object_colors: list[str], size: int) -> BackgroundPlan:
    """A background whose colours all keep a clear distance from every object colour."""
    def far(name):  # far enough from every object colour
        bg = np.array(BACKGROUND_COLORS[name], dtype=float)
        return all(np.linalg.norm(bg - np.array(COLORS[c], dtype=float)) >= _MIN_CONTRAST for c in object_colors)

    ok = [name for name in BACKGROUND_COLORS if far(name)]
    if not ok:  # cannot happen with the palettes above; keep the best-separated colour rather than fail
        ok = [max(BACKGROUND_COLORS, key=lambda n: min(np.linalg.norm(
            np.subtract(BACKGROUND_COLORS[n], COLORS[c])) for c in object_colors))]
    kind = str(rng.choice(BACKGROUND_KINDS, p=[0.4, 0.2, 0.2, 0.2]))
    if kind in ("gradient", "stripes") and len(ok) < 2:
        kind = "solid"
    n = 2 if kind in ("gradient", "stripes") else 1
    colours = tuple(str(c) for c in rng.choice(ok, size=n, replace=False))
    return BackgroundPlan(kind=kind, colors=colours, orientation=str(rng.choice(["h", "v", "d"])),
                          period=float(rng.uniform(12, 24)) * size / 128)


def _layout(rng: np.random.Generator, motion: str, n: int, size: int) -> list[tuple]:
    """(start, end, radius) per object; travel spans most of the frame so motion shows at 1 fps."""
    if n == 1:
        lanes = [float(rng.uniform(0.3, 0.7))]
    else:
        lanes = [float(x) for x in rng.permutation([0.28, 0.72]) + rng.uniform(-0.03, 0.03, 2)]
    out = []
    for lane in lanes:
        if motion in ("grow", "shrink"):
            centre = (lane * size, float(rng.uniform(0.4, 0.6)) * size) if n == 2 else \
                (float(rng.uniform(0.4, 0.6)) * size, float(rng.uniform(0.4, 0.6)) * size)
            small, big = 0.04 * size, (0.24 if n == 1 else 0.16) * size
            out.append((centre, centre, (small, big) if motion == "grow" else (big, small)))
            continue
        r = float(rng.uniform(0.09, 0.12) if n == 1 else rng.uniform(0.08, 0.10)) * size
        near = r * 1.2 + float(rng.uniform(0.01, 0.03)) * size  # 1.2 r: the farthest any shape reaches
        far = size - near
        a, b = (far, near) if motion in ("left", "up") else (near, far)
        if motion in ("left", "right"):
            out.append(((a, lane * size), (b, lane * size), (r, r)))
        else:
            out.append(((lane * size, a), (lane * size, b), (r, r)))
    return out


def _make_plan(spec: SynthSpec, index: int, motion: str, objects: list[tuple[str, str]], subdir: str,
               rng: np.random.Generator) -> ClipPlan:
    codec = spec.codecs[index % len(spec.codecs)]
    seconds = spec.seconds if spec.max_seconds is None else float(rng.uniform(spec.seconds, spec.max_seconds))
    frames = max(1, round(seconds * spec.fps))
    placed = tuple(ObjectPlan(shape=s, color=c, start=start, end=end, radius=radius)
                   for (s, c), (start, end, radius) in zip(objects, _layout(rng, motion, len(objects), spec.size)))
    background = _pick_background(rng, [c for _, c in objects], spec.size)
    video = f"{subdir}/{index:05d}{CODECS[codec][0]}"
    return ClipPlan(index=index, video=video, codec=codec, size=spec.size, fps=int(spec.fps), frames=frames,
                    motion=motion, objects=placed, background=background,
                    seed=(spec.seed, _SPLIT_SALT[spec.split], index))


def _train_objects(spec: SynthSpec, motion: str, rng: np.random.Generator) -> list[tuple[str, str]]:
    """One or two (shape, colour) objects whose combination with ``motion`` is not held out."""
    allowed = [(s, c) for s in SHAPES for c in COLORS if (s, c, motion) not in spec.holdout]
    first = allowed[int(rng.integers(len(allowed)))]
    if rng.random() >= spec.two_object_rate:
        return [first]
    # Two objects differ in shape and colour so a caption can name each one unambiguously.
    others = [o for o in allowed if o[0] != first[0] and o[1] != first[1]]
    return [first, others[int(rng.integers(len(others)))]]


def _test_keys(spec: SynthSpec) -> list[tuple[str, list[tuple[str, str]]]]:
    """Distinct (motion, objects) for a test split, drawn from held-out combos only."""
    rng = np.random.default_rng([spec.seed, _SPLIT_SALT["test"]])
    held = sorted(spec.holdout)
    singles = [(m, [(s, c)]) for s, c, m in held]
    pairs = [(m, [(s1, c1), (s2, c2)]) for m in MOTIONS
             for (s1, c1, _), (s2, c2, _) in combinations([h for h in held if h[2] == m], 2) if s1 != s2 and c1 != c2]
    singles = [singles[i] for i in rng.permutation(len(singles))]
    pairs = [pairs[i] for i in rng.permutation(len(pairs))]
    n_two = min(len(pairs), max(round(spec.count * spec.two_object_rate), spec.count - len(singles)))
    if spec.count - n_two > len(singles):
        raise ValueError(f"SynthSpec.count={spec.count}: the held-out combos allow at most "
                         f"{len(singles) + len(pairs)} distinct test clips")
    keys = singles[: spec.count - n_two] + pairs[:n_two]
    keys = [keys[i] for i in rng.permutation(len(keys))]
    for motion, objects in keys:  # random object order, so the first-named object is not always the single one
        if len(objects) == 2 and rng.random() < 0.5:
            objects.reverse()
    return keys


def plan_clips(spec: SynthSpec, subdir: str = "videos") -> list[ClipPlan]:
    """The clips ``spec`` describes, without rendering them."""
    if spec.split == "test":
        keys = _test_keys(spec)
    else:
        order = np.random.default_rng([spec.seed, _SPLIT_SALT["train"]]).permutation(len(MOTIONS))
        keys = [(MOTIONS[order[i % len(MOTIONS)]], None) for i in range(spec.count)]
    plans = []
    for index, (motion, objects) in enumerate(keys):
        rng = np.random.default_rng([spec.seed, _SPLIT_SALT[spec.split], index])
        objects = objects if objects is not None else _train_objects(spec, motion, rng)
        plans.append(_make_plan(spec, index, motion, objects, subdir, rng))
    return plans


# ---------------------------------------------------------------- writing

def _render_job(job: tuple[ClipPlan, str]) -> None:
    plan, root = job
    path = Path(root) / plan.video
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, render_clip(plan), plan.fps, plan.codec)


def render_all(plans: list[ClipPlan], root, workers: int | None = None) -> None:
    """Render and encode ``plans`` under ``root``, in a process pool when there are many."""
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = min(cores, 8) if len(plans) >= 16 else 1
    jobs = [(plan, str(root)) for plan in plans]
    if workers <= 1:
        for job in jobs:
            _render_job(job)
        return
    # fork starts workers instantly and does not re-import the caller's __main__; the jobs touch only numpy and av.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        for _ in pool.imap_unordered(_render_job, jobs, chunksize=4):
            pass
        # Let the workers finish on the pool's own end-of-work message. Leaving the block without it terminates
        # them by SIGTERM, and a forked worker keeps the caller's SIGTERM handler (the benchmark runner's raises
        # SystemExit): a worker waiting on the task queue's lock could then outlive the signal and hang the join.
        pool.close()
        pool.join()


def write_manifest(path, plans: list[ClipPlan], phrasing: str = "train", seed: int = 0,
                   captions_per_video: int = 1) -> Path:
    """One JSON line per caption: video (relative to the manifest), caption, start, end, attrs."""
    path = Path(path)
    salt = PHRASINGS.index(phrasing)
    lines = []
    for plan in plans:
        attrs = plan.attrs()
        for k in range(captions_per_video):
            rng = np.random.default_rng([seed, *plan.seed[1:], 101 + salt, k])
            row = {"video": plan.video, "caption": make_caption(attrs, phrasing, rng), "start": 0.0,
                   "end": plan.seconds, "attrs": attrs}
            lines.append(json.dumps(row) + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    part.write_text("".join(lines), encoding="utf-8")
    os.replace(part, path)
    return path


def generate(out_dir, spec: SynthSpec = SynthSpec(), manifest: str = "manifest.jsonl",
             video_dir: str = "videos") -> Path:
    """Write ``spec.count`` videos under ``out_dir/video_dir`` and their manifest; return the manifest path."""
    out_dir = Path(out_dir)
    plans = plan_clips(spec, video_dir)
    render_all(plans, out_dir, spec.workers)
    return write_manifest(out_dir / manifest, plans, spec.phrasing, spec.seed, spec.captions_per_video)


def generate_split(out_dir, train: int = 800, test: int = 120, seed: int = 0, per_cell: int = 2,
                   **options) -> dict[str, Path]:
    """Train and test sets whose (shape, colour, motion) combos are disjoint.

    Writes ``train.jsonl`` (training phrasing), ``test.jsonl``, ``test_unseen.jsonl`` and ``test_heldout.jsonl``
    (the same test videos captioned in training phrasing, in unseen phrasing and in the held-out phrasing, the
    last drawn with another seed) and ``holdout.json``, the held-out combos.
    ``options`` are further ``SynthSpec`` fields (seconds, fps, size, codecs, workers, ...).
    """
    out_dir = Path(out_dir)
    holdout = holdout_combos(seed, per_cell)
    base = SynthSpec(seed=seed, holdout=holdout, **options)
    train_spec, test_spec = replace(base, count=train, split="train"), replace(base, count=test, split="test")
    train_plans, test_plans = plan_clips(train_spec, "train"), plan_clips(test_spec, "test")
    render_all(train_plans + test_plans, out_dir, base.workers)
    paths = {
        "train": write_manifest(out_dir / "train.jsonl", train_plans, "train", seed, base.captions_per_video),
        "test": write_manifest(out_dir / "test.jsonl", test_plans, "train", seed),
        "test_unseen": write_manifest(out_dir / "test_unseen.jsonl", test_plans, "unseen", seed),
        # Its own seed as well as its own words: no choice of synonym or sentence shape repeats the unseen set's.
        "test_heldout": write_manifest(out_dir / "test_heldout.jsonl", test_plans, "heldout", seed + 1),
        "holdout": out_dir / "holdout.json",
    }
    spec_fields = {k: v for k, v in asdict(base).items() if k not in ("holdout", "workers")}
    paths["holdout"].write_text(json.dumps({"spec": spec_fields, "train": train, "test": test, "per_cell": per_cell,
                                            "combos": sorted(list(c) for c in holdout)}, indent=1) + "\n")
    return paths
