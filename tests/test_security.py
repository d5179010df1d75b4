"""The server's security review, one test per point: media, uploads, headers, escaping."""
from __future__ import annotations

import io
import json
import os

import pytest

from indexer import index_paths
from search import Engine
from tests.fixtures.store import FakeModel, make_mp4
from webui import create_app
from webui.headers import CONTENT_SECURITY_POLICY

SCRIPT = "<script>alert(1)</script>"


@pytest.fixture()
def site(tmp_path):
    """A store of three real videos (one captioned with a script tag), its app and the files."""
    lib = tmp_path / "lib"
    lib.mkdir()
    # Different lengths: the same content under two names would be indexed once.
    videos = {name: make_mp4(lib / f"{name}.mp4", seconds=s) for name, s in (("a", 2.0), ("b", 2.5), ("c", 3.0))}
    (lib / "other.bin").write_bytes(b"secret" * 1000)
    manifest = lib / "captions.jsonl"
    manifest.write_text("\n".join(json.dumps({"video": f"{n}.mp4", "caption": f"{SCRIPT} a red {n}"})
                                  for n in videos) + "\n")
    model = FakeModel()
    report = index_paths([manifest], tmp_path / "store", model, workers=1, progress=False)
    assert report.exit_code == 0, report.summary()
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    app = create_app(tmp_path / "store", config={"UPLOAD_DIR": str(uploads), "MAX_UPLOAD_BYTES": 50_000,
                                                 "REFRESH_SECONDS": 0.0},
                     engine=Engine(tmp_path / "store", model=model))
    client = app.test_client()
    ids = {os.path.basename(v["path"])[0]: v["id"] for v in client.get("/api/videos").get_json()["videos"]}
    return {"app": app, "client": client, "videos": videos, "ids": ids, "lib": lib, "uploads": uploads}


def test_media_serves_the_indexed_file(site):
    r = site["client"].get(f"/media/{site['ids']['a']}")
    assert r.status_code == 200 and r.data == site["videos"]["a"].read_bytes()
    assert r.headers["Content-Type"] == "video/mp4" and r.headers["X-Content-Type-Options"] == "nosniff"


def test_media_refuses_a_symlink_swapped_in_after_indexing(site):
    a = site["videos"]["a"]
    a.unlink()
    os.symlink(site["lib"] / "other.bin", a)
    r = site["client"].get(f"/media/{site['ids']['a']}")
    assert r.status_code == 403 and "changed since it was indexed" in r.get_json()["error"]
    assert b"secret" not in r.data


def test_media_refuses_a_link_that_now_points_elsewhere(site, tmp_path):
    # A library that reached its video through a link: indexing followed it; the link is then pointed at another file.
    real = make_mp4(tmp_path / "real.mp4", seconds=3.5)
    link = site["lib"] / "linked.mp4"
    os.symlink(real, link)
    model = site["app"].extensions["vidsearch_engine"].model
    assert index_paths([link], tmp_path / "store", model, workers=1, progress=False).exit_code == 0
    client = site["client"]
    video_id = next(v["id"] for v in client.get("/api/videos").get_json()["videos"] if v["path"] == str(link))
    assert client.get(f"/media/{video_id}").status_code == 200
    link.unlink()
    os.symlink(site["lib"] / "other.bin", link)
    assert client.get(f"/media/{video_id}").status_code == 403


def test_media_refuses_a_file_changed_in_place_and_one_gone(site):
    with open(site["videos"]["b"], "ab") as f:
        f.write(b"\0" * 10)
    assert site["client"].get(f"/media/{site['ids']['b']}").status_code == 403
    site["videos"]["c"].unlink()
    r = site["client"].get(f"/media/{site['ids']['c']}")
    assert r.status_code == 404 and r.is_json


def test_media_takes_no_path_from_the_request(site):
    for url in ("/media/..%2F..%2Fetc%2Fpasswd", "/media/a.mp4", "/media/-1", "/thumbs/..%2Fstore.db"):
        r = site["client"].get(url)
        assert r.status_code == 404 and r.is_json, url


def test_uploads_go_to_the_temp_dir_under_generated_names_and_are_always_deleted(site):
    app, client, uploads = site["app"], site["client"], site["uploads"]
    engine = app.extensions["vidsearch_engine"]
    seen = []
    real_video = engine.video

    def watched(path, **kwargs):        # the real search, with the spooled file's path noted on the way
        seen.append((path, os.path.exists(path)))
        return real_video(path, **kwargs)

    engine.video = watched
    try:
        good = site["videos"]["a"].read_bytes()
        for name, data, status in [("../../escape.mp4", good, 200), ("x/../../../y.webm", b"junk" * 50, 415),
                                   ("big.mp4", b"\0" * 60_000, 413), ("empty.mp4", b"", 400)]:
            r = client.post("/api/search/video", data={"file": (io.BytesIO(data), name)},
                            content_type="multipart/form-data")
            assert r.status_code == status, (name, r.get_json())
            assert list(uploads.iterdir()) == [], name
        engine.video = lambda path, **kwargs: (_ for _ in ()).throw(RuntimeError("search failed"))
        r = client.post("/api/search/video", data={"file": (io.BytesIO(good), "a.mp4")},
                        content_type="multipart/form-data")
        assert r.status_code == 500 and list(uploads.iterdir()) == []
    finally:
        engine.video = real_video
    assert len(seen) == 2
    for path, existed in seen:
        assert existed and os.path.dirname(path) == str(uploads)
        name = os.path.basename(path)
        assert name.startswith("vidsearch-query-") and "escape" not in name and "y.webm" != name
    assert not (site["lib"].parent.parent / "escape.mp4").exists()


def test_security_headers(site):
    client = site["client"]
    html = client.get("/")
    assert html.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    for r in (html, client.get("/api/health"), client.get("/nothing"), client.get("/api/nothing")):
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert "Server" not in r.headers
    assert "Content-Security-Policy" in client.get("/nothing").headers      # the HTML error page too


def test_captions_render_inert(site):
    client = site["client"]
    clip = client.get("/api/search?q=red&k=1&mode=dense").get_json()["results"][0]
    assert SCRIPT in clip["caption"]                                       # stored as written
    pages = [client.get(f"/watch/{clip['clip_id']}"), client.get("/?q=red"), client.get("/?q=" + SCRIPT)]
    for page in pages:
        body = page.get_data(as_text=True)
        assert page.status_code == 200 and "<script>alert" not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
        # The page's only script is the app's own file.
        assert body.count("<script") == 1 and 'src="/static/app.js"' in body


def test_threat_model_is_documented():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    section = readme.split("## Security", 1)[1].split("\n## ", 1)[0]
    for point in ("loopback", "authentication", "/media", "upload", "Content-Security-Policy"):
        assert point in section, point


