"""End to end through the `vidsearch index` / `remove` commands with the tiny trained model."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indexer import Store
from webui.cli import main

VIDSEARCH = Path(sys.executable).with_name("vidsearch")


def test_index_command_with_the_real_model(synth_library, tiny_model_dir, tmp_path, capsys):
    store = tmp_path / "store"
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    code = main(["index", str(synth_library.manifest), str(bad), "--store", str(store), "--model",
                 str(tiny_model_dir), "--workers", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 3, out
    assert f"indexed {len(synth_library.videos)}," in out and "failed 1" in out and str(bad) in out
    from trainer.api import load

    model = load(tiny_model_dir)
    with Store.open(store) as s:
        counts = s.counts()
        assert counts["videos"] == len(synth_library.videos) and counts["failed"] == 1
        assert counts["captions"] >= len(synth_library.rows) + 2  # manifest captions + the two .srt cues
        assert s.config.model_hash == model.identity["hash"] and s.config.dim == model.dim
        first = s.video_by_path(synth_library.videos[0])
        records = s.clips(s.video_clips(first.id))
        assert all(r.tags and 0 < r.tags[0][1] <= 1 for r in records)  # ImageNet concept tags
        caption = synth_library.rows[3]["caption"]
        scores, ids = s.search_clips(model.embed_text([caption]), 5)
        assert (ids[0] > 0).all() and np.all(np.diff(scores[0]) <= 1e-6)
        vector = s.clip_vector(int(ids[0, 0]))
        assert vector.shape == (model.dim,) and abs(np.linalg.norm(vector) - 1) < 1e-3
        word = records[0].tags[0][0].split()[0].strip(",")
        assert any(c in s.video_clips(first.id) for c, _ in s.keyword(word, 50))

    # Again, with the model the store records: nothing to do but the failed file.
    code = main(["index", str(synth_library.manifest), "--store", str(store), "--no-progress", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and len(report["skipped"]) == len(synth_library.videos) and not report["indexed"]

    code = main(["remove", str(synth_library.videos[0]), "--store", str(store)])
    assert code == 0 and "removed 1 path(s)" in capsys.readouterr().out
    with Store.open(store) as s:
        assert s.counts()["videos"] == len(synth_library.videos) - 1


def test_index_command_errors(tmp_path, synth_library, capsys):
    assert main(["index", "--store", str(tmp_path / "s")]) == 2
    assert "give at least one PATH" in capsys.readouterr().err
    assert main(["index", str(synth_library.videos[0]), "--store", str(tmp_path / "s"), "--fps", "0"]) == 1
    assert "fps must be > 0" in capsys.readouterr().err
    assert main(["index", str(synth_library.videos[0]), "--store", str(tmp_path / "s"),
                 "--model", str(tmp_path / "no-model")]) == 1
    assert "is not a vidsearch model dir" in capsys.readouterr().err
    assert main(["remove", "x.mp4", "--store", str(tmp_path / "nothing")]) == 1
    assert "no store here" in capsys.readouterr().err


def test_tiny_store_dir(tiny_store_dir, synth_library):
    with Store.open(tiny_store_dir) as s:
        assert s.counts()["videos"] == len(synth_library.videos)
        assert s.counts()["clips"] >= len(synth_library.videos)
        assert all(s.thumbnail(r.id)[:3] == b"\xff\xd8\xff" for r in s.clips(range(1, 10)))  # JPEG


@pytest.mark.slow
def test_help_is_fast_and_documents_exit_codes():
    out = subprocess.run([str(VIDSEARCH), "index", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "exit codes" in out.stdout and "3 " in out.stdout
    probe = "import sys, webui.cli as c; c.build_parser(); print(sorted(m for m in ('torch', 'faiss', 'sqlalchemy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
