"""The HTML pages through Flask's test client: search without JS, upload, watch, library, escaping, error pages."""
import io
import re

import pytest

from webui import create_app


@pytest.fixture(scope="module")
def app(tiny_store_dir, tmp_path_factory):
    # The tiny model is randomly initialised, so none of its dense matches beats chance: cutoffs off, to page
    # through the whole ranking.
    return create_app(tiny_store_dir, config={"UPLOAD_DIR": str(tmp_path_factory.mktemp("ui-uploads")),
                                              "PAGE_SIZE": 4, "CUTOFFS": False})


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def result_links(html: str) -> list[int]:
    return [int(m) for m in re.findall(r'<a class="result" href="/watch/(\d+)"', html)]


def test_search_page_form_works_without_js(client):
    page = client.get("/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert '<form class="text-search" method="get"' in html and 'name="q"' in html
    assert 'name="mode"' in html and 'name="rerank"' in html and 'type="file"' in html
    assert "cdn" not in html.lower() and "https://" not in html
    r = client.get("/?q=a+circle&mode=hybrid")
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and len(result_links(html)) == 4
    assert re.search(r"\d+:\d\d&ndash;\d+:\d\d", html)        # mm:ss ranges under thumbnails
    assert 'src="/thumbs/' in html and 'class="score"' in html


def test_pagination_links_walk_the_results(client):
    first = client.get("/?q=moving&mode=dense").get_data(as_text=True)
    assert 'rel="next"' in first and 'rel="prev"' not in first
    href = re.search(r'<a rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = client.get(href).get_data(as_text=True)
    assert 'rel="prev"' in second
    assert not set(result_links(first)) & set(result_links(second))


def test_search_page_shows_a_rewritten_query_and_offers_the_words_as_typed(client):
    html = client.get("/?q=a+pentagram").get_data(as_text=True)
    assert "Read as <strong>a star</strong>" in html and "pentagram &rarr; star" in html
    href = re.search(r'<a href="([^"]+)">search the words as typed</a>', html).group(1).replace("&amp;", "&")
    assert "rewrite=0" in href
    as_typed = client.get(href).get_data(as_text=True)
    assert "Read as" not in as_typed and len(result_links(as_typed)) > 0
    assert "Read as" not in client.get("/?q=a+star").get_data(as_text=True)


def test_query_text_is_escaped(client):
    html = client.get("/?q=<script>alert(1)</script>").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_upload_search_page(client, tiny_store_dir):
    from indexer import Store
    video = Store.open(tiny_store_dir).videos(limit=1)[0]
    with open(video.path, "rb") as f:
        data = f.read()
    r = client.post("/search/video", data={"file": (io.BytesIO(data), "mine.mp4")},
                    content_type="multipart/form-data")
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and "mine.mp4" in html and result_links(html)
    bad = client.post("/search/video", data={"file": (io.BytesIO(b"junk" * 10), "junk.mp4")},
                      content_type="multipart/form-data")
    assert bad.status_code == 415 and "junk.mp4" in bad.get_data(as_text=True)


def test_watch_page_player_starts_at_the_clip(client):
    html = client.get("/?q=circle").get_data(as_text=True)
    clip_id = result_links(html)[0]
    detail = client.get(f"/api/clips/{clip_id}").get_json()
    page = client.get(f"/watch/{clip_id}").get_data(as_text=True)
    video = re.search(r'<video id="player"[^>]*>', page).group(0)
    start = f"{detail['start']:g}"
    assert f'src="/media/{detail["video_id"]}#t={start},{detail["end"]:g}"' in video
    assert f'data-start="{start}"' in video
    assert "Similar clips" in page and f'href="/watch/{clip_id}"' not in page.split("Similar clips")[1]
    assert client.get("/static/app.js").status_code == 200
    assert "loadedmetadata" in client.get("/static/app.js").get_data(as_text=True)


def test_library_page_lists_status(client):
    html = client.get("/library").get_data(as_text=True)
    assert "Library" in html and "indexed" in html and html.count('<tr class="status-') >= 1
    first = re.search(r'<a class="file" title="([^"]+)" href="/watch/(\d+)"', html)
    assert first and client.get(f"/watch/{first.group(2)}").status_code == 200


def test_html_errors(client):
    r = client.get("/watch/999999")
    assert r.status_code == 404 and "<h1>404</h1>" in r.get_data(as_text=True)
    r = client.get("/?q=x&mode=zzz")
    assert r.status_code == 400 and "mode" in r.get_data(as_text=True)
    assert client.get("/no/such/page").status_code == 404
