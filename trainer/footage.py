"""Real footage that nobody captioned: photos that ship inside PyPI packages, made into short pan and zoom clips.

scikit-image and matplotlib carry a handful of real photographs (a cat, a cup of coffee, a motorcycle, the moon).
Each becomes two different clips, a slow pan across it and a zoom into it, so that a library holds two videos of
every subject and none of them comes with a caption or sidecar. The benchmark of search on real footage and the
demo library both build their clips here.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

# name -> (package, file inside the package's folder); scikit-image's data folder and matplotlib's sample data.
PHOTOS = {
    "astronaut": ("skimage", "data/astronaut.png"), "brick": ("skimage", "data/brick.png"),
    "camera": ("skimage", "data/camera.png"), "chelsea": ("skimage", "data/chelsea.png"),
    "clock": ("skimage", "data/clock_motion.png"), "coffee": ("skimage", "data/coffee.png"),
    "coins": ("skimage", "data/coins.png"), "grass": ("skimage", "data/grass.png"),
    "gravel": ("skimage", "data/gravel.png"), "horse": ("skimage", "data/horse.png"),
    "hubble": ("skimage", "data/hubble_deep_field.jpg"), "moon": ("skimage", "data/moon.png"),
    "motorcycle": ("skimage", "data/motorcycle_left.png"), "rocket": ("skimage", "data/rocket.jpg"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}
MOTIONS = {"pan": 6.0, "zoom": 7.0}      # clip kind -> seconds: two different 5-8 s clips per photo
SIZE = (240, 180)                        # width, height of the clips
FPS = 8


def photo_path(name: str) -> Path | None:
    """Where photo `name` (a key of PHOTOS) lies in its installed package, or None if the package is missing."""
    package, inner = PHOTOS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / inner
    return path if path.is_file() else None


def load_photo(path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file; grey and transparent images are flattened onto white."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            flat = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(flat, im)
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def pan_zoom_frames(image: np.ndarray, motion: str, seconds: float, fps: int = FPS,
                    size: tuple[int, int] = SIZE) -> np.ndarray:
    """(T, H, W, 3) frames of a virtual camera over `image`: "pan" slides a window of 75% of the photo from one
    side to the other along its longer axis; "zoom" closes in from the whole photo to its middle 55%."""
    from PIL import Image

    if motion not in MOTIONS:
        raise ValueError(f"motion={motion!r}: choose from {sorted(MOTIONS)}")
    h, w = image.shape[:2]
    aspect = size[0] / size[1]
    full = (min(w, h * aspect), min(h, w / aspect))        # the largest window of the clip's aspect
    photo, n = Image.fromarray(image), max(2, round(seconds * fps))
    frames = []
    for i in range(n):
        t = i / (n - 1)
        scale = 0.75 if motion == "pan" else 1.0 - 0.45 * t
        cw, ch = full[0] * scale, full[1] * scale
        if motion == "pan":       # along the axis with room to move
            cx = cw / 2 + (w - cw) * t if w - cw >= h - ch else w / 2
            cy = ch / 2 + (h - ch) * t if w - cw < h - ch else h / 2
        else:
            cx, cy = w / 2, h / 2
        box = (cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2)
        frames.append(np.asarray(photo.resize(size, Image.BILINEAR, box=box)))
    return np.stack(frames)


def photo_clips(out_dir, names=None) -> dict[str, list[Path]]:
    """Write two clips (pan and zoom) of each packaged photo under `out_dir`; photo name -> its clip paths.
    Photos whose package is not installed are left out; clips already written are kept."""
    from .synth import write_video

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names or PHOTOS:
        source = photo_path(name)
        if source is None:
            continue
        paths = []
        for motion, seconds in MOTIONS.items():
            path = out_dir / f"{name}-{motion}.mp4"
            if not path.is_file():
                write_video(path, pan_zoom_frames(load_photo(source), motion, seconds), FPS, "h264")
            paths.append(path)
        out[name] = paths
    return out
