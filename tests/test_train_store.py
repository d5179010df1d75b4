"""`vidsearch train --store`: training on the captions a store holds, with the frame features its index run kept."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from indexer import index_paths
from indexer.features import kept_keys
from trainer.captions import format_timestamp
from trainer.synth import SynthSpec, generate

TINY_FLAGS = ["--epochs", "1", "--batch-size", "4", "--branching", "4", "--depth", "1", "--workers", "1",
              "--threads", "1", "--no-progress"]


def _library(root: Path, count: int, sidecars: bool = True, seed: int = 5) -> list[dict]:
    """`count` generated clips; each one's manifest caption written as its .srt sidecar, the manifest removed."""
    manifest = generate(root, SynthSpec(count=count, seed=seed, seconds=4.0, fps=4, size=64, codecs=("h264",),
                                        workers=1))
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    manifest.unlink()
    for row in rows:
        row["video"] = str(root / row["video"])
        if sidecars:
            Path(row["video"]).with_suffix(".srt").write_text(
                f"1\n{format_timestamp(row['start'])} --> {format_timestamp(row['end'])}\n{row['caption']}\n")
    return rows


@pytest.fixture(scope="module")
def captioned_store(tiny_model_dir, tmp_path_factory):
    """A store of 8 clips whose only captions are .srt sidecars, indexed with the tiny model."""
    lib = tmp_path_factory.mktemp("srt_library")
    rows = _library(lib, 8)
    store = tmp_path_factory.mktemp("srt_store") / "store"
    report = index_paths([lib], store, tiny_model_dir, workers=1)
    assert report.exit_code == 0, report.summary()
    return lib, store, rows


