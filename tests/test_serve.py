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

    def __init__(self, *args: str, timeout: float = 300.0, cwd=None):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([VIDSEARCH, "serve", "--port", "0", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
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


def test_serves_on_loopback_without_a_banner(server):
    assert server.url.startswith("http://127.0.0.1:")
    assert not any("warning" in line for line in server.lines)
    status, headers, body = server.get("/api/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert "Server" not in headers and "Via" not in headers
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_search_media_and_errors_over_http(server):
    status, _, body = server.get("/api/search?q=a+red+circle&k=3")
    results = json.loads(body)["results"]
    # Only keyword matches beat chance with the randomly initialised tiny model; there are at least one.
    assert status == 200 and 1 <= len(results) <= 3
    status, headers, part = server.get(results[0]["video_url"].split("#")[0], {"Range": "bytes=0-99"})
    assert status == 206 and len(part) == 100 and headers["Content-Range"].startswith("bytes 0-99/")
    status, _, body = server.get("/api/search?q=")
    assert status == 400 and "error" in json.loads(body)
    status, _, body = server.get("/api/videos/999999")
    assert status == 404 and "error" in json.loads(body)


def test_upload_limits_over_http(server):
    status, body = server.post_file("/api/search/video", "big.mp4", b"\0" * 100_000)
    assert status == 413 and "limit" in body["error"]
    # Far over the limit: refused from the Content-Length, before the body is read, still in the API's JSON.
    for length in (5 * 2 ** 20, 10 ** 12):
        status, headers, body = raw_post(server.url, "/api/search/video", length, b"\0" * 65536)
        assert status == 413, body
        assert headers["content-type"] == "application/json" and "limit" in json.loads(body)["error"]
    status, body = server.post_file("/api/search/video", "junk.mp4", b"junk" * 100)
    assert status == 415 and "junk.mp4" in body["error"]


def test_concurrent_requests(server):
    from concurrent.futures import ThreadPoolExecutor
    queries = ["circle", "square moving", "blue", "triangle", "red", "green square"] * 3
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda q: server.get(f"/api/search?q={q.replace(' ', '+')}&k=5"), queries))
    assert all(status == 200 and json.loads(body)["results"] for status, _, body in answers)


def raw_post(url: str, path: str, content_length: int, sent: bytes):
    """POST `sent` under a Content-Length header of `content_length` bytes over a raw socket: (status, headers,
    body) of the answer, which the server may give before the body is complete."""
    import socket
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        head = (f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: multipart/form-data; "
                f"boundary=x\r\nContent-Length: {content_length}\r\n\r\n").encode()
        try:
            sock.sendall(head + sent)
        except OSError:      # the server may close as soon as it has answered
            pass
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _length(data: bytes) -> int:
    m = re.search(rb"(?i)content-length:\s*(\d+)", data.split(b"\r\n\r\n", 1)[0])
    return int(m.group(1)) if m else 0


def test_relative_store_path_from_another_directory_and_a_warning_beyond_loopback(tiny_store_dir):
    """`vidsearch serve --store lib` as typed in the library's parent: thumbnails resolve against the store.
    Bound to every interface, the server says so."""
    parent = tiny_store_dir.parent
    s = Server("--store", tiny_store_dir.name, "--threads", "1", "--host", "0.0.0.0", cwd=parent)
    try:
        assert any("warning: binding to 0.0.0.0, not loopback" in line for line in s.lines), s.lines
        status, _, body = s.get("/api/search?q=circle&k=3")
        results = json.loads(body)["results"]
        assert status == 200 and results
        for r in results:
            status, headers, jpeg = s.get(r["thumbnail_url"])
            assert status == 200 and headers["Content-Type"] == "image/jpeg" and jpeg[:2] == b"\xff\xd8"
    finally:
        s.stop()
