"""End to end through the real commands: `vidsearch train` a tiny model, `index`, `serve`, then query over HTTP."""
import json
import subprocess
import time

import numpy as np
import pytest

from tests.test_serve import VIDSEARCH, Server
from trainer.synth import write_video


def _gradient_frames(n: int, size: int) -> np.ndarray:
    """A moving colour gradient, (n, size, size, 3) uint8: a video unlike every synthetic clip."""
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    frames = [np.stack([np.roll(ramp, 4 * t)[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1),
                        np.full((size, size), 8.0 * t)], axis=-1) for t in range(n)]
    return np.clip(frames, 0, 255).astype(np.uint8)


def run(*args: str, timeout: float = 600) -> str:
    done = subprocess.run([VIDSEARCH, *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"vidsearch {args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_train_index_serve_query(synth_library, tmp_path):
    model, store, cache = tmp_path / "model", tmp_path / "store", tmp_path / "cache"
    run("train", str(synth_library.manifest), "--out", str(model), "--epochs", "1", "--batch-size", "5",
        "--branching", "2", "--depth", "1", "--workers", "1", "--cache-dir", str(cache),
        "--no-progress", "--no-captioner")  # the caption decoder's own CLI path: tests/test_captioner.py
    assert (model / "config.json").is_file()
    run("index", str(synth_library.manifest), "--store", str(store), "--model", str(model), "--workers", "1",
        "--no-progress")

    server = Server("--store", str(store), "--threads", "2")
    try:
        status, _, body = server.get("/api/health")
        health = json.loads(body)
        assert status == 200 and health["videos"] == len(synth_library.videos)

        row = synth_library.rows[3]
        query = row["caption"].replace(" ", "+")
        status, _, body = server.get(f"/api/search?q={query}&mode=keyword&k=5")
        results = json.loads(body)["results"]
        assert status == 200 and row["caption"] in [r["caption"] for r in results]
        status, _, body = server.get(f"/api/search?q={query}&k=5&group=video")
        assert status == 200 and json.loads(body)["results"]

        video = synth_library.videos[3]
        status, answer = server.post_file("/api/search/video", video.name, video.read_bytes(), {"k": "1"})
        top = answer["results"][0]
        assert status == 200 and top["video_path"] == str(video)
        assert max(top["similarities"].values()) > 0.99          # the channels' own similarity, not the fused rank

        status, headers, part = server.get(f"/media/{top['video_id']}", {"Range": "bytes=0-15"})
        assert status == 206 and part == video.read_bytes()[:16]
        status, _, page = server.get(f"/watch/{top['clip_id']}")
        assert status == 200 and b'<video id="player"' in page
        status, _, thumb = server.get(top["thumbnail_url"])
        assert status == 200 and thumb[:3] == b"\xff\xd8\xff"

        # Index one more file while the server runs: it shows up without a restart.
        extra = write_video(tmp_path / "extra.mp4", _gradient_frames(24, 96), fps=8)
        run("index", str(extra), "--store", str(store), "--workers", "1", "--no-progress")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            videos = json.loads(server.get("/api/health")[2])["videos"]
            if videos == len(synth_library.videos) + 1:
                break
            time.sleep(0.5)
        assert videos == len(synth_library.videos) + 1
    finally:
        server.stop()
    assert server.proc.returncode is not None
