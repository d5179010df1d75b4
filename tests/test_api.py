"""The JSON API and media endpoints through Flask's test client on the tiny indexed store."""
import io
import re

import pytest

from webui import create_app

RESULT_KEYS = {"clip_id", "video_id", "video_path", "start", "end", "score", "caption", "thumbnail_url", "video_url",
               "sources", "similarities", "description"}


@pytest.fixture(scope="module")
def app(tiny_store_dir, tmp_path_factory):
    upload_dir = tmp_path_factory.mktemp("uploads")
    # Re-ranking decodes candidate videos; a short list keeps the test quick. The tiny model is randomly
    # initialised, so none of its dense matches beats chance: cutoffs off, to see the API's whole ranking.
    return create_app(tiny_store_dir, config={"UPLOAD_DIR": str(upload_dir), "REFRESH_SECONDS": 0.5,
                                              "RERANK_TOP": 3, "CUTOFFS": False})


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def library(client):
    """Videos and one clip of the store, as the API lists them."""
    videos = client.get("/api/videos?limit=500").get_json()["videos"]
    indexed = [v for v in videos if v["status"] == "indexed"]
    hits = client.get("/api/search", query_string={"q": "a", "mode": "dense", "k": 100}).get_json()["results"]
    return {"videos": videos, "indexed": indexed, "hits": hits}


def check_answer(answer: dict, query: str) -> list[dict]:
    assert set(answer) - {"read_as"} == {"query", "took_ms", "results"}
    if "read_as" in answer:                    # text queries searched by vector say how they were read
        assert isinstance(answer["read_as"]["text"], str) and isinstance(answer["read_as"]["substitutions"], list)
    assert answer["query"] == query and isinstance(answer["took_ms"], float) and answer["took_ms"] >= 0
    for r in answer["results"]:
        assert set(r) == RESULT_KEYS
        assert isinstance(r["clip_id"], int) and isinstance(r["video_id"], int)
        assert 0 <= r["start"] < r["end"] and isinstance(r["score"], float)
        assert r["sources"] and set(r["sources"]) == set(r["similarities"])
        assert r["caption"] is None or isinstance(r["caption"], str)
        assert r["thumbnail_url"] == f"/thumbs/{r['clip_id']}.jpg"
        assert r["video_url"].startswith(f"/media/{r['video_id']}#t=")
    scores = [r["score"] for r in answer["results"]]
    assert scores == sorted(scores, reverse=True)
    return answer["results"]


def test_health(client, library):
    r = client.get("/api/health")
    assert r.status_code == 200
    body = r.get_json()
    assert set(body) == {"status", "videos", "clips", "model", "index", "channels"}
    assert body["status"] == "ok" and body["videos"] == len(library["indexed"]) and body["clips"] >= body["videos"]
    assert body["model"] and body["index"]
    assert body["channels"] == ["dense", "keyword", "concept", "lookalike"]


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_text_search_modes(client, library, mode):
    caption = next(h["caption"] for h in library["hits"] if h["caption"])
    r = client.get("/api/search", query_string={"q": caption, "mode": mode, "k": 5})
    assert r.status_code == 200
    results = check_answer(r.get_json(), caption)
    assert 1 <= len(results) <= 5
    if mode != "dense":
        # Every word of the query is in that caption, so keyword matching must put a clip with it on top.
        assert caption.lower() in {(x["caption"] or "").lower() for x in results}


def test_default_mode_is_hybrid_and_group_by_video(client):
    hybrid = client.get("/api/search?q=circle&k=20&mode=hybrid").get_json()["results"]
    default = client.get("/api/search?q=circle&k=20").get_json()["results"]
    assert [x["clip_id"] for x in default] == [x["clip_id"] for x in hybrid]
    grouped = check_answer(client.get("/api/search?q=circle&k=20&group=video").get_json(), "circle")
    assert len({x["video_id"] for x in grouped}) == len(grouped)


def test_text_search_says_how_it_read_the_query(client):
    rewritten = client.get("/api/search?q=a+pentagram&mode=dense&k=5").get_json()
    check_answer(rewritten, "a pentagram")
    assert rewritten["read_as"]["text"] == "a star"          # a pentagram is a kind of star (WordNet)
    assert [(x["from"], x["to"]) for x in rewritten["read_as"]["substitutions"]] == [("pentagram", "star")]
    plain = client.get("/api/search?q=a+star&mode=dense&k=5").get_json()
    assert (plain["read_as"]["text"], plain["read_as"]["substitutions"]) == ("a star", [])
    assert [x["clip_id"] for x in rewritten["results"]] == [x["clip_id"] for x in plain["results"]]
    as_typed = client.get("/api/search?q=a+pentagram&mode=dense&k=5&rewrite=0").get_json()
    assert (as_typed["read_as"]["text"], as_typed["read_as"]["substitutions"]) == ("a pentagram", [])
    assert "read_as" not in client.get("/api/search?q=a+pentagram&mode=keyword").get_json()
    assert client.get("/api/search?q=a+pentagram&rewrite=maybe").status_code == 400