def _train(argv, capsys):
    from webui.cli import main

    code = main(["train", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_index_keeps_the_frame_features_the_trainer_would_compute(captioned_store, tiny_model_dir, tmp_path):
    from indexer import Store
    from indexer.features import FeatureShelf
    from trainer.encoders import load_frame_encoder
    from trainer.features import FeatureCache
    from trainer.train_config import TrainConfig

    lib, store, rows = captioned_store
    spec = json.loads((tiny_model_dir / "frame_encoder.json").read_text())["spec"]
    sampling = TrainConfig(fps=1.0, size=96, clip_seconds=4.0).sampling()
    shelf = FeatureShelf(store, spec, sampling)
    video = rows[0]["video"]
    with Store(store) as s:
        kept = shelf.get(s.video_by_path(video).hash)
    fresh = FeatureCache(tmp_path, spec, sampling).load_all([video], load_frame_encoder(spec), workers=1)[video]
    assert kept is not None
    np.testing.assert_allclose(kept.times, fresh.times)
    np.testing.assert_allclose(kept.features, fresh.features, atol=2e-2)


@pytest.mark.slow
def test_train_from_sidecar_subtitles_reuses_kept_features(captioned_store, tmp_path, capsys):
    _, store, _ = captioned_store
    cache = tmp_path / "cache"
    code, out, err = _train(["--store", str(store), "--out", str(tmp_path / "model"), "--cache-dir", str(cache),
                             *TINY_FLAGS], capsys)
    assert code == 0, err
    assert "found 8 clip-text pairs" in err and "decoded again" not in err
    assert not cache.exists() or not any(cache.rglob("*.npz"))  # nothing decoded into the trainer's cache
    assert (tmp_path / "model" / "model.safetensors").is_file()
    words = json.loads((tmp_path / "model" / "caption_words.json").read_text())
    assert words  # the training vocabulary came from the subtitles


@pytest.mark.slow
def test_a_store_made_with_another_frame_encoder_trains_a_model_on_its_kept_features(tmp_path, capsys):
    from indexer.offline import OfflineEncoders

    lib = tmp_path / "lib"
    _library(lib, 8)
    older = "efficientnet-lite0:colour=1"    # the first colour histograms: not the default any more
    report = index_paths([lib], tmp_path / "store", OfflineEncoders(frame_encoder=older), workers=1)
    assert report.exit_code == 0, report.summary()
    cache = tmp_path / "cache"
    code, _, err = _train(["--store", str(tmp_path / "store"), "--out", str(tmp_path / "model"), "--cache-dir",
                           str(cache), *TINY_FLAGS], capsys)
    assert code == 0, err
    assert "decoded again" not in err and (not cache.exists() or not any(cache.rglob("*.npz")))
    assert json.loads((tmp_path / "model" / "frame_encoder.json").read_text())["spec"] == older


@pytest.mark.slow
def test_a_broken_subtitle_file_is_skipped_by_name_and_the_rest_train(captioned_store, tmp_path, capsys):
    lib, store, rows = captioned_store
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    broken = Path(rows[0]["video"]).with_suffix(".srt")
    good = broken.read_text()
    try:
        broken.write_text("1\n00:00:0x,000 --> 00:00:04,000\nsomething\n")
        code, _, err = _train(["--store", str(copy), "--out", str(tmp_path / "model"), *TINY_FLAGS], capsys)
    finally:
        broken.write_text(good)
    assert code == 0, err
    assert f"warning: {broken}" in err and "malformed cue timing" in err
    assert "found 7 clip-text pairs" in err


def test_a_store_without_captions_has_nothing_to_learn_from(tiny_model_dir, tmp_path, capsys):
    lib = tmp_path / "lib"
    _library(lib, 2, sidecars=False)
    index_paths([lib], tmp_path / "store", tiny_model_dir, workers=1)
    code, _, err = _train(["--store", str(tmp_path / "store"), "--out", str(tmp_path / "m"), *TINY_FLAGS], capsys)
    assert code == 2
    assert "nothing to learn from" in err and "holds no captions" in err
    assert not (tmp_path / "m").exists()


def test_too_few_pairs_say_how_many_and_what_would_help(captioned_store, tmp_path, capsys):
    _, store, _ = captioned_store
    code, _, err = _train(["--store", str(store), "--out", str(tmp_path / "m"), *TINY_FLAGS, "--batch-size", "32"],
                          capsys)
    assert code == 2
    assert "too few clip-text pairs" in err and "found 8" in err and "--batch-size" in err and ".srt" in err


@pytest.mark.slow
def test_store_and_manifest_combine_and_repeats_count_once(captioned_store, tmp_path, capsys):
    lib, store, rows = captioned_store
    manifest = tmp_path / "more.jsonl"
    extra = dict(rows[0], caption="an extra description of the first clip")
    manifest.write_text("\n".join(json.dumps(r) for r in (rows[1], extra)) + "\n")
    code, _, err = _train([str(manifest), "--store", str(store), "--out", str(tmp_path / "model"),
                           "--cache-dir", str(tmp_path / "cache"), *TINY_FLAGS], capsys)
    assert code == 0, err
    # rows[1]'s subtitle is the same caption as its manifest line: counted once, as the manifest's.
    assert "found 7 clip-text pairs" in err and "2 manifest captions" in err


def test_train_without_manifest_or_store_is_a_usage_error(tmp_path, capsys):
    code, _, err = _train(["--out", str(tmp_path / "m")], capsys)
    assert code == 2 and "MANIFEST" in err


def test_removing_a_video_drops_its_kept_features(captioned_store, tmp_path):
    from indexer import remove_paths

    _, store, rows = captioned_store
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    assert len(kept_keys(copy)) == len(rows)
    assert remove_paths([rows[0]["video"]], copy) == [rows[0]["video"]]
    assert len(kept_keys(copy)) == len(rows) - 1



def _forget_kept(store: Path, key: str) -> None:
    """Delete one video's kept features from the store, as if they had never been written."""
    import sqlite3

    from indexer.features import FEATURE_DIR, SHELF_FILE

    db = sqlite3.connect(store / FEATURE_DIR / SHELF_FILE)
    db.execute("DELETE FROM kept WHERE key = ?", (key,))
    db.commit()
    db.close()


def _snapshot(store: Path) -> tuple[dict, dict]:
    """What a store holds per clip, keyed by (video path, clip start): (vector, look, tags, thumbnail JPEG,
    description); and per caption, keyed by (video path, text, source): its vector."""
    import sqlite3

    from indexer import Store
    from indexer.store import bytes_vector

    clips = {}
    with Store(store) as s:
        for video in s.videos(limit=1000):
            for clip in s.clips(s.video_clips(video.id)):
                clips[(video.path, round(clip.start, 3))] = (
                    s.clip_vector(clip.id), s.clip_vector(clip.id, "look"), clip.tags,
                    s.thumbnail(clip.id), clip.description)
    db = sqlite3.connect(store / "store.db")
    rows = db.execute("SELECT v.path, c.text, c.source, c.vector FROM captions c JOIN videos v ON v.id = c.video_id")
    captions = {(path, text, source): bytes_vector(vec) for path, text, source, vec in rows}
    db.close()
    return clips, captions


@pytest.mark.slow
def test_reindex_with_another_model_rebuilds_from_the_kept_features(captioned_store, tiny_captioner_dir,
                                                                   tmp_path, capsys):
    """`index --store S --model M --reindex` (no paths): each video is rebuilt from the features the store
    kept, only the one whose features are gone is decoded, and the store holds what a fresh index run with M
    makes from the files."""
    from webui.cli import main

    lib, store, rows = captioned_store
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    _forget_kept(copy, kept_keys(copy)[0])
    assert main(["index", "--store", str(copy), "--model", str(tiny_captioner_dir), "--reindex", "--json",
                 "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rebuilt"] == {"videos_from_features": len(rows) - 1, "videos_decoded_again": 1}
    assert sorted(report["indexed"]) == sorted(r["video"] for r in rows)
    assert not (copy / "thumbs.reindex").exists()
    assert len(kept_keys(copy)) == len(rows)  # the decoded video's are kept again

    fresh = tmp_path / "fresh"
    assert main(["index", str(lib), "--store", str(fresh), "--model", str(tiny_captioner_dir), "--workers", "1",
                 "--no-progress"]) == 0
    capsys.readouterr()
    (ours, our_caps), (theirs, their_caps) = _snapshot(copy), _snapshot(fresh)
    assert ours.keys() == theirs.keys() and our_caps.keys() == their_caps.keys()
    assert any(source == "generated" for _, _, source in our_caps)  # the new model's descriptions
    for key, (vec, look, tags, thumb, description) in ours.items():
        f_vec, f_look, f_tags, f_thumb, f_description = theirs[key]
        np.testing.assert_allclose(vec, f_vec, atol=2e-2)  # kept features are float16
        np.testing.assert_allclose(look, f_look, atol=2e-2)
        assert [t for t, _ in tags] == [t for t, _ in f_tags]
        assert thumb == f_thumb and description == f_description
    for key, vec in our_caps.items():
        np.testing.assert_allclose(vec, their_caps[key], atol=1e-5)
