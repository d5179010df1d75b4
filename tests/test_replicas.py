"""Many search servers: two `vidsearch serve` replicas on one PostgreSQL-backed store answer alike and both
pick up a video indexed after they started."""
from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest

from indexer import index_paths
from tests.fixtures.store import make_mp4
from tests.test_serve import Server


def _health(server) -> dict:
    status, _, body = server.get("/api/health")
    assert status == 200
    return json.loads(body)


@pytest.mark.slow
def test_two_replicas_on_one_postgres_store(synth_library, tiny_model_dir, postgres_url, tmp_path):
    store = tmp_path / "store"
    videos = synth_library.videos[:4]
    # Captioned, so that a text query has keyword evidence: the tiny random model's dense scores stay at chance.
    manifest = tmp_path / "four.jsonl"
    manifest.write_text("".join(json.dumps({"video": str(v), "caption": row["caption"]}) + "\n"
                                for v, row in zip(videos, synth_library.rows)))
    report = index_paths([manifest], store, tiny_model_dir, workers=1, db=postgres_url)
    assert report.exit_code == 0, report.summary()
    assert not (store / "store.db").exists()  # the rows are on PostgreSQL only
    replicas = [Server("--store", str(store), "--threads", "2") for _ in range(2)]
    try:
        first = [_health(r) for r in replicas]
        assert [h["videos"] for h in first] == [len(videos)] * 2
        answers = [json.loads(r.get(f"/api/search?q={quote(synth_library.rows[0]['caption'])}&k=5&mode=hybrid")[2])["results"] for r in replicas]
        assert answers[0] and [a["clip_id"] for a in answers[0]] == [a["clip_id"] for a in answers[1]]
        # A clip id one replica handed out means the same clip on the other: no per-process state.
        status, _, body = replicas[1].get(f"/api/clips/{answers[0][0]['clip_id']}/similar?k=3")
        assert status == 200 and json.loads(body)["results"]

        new = make_mp4(tmp_path / "later.mp4", seconds=3.0)
        assert index_paths([new], store, tiny_model_dir, workers=1).exit_code == 0
        deadline, seen = time.monotonic() + 60, [False, False]
        while time.monotonic() < deadline and not all(seen):
            for i, r in enumerate(replicas):
                page = json.loads(r.get("/api/videos?limit=100")[2])
                seen[i] = str(new) in json.dumps(page)
            time.sleep(0.5)
        assert seen == [True, True]
        assert [_health(r)["videos"] for r in replicas] == [len(videos) + 1] * 2
    finally:
        for r in replicas:
            r.stop()