def test_pagination_tiles_the_ranking(client):
    full = client.get("/api/search?q=moving&mode=dense&k=12").get_json()["results"]
    pages = [client.get(f"/api/search?q=moving&mode=dense&k=4&offset={o}").get_json()["results"] for o in (0, 4, 8)]
    assert [x["clip_id"] for p in pages for x in p] == [x["clip_id"] for x in full]


def test_rerank_rescores_with_probabilities(client):
    r = client.get("/api/search?q=a+red+circle&rerank=1&k=3")
    results = check_answer(r.get_json(), "a red circle")
    assert len(results) == 3 and all(0.0 <= x["score"] <= 1.0 for x in results)


def test_prefix_filter(client, library):
    path = library["indexed"][0]["path"]
    results = client.get("/api/search", query_string={"q": "shape", "k": 50, "prefix": path}).get_json()["results"]
    assert results and all(x["video_path"] == path for x in results)


def test_video_search_finds_the_uploaded_video(client, library):
    target = library["indexed"][0]
    with open(target["path"], "rb") as f:
        data = f.read()
    r = client.post("/api/search/video", data={"file": (io.BytesIO(data), "query.mp4"), "k": "3"},
                    content_type="multipart/form-data")
    assert r.status_code == 200
    results = check_answer(r.get_json(), "video:query.mp4")
    assert len(results) == 3
    assert results[0]["video_id"] == target["id"] and results[0]["sources"] == ["dense", "lookalike"]
    assert min(results[0]["similarities"].values()) > 0.99


def test_similar_clips(client, library):
    clip = library["hits"][0]
    r = client.get(f"/api/clips/{clip['clip_id']}/similar?k=3")
    results = check_answer(r.get_json(), f"similar:{clip['clip_id']}")
    assert results and clip["clip_id"] not in [x["clip_id"] for x in results]
    detail = client.get(f"/api/clips/{clip['clip_id']}").get_json()
    assert detail["video_id"] == clip["video_id"] and detail["start"] == clip["start"]


def test_videos_list_and_detail(client, library):
    body = client.get("/api/videos?offset=0&limit=2").get_json()
    assert body["offset"] == 0 and body["limit"] == 2 and len(body["videos"]) == min(2, len(library["videos"]))
    assert body["total"] == len(library["videos"])
    for v in library["videos"]:
        assert {"id", "path", "status", "error"} <= set(v)
        assert v["status"] != "failed" or v["error"]
    one = client.get(f"/api/videos/{library['indexed'][0]['id']}").get_json()
    assert one["path"] == library["indexed"][0]["path"] and one["video_url"].startswith("/media/")


