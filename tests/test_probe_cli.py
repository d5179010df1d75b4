"""Tests for `vidsearch probe`: JSON lines for good and bad files, exit codes, in-process and as a subprocess."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_media import write_video
from webui.cli import main


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("probe")
    (root / "notes.mp4").write_text("not a video\n")
    return {
        "good": write_video(root / "good clip.mp4", 24, fps=8, size=(64, 48)),
        "webm": write_video(root / "ünïcode.webm", 12, fps=4, encoder="libvpx-vp9", size=(32, 32)),
        "text": root / "notes.mp4",
        "missing": root / "missing.mkv",
    }


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.timeout(60)
def test_probe_good_files(videos, capsys):
    assert main(["probe", str(videos["good"]), str(videos["webm"])]) == 0
    good, webm = _lines(capsys.readouterr().out)
    assert good == {"path": str(videos["good"]), "duration": 3.0, "fps": 8.0, "width": 64, "height": 48,
                    "frame_count": 24, "codec": "h264", "backend": "pyav-sampled", "subtitle_streams": 0}
    assert (webm["codec"], webm["frame_count"], webm["duration"], webm["width"]) == ("vp9", 12, 3.0, 32)


@pytest.mark.timeout(60)
def test_probe_reports_each_bad_file_and_fails(videos, capsys):
    paths = [videos["good"], videos["text"], videos["missing"]]
    assert main(["probe", *map(str, paths)]) == 1
    good, text, missing = _lines(capsys.readouterr().out)
    assert good["frame_count"] == 24
    assert text["path"] == str(videos["text"]) and "not a readable video file" in text["error"]
    assert missing == {"path": str(videos["missing"]), "error": "file not found"}


def test_probe_requires_a_file(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["probe"])
    assert exit_info.value.code == 2
    assert "FILE" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_probe_console_script(videos):
    script = Path(sys.executable).with_name("vidsearch")
    proc = subprocess.run([str(script), "probe", str(videos["webm"]), str(videos["missing"])],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    webm, missing = _lines(proc.stdout)
    assert webm["path"] == str(videos["webm"]) and webm["backend"] == "pyav-sampled"
    assert missing["error"] == "file not found"


def _flip_keyframe_bytes(good: Path, out: Path, flips: int = 20, seed: int = 1) -> Path:
    """A copy of an MP4 with bytes flipped inside its first keyframe, which every decode reads, the headers left
    intact (a flip in a frame that sampling skips and nothing refers to harms no sampled frame)."""
    import av

    with av.open(str(good)) as container:
        key = next(p for p in container.demux(container.streams.video[0]) if p.is_keyframe)
    data = bytearray(good.read_bytes())
    for pos in np.random.default_rng(seed).integers(key.pos + 8, key.pos + key.size, flips):
        data[pos] ^= 0xFF
    out.write_bytes(bytes(data))
    return out


@pytest.mark.timeout(120)
def test_probe_agrees_with_the_indexer_on_a_corrupt_file(tmp_path, capsys):
    from indexer import Store, index_paths
    from tests.fixtures.store import FakeModel, make_mp4

    good = make_mp4(tmp_path / "good.mp4", seconds=2.0)
    bad = _flip_keyframe_bytes(good, tmp_path / "bitflip.mp4")
    assert main(["probe", str(good), str(bad)]) == 1
    ok, refused = _lines(capsys.readouterr().out)
    assert ok["frame_count"] == 16 and "error" not in ok
    assert refused["path"] == str(bad) and refused["error"]
    report = index_paths([good, bad], tmp_path / "store", FakeModel(), workers=1, progress=False)
    assert dict(report.failed) == {str(bad): refused["error"]}
    with Store.open(tmp_path / "store") as store:
        rows = {v.path: v for v in store.videos(limit=10)}
    assert rows[str(good)].status == "indexed" and rows[str(bad)].status == "failed"
