"""`vidsearch serve`: argument checks, and the app served by waitress in a real subprocess over HTTP."""
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from webui.cli import main

VIDSEARCH = str(Path(sys.executable).with_name("vidsearch"))


def test_serve_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--store" in out and "127.0.0.1" in out and "--threads" in out and "--port" in out


def test_serve_rejects_bad_arguments(tmp_path, capsys):
    assert main(["serve", "--store", str(tmp_path / "missing")]) == 2
    assert "store directory not found" in capsys.readouterr().err
    assert main(["serve", "--store", str(tmp_path), "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
    assert main(["serve", "--store", str(tmp_path)]) == 2          # a directory that holds no store
    assert "no store here" in capsys.readouterr().err


class Server:
    """A `vidsearch serve` subprocess on a free port; the port is read from the line it prints."""

    def __init__(self, *args: str, timeout: float = 120.0):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([VIDSEARCH, "serve", "--port", "0", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.monotonic() + timeout
        self.lines = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(r"serving (http://[^ ]+/)", line)
            if m:
                self.url = m.group(1)
                return
        self.stop()
        raise AssertionError("server did not start:\n" + "".join(self.lines))

    def get(self, path: str, headers: dict | None = None):
        req = urllib.request.Request(self.url.rstrip("/") + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def post_file(self, path: str, name: str, data: bytes, fields: dict | None = None):
        import requests
        r = requests.post(self.url.rstrip("/") + path, files={"file": (name, data)}, data=fields or {}, timeout=60)
        return r.status_code, r.json()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def server(tiny_store_dir):
    s = Server("--store", str(tiny_store_dir), "--threads", "2", "--max-upload-mb", "0.05")
    yield s
    s.stop()


def test_serves_on_loopback_with_waitress(server):
    assert server.url.startswith("http://127.0.0.1:")
    status, headers, body = server.get("/api/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert "waitress" in headers.get("Server", "").lower()


def test_search_media_and_errors_over_http(server):
    status, _, body = server.get("/api/search?q=a+red+circle&k=3")
    results = json.loads(body)["results"]
    assert status == 200 and len(results) == 3
    status, headers, part = server.get(results[0]["video_url"].split("#")[0], {"Range": "bytes=0-99"})
    assert status == 206 and len(part) == 100 and headers["Content-Range"].startswith("bytes 0-99/")
    status, _, body = server.get("/api/search?q=")
    assert status == 400 and "error" in json.loads(body)
    status, _, body = server.get("/api/videos/999999")
    assert status == 404 and "error" in json.loads(body)


def test_upload_limits_over_http(server):
    status, body = server.post_file("/api/search/video", "big.mp4", b"\0" * 100_000)
    assert status == 413 and "limit" in body["error"]
    status, body = server.post_file("/api/search/video", "junk.mp4", b"junk" * 100)
    assert status == 415 and "junk.mp4" in body["error"]


def test_concurrent_requests(server):
    from concurrent.futures import ThreadPoolExecutor
    queries = ["circle", "square moving", "blue", "triangle", "red", "green square"] * 3
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda q: server.get(f"/api/search?q={q.replace(' ', '+')}&k=5"), queries))
    assert all(status == 200 and json.loads(body)["results"] for status, _, body in answers)