def test_media_streams_whole_files_and_ranges(client, library):
    video = library["indexed"][0]
    with open(video["path"], "rb") as f:
        data = f.read()
    full = client.get(f"/media/{video['id']}")
    assert full.status_code == 200 and full.data == data and full.headers["Accept-Ranges"] == "bytes"
    assert full.mimetype.startswith("video/")
    part = client.get(f"/media/{video['id']}", headers={"Range": "bytes=10-109"})
    assert part.status_code == 206 and part.data == data[10:110]
    assert part.headers["Content-Range"] == f"bytes 10-109/{len(data)}" and part.headers["Content-Length"] == "100"
    tail = client.get(f"/media/{video['id']}", headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.data == data[-50:]
    rest = client.get(f"/media/{video['id']}", headers={"Range": f"bytes={len(data) - 5}-"})
    assert rest.status_code == 206 and rest.data == data[-5:]
    bad = client.get(f"/media/{video['id']}", headers={"Range": f"bytes={len(data)}-"})
    assert bad.status_code == 416 and bad.headers["Content-Range"] == f"bytes */{len(data)}"
    assert "error" in bad.get_json()
    ignored = client.get(f"/media/{video['id']}", headers={"Range": "bytes=oops"})
    assert ignored.status_code == 200 and ignored.data == data


def test_thumbnails(client, library):
    clip = library["hits"][0]
    r = client.get(f"/thumbs/{clip['clip_id']}.jpg")
    assert r.status_code == 200 and r.mimetype == "image/jpeg" and r.data[:3] == b"\xff\xd8\xff"
    again = client.get(f"/thumbs/{clip['clip_id']}.jpg", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304 and not again.data            # the browser's copy is still good


def test_openapi_documents_every_endpoint(client, app):
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.") and doc["info"]["title"]
    documented = set(doc["paths"])
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(("api.", "media.")):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            assert path in documented, f"{path} is not in the OpenAPI document"
    for path, item in doc["paths"].items():
        for op in item.values():
            assert op["responses"], path


@pytest.mark.parametrize("url, status", [
    ("/api/search", 400),
    ("/api/search?q=", 400),
    ("/api/search?q=%20%20", 400),
    ("/api/search?q=x&k=0", 400),
    ("/api/search?q=x&k=101", 400),
    ("/api/search?q=x&k=ten", 400),
    ("/api/search?q=x&offset=-1", 400),
    ("/api/search?q=x&offset=1001", 400),
    ("/api/search?q=x&mode=", 400),
    ("/api/videos?offset=12594391427338801152&limit=500", 400),
    ("/api/videos?limit=", 400),
    ("/api/search?q=x&mode=fuzzy", 400),
    ("/api/search?q=x&group=scene", 400),
    ("/api/search?q=x&rerank=maybe", 400),
    ("/api/clips/1/similar?k=0", 400),
    ("/api/videos?limit=0", 400),
    ("/api/videos?offset=x", 400),
    ("/api/clips/999999/similar", 404),
    ("/api/clips/999999", 404),
    ("/api/videos/999999", 404),
    ("/media/999999", 404),
    ("/thumbs/999999.jpg", 404),
    ("/api/nothing/here", 404),
    ("/api", 404),
    ("/media/abc", 404),
])
def test_client_mistakes_get_json_errors(client, url, status):
    r = client.get(url)
    assert r.status_code == status
    assert r.is_json and isinstance(r.get_json()["error"], str) and r.get_json()["error"]


def test_upload_errors_and_temp_files_are_removed(app, client):
    upload_dir = app.config["UPLOAD_DIR"]
    missing = client.post("/api/search/video", data={}, content_type="multipart/form-data")
    assert missing.status_code == 400 and "file" in missing.get_json()["error"]
    garbage = client.post("/api/search/video", data={"file": (io.BytesIO(b"not a video" * 100), "x.mp4")},
                          content_type="multipart/form-data")
    assert garbage.status_code == 415 and "x.mp4" in garbage.get_json()["error"]
    empty = client.post("/api/search/video", data={"file": (io.BytesIO(b""), "e.mp4")},
                        content_type="multipart/form-data")
    assert empty.status_code == 400
    bad_k = client.post("/api/search/video", data={"file": (io.BytesIO(b"xx"), "x.mp4"), "k": "500"},
                        content_type="multipart/form-data")
    assert bad_k.status_code == 400
    import os
    assert os.listdir(upload_dir) == []


def test_upload_over_the_limit_is_413(tiny_store_dir, app, tmp_path):
    small = create_app(tiny_store_dir, config={"MAX_UPLOAD_BYTES": 1000, "UPLOAD_DIR": str(tmp_path)},
                       engine=app.extensions["vidsearch_engine"])
    c = small.test_client()
    # Just over the limit: passes Flask's body check (which leaves room for the multipart envelope), caught on copy.
    r = c.post("/api/search/video", data={"file": (io.BytesIO(b"\0" * 1001), "big.mp4")},
               content_type="multipart/form-data")
    assert r.status_code == 413 and "limit" in r.get_json()["error"]
    # Far over: refused from the Content-Length alone.
    r = c.post("/api/search/video", data={"file": (io.BytesIO(b"\0" * 200_000), "big.mp4")},
               content_type="multipart/form-data")
    assert r.status_code == 413 and r.is_json
    assert list(tmp_path.iterdir()) == []


def test_garbage_requests_never_get_a_500(client):
    requests = [
        ("get", "/api/search?q=%00%ff&k=1"), ("get", "/api/search?q=" + "x" * 5000),
        ("get", '/api/search?q="unbalanced&mode=keyword'), ("get", "/api/search?q=a AND OR NOT*&mode=keyword"),
        ("get", "/api/search?q=NEAR(a b)&mode=hybrid"), ("get", "/api/search?q=^*:-&mode=keyword"),
        ("get", "/api/search?q=x&k=1e3"), ("get", "/api/search?q=x&offset=99999999"),
        ("get", "/api/search?q=x&k=" + "9" * 40), ("post", "/api/search"), ("delete", "/api/videos/1"),
        ("put", "/media/1"), ("get", "/api/clips/-1/similar"), ("get", "/api/clips/" + "9" * 30 + "/similar"),
        ("get", "/media/" + "9" * 30), ("get", "/thumbs/abc.jpg"), ("get", "/api/videos/1/../../etc/passwd"),
        ("post", "/api/search/video"), ("get", "/api/search/video"), ("get", "/watch/xyz"),
        ("get", "/watch/999999"), ("get", "/?q=%ff&page=0"), ("get", "/?q=x&mode=zzz"), ("get", "/library?page=-3"),
    ]
    for method, url in requests:
        r = getattr(client, method)(url, headers={"Range": "bytes=5-1"})
        assert r.status_code < 500, (method, url, r.status_code, r.data[:200])
    r = client.post("/api/search/video", data=b"--nope\r\n\r\n", content_type="multipart/form-data; boundary=zz")
    assert r.status_code == 400
    r = client.post("/api/search/video", data="plain", content_type="text/plain")
    assert r.status_code == 415 and "multipart/form-data" in r.get_json()["error"]
