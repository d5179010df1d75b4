"""Tests for the synthetic video generator: determinism, real codecs, visible motion, captions, held-out splits."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import av
import numpy as np
import pytest

from trainer.captions import read_manifest
from trainer.synth import (BACKGROUND_WORDS, CODECS, COLORS, MOTION_WORDS, MOTIONS, OPPOSITE_MOTION, SHAPE_WORDS,
                           SHAPES, TEMPLATES, SynthSpec, generate, generate_split, holdout_combos, make_caption,
                           plan_clips, render_clip, shape_mask, write_video)

TINY = SynthSpec(count=6, seed=1, seconds=2.0, fps=4, size=64, workers=1)


def decode_rgb(path) -> tuple[np.ndarray, np.ndarray, str]:
    """All frames of a video with PyAV: (T, H, W, 3) uint8, their times in seconds, and the codec name."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, times = [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.pts * stream.time_base))
        return np.stack(frames), np.array(times), stream.codec_context.name


def object_mask(frames: np.ndarray, colors: list[str], tolerance: float = 70.0) -> np.ndarray:
    """(T, H, W) pixels close to any of the objects' colours."""
    diffs = [np.linalg.norm(frames.astype(np.float32) - np.array(COLORS[c], np.float32), axis=-1) for c in colors]
    return np.min(diffs, axis=0) < tolerance


def test_same_spec_gives_identical_files_and_a_new_seed_changes_them(tmp_path):
    # Several rounds with every codec interleaved: encoders that read stale memory only show it this way.
    spec = replace(TINY, count=12, codecs=tuple(CODECS))
    first = generate(tmp_path / "0", spec)
    rows = [json.loads(line) for line in first.read_text().splitlines()]
    assert len(rows) == spec.count
    for k in (1, 2, 3):
        again = generate(tmp_path / str(k), spec)
        assert again.read_bytes() == first.read_bytes()
        for row in rows:
            assert (tmp_path / str(k) / row["video"]).read_bytes() == (tmp_path / "0" / row["video"]).read_bytes()
    assert generate(tmp_path / "other", replace(spec, seed=2)).read_text() != first.read_text()


def test_pool_output_matches_in_process_output_and_larger_counts_extend_smaller(tmp_path):
    spec = replace(TINY, count=16, seconds=1.0)
    serial = generate(tmp_path / "serial", spec)
    pooled = generate(tmp_path / "pooled", replace(spec, workers=2))
    assert serial.read_bytes() == pooled.read_bytes()
    for row in map(json.loads, serial.read_text().splitlines()):
        assert (tmp_path / "serial" / row["video"]).read_bytes() == (tmp_path / "pooled" / row["video"]).read_bytes()
    assert plan_clips(replace(spec, count=4)) == plan_clips(spec)[:4]


def test_pool_workers_finish_without_a_signal_whatever_sigterm_handler_the_caller_has(tmp_path):
    # A forked worker keeps the caller's SIGTERM handler; one that does not exit at once (the benchmark runner's
    # raises SystemExit) could leave a worker waiting on the task queue's lock and the pool's join hung. Workers
    # that are sent no signal cannot be caught that way: each one that gets SIGTERM here leaves a mark.
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from trainer.synth import SynthSpec, generate
signal.signal(signal.SIGTERM, lambda *_: (open({str(tmp_path)!r} + f"/termed-{{os.getpid()}}", "w").close(),
                                           sys.exit(143)))
generate({str(tmp_path / "out")!r}, SynthSpec(count=16, seed=1, seconds=1.0, fps=4, size=64, workers=2))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "out" / "videos").iterdir())) == 16
    assert not list(tmp_path.glob("termed-*"))


def test_every_codec_writes_a_decodable_file_of_the_planned_length(tmp_path):
    spec = replace(TINY, count=len(CODECS), codecs=tuple(CODECS))
    rows = [json.loads(line) for line in generate(tmp_path, spec).read_text().splitlines()]
    decoder_names = {"h264": "h264", "vp9": "vp9", "mpeg4": "mpeg4", "vp8": "vp8", "hevc": "hevc", "av1": "av1"}
    seen = set()
    for row in rows:
        codec = row["attrs"]["codec"]
        assert row["video"].endswith(CODECS[codec][0])
        frames, times, name = decode_rgb(tmp_path / row["video"])
        assert decoder_names[codec] in name or name.startswith("lib") and codec[:2] in name
        assert frames.shape == (spec.seconds * spec.fps, spec.size, spec.size, 3)
        np.testing.assert_allclose(times, np.arange(len(times)) / spec.fps, atol=1e-3)
        assert row["end"] == spec.seconds
        seen.add(codec)
    assert seen == set(CODECS)


def test_writing_av1_leaves_the_callers_scheduling_as_it_was(tmp_path):
    # SVT-AV1 run as root raises the encoding thread to SCHED_FIFO 99, which every process it starts would inherit.
    import os

    from trainer.synth import write_video

    before = (os.sched_getscheduler(0), os.sched_getparam(0))
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    write_video(tmp_path / "clip.mkv", frames, fps=4, codec="av1")
    assert (os.sched_getscheduler(0), os.sched_getparam(0)) == before
    assert (tmp_path / "clip.mkv").stat().st_size > 0


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_is_a_solid_blob_of_similar_size_centred_on_its_position(shape):
    u = np.linspace(-1.5, 1.5, 301, dtype=np.float32)
    mask = shape_mask(shape, u[None, :], u[:, None])
    area = mask.mean() * 9.0  # in squared radii
    assert mask[150, 150]  # the centre is inside
    assert 1.2 < area < 3.2  # comparable sizes: no shape dwarfs another
    assert not mask[[0, -1], :].any() and not mask[:, [0, -1]].any()  # fits within 1.5 radii


def test_shapes_are_distinguishable_from_each_other():
    u = np.linspace(-1.5, 1.5, 121, dtype=np.float32)
    masks = {s: shape_mask(s, u[None, :], u[:, None]) for s in SHAPES}
    for a, b in combinations(SHAPES, 2):
        iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
        assert iou < 0.85, (a, b, iou)


def assert_motion_visible(frames: np.ndarray, times: np.ndarray, duration: float, attrs: dict, name: str) -> None:
    """The objects in ``frames`` (sampled at ``times``) move, grow or shrink as ``attrs["motion"]`` says."""
    mask = object_mask(frames, attrs["colors"])
    area = mask.sum(axis=(1, 2)).astype(float)
    assert (area > 5).all(), f"{name}: object not found in some sampled frames"
    ys, xs = np.mgrid[0 : mask.shape[1], 0 : mask.shape[2]]
    cx = (mask * xs).sum(axis=(1, 2)) / area
    cy = (mask * ys).sum(axis=(1, 2)) / area
    motion = attrs["motion"]
    track = {"left": -cx, "right": cx, "up": -cy, "down": cy, "grow": area, "shrink": -area}[motion]
    assert np.all(np.diff(track) > 0), f"{name}: {motion} not monotonic: {track}"
    if motion in ("grow", "shrink"):
        assert area.max() / area.min() > 3
    else:
        # The whole clip spans at least 60% of the frame; the samples see their share of that.
        share = (times[-1] - times[0]) / duration
        assert abs(track[-1] - track[0]) > 0.6 * mask.shape[2] * share, f"{name}: travel too short"


def test_motion_is_visible_at_one_frame_per_second_in_decoded_videos(synth_library):
    """Sampled at 1 fps, every clip shows its motion: objects cross most of the frame or grow/shrink a lot."""
    for row, path in zip(synth_library.rows, synth_library.videos):
        frames, times, _ = decode_rgb(path)
        picks = [int(np.argmin(np.abs(times - t))) for t in np.arange(0.0, row["end"] - 0.5, 1.0)]
        assert_motion_visible(frames[picks], times[picks], times[-1], row["attrs"], path.name)


def test_project_decoder_sees_the_motion_at_one_frame_per_second(synth_library):
    import trainer.media as media
    sampling = media.SamplingConfig(fps=1.0, size=96)
    with media.DecodePool(workers=2, sampling=sampling, timeout=60) as pool:
        for (path, decoded), row in zip(pool.imap(synth_library.videos), synth_library.rows):
            assert not isinstance(decoded, Exception), decoded
            assert decoded.info.width == decoded.info.height == 96
            assert decoded.info.duration == pytest.approx(row["end"], abs=0.01)
            assert len(decoded.frames) >= 4 and np.all(np.diff(decoded.times) > 0.9)
            assert_motion_visible(decoded.frames, decoded.times, decoded.info.duration, row["attrs"], path)


def test_reversed_clips_show_the_opposite_motion():
    for plan in plan_clips(replace(TINY, count=6, seconds=4.0, size=96)):
        frames = render_clip(plan)[::-1]
        times = np.arange(len(frames)) / plan.fps
        attrs = dict(plan.attrs(), motion=OPPOSITE_MOTION[plan.motion])
        picks = np.arange(0, len(frames), plan.fps)
        assert_motion_visible(frames[picks], times[picks], times[-1], attrs, plan.video)


def test_rendered_clip_matches_its_plan():
    plan = plan_clips(replace(TINY, count=12, size=96))[0]
    frames = render_clip(plan)
    assert frames.shape == (plan.frames, 96, 96, 3) and frames.dtype == np.uint8
    mask = object_mask(frames, [o.color for o in plan.objects], tolerance=1.0)
    assert mask[0].any() and mask[-1].any()


def test_several_captions_per_video_and_varied_durations(tmp_path):
    spec = replace(TINY, count=8, captions_per_video=3, seconds=1.0, max_seconds=3.0)
    captions = read_manifest(generate(tmp_path, spec))
    assert len(captions) == 24
    per_video = [captions[i : i + 3] for i in range(0, 24, 3)]
    assert all(len({c.video for c in group}) == 1 for group in per_video)
    assert sum(len({c.text for c in group}) > 1 for group in per_video) >= 6
    durations = {group[0].end for group in per_video}
    assert len(durations) > 2 and all(1.0 <= d <= 3.0 for d in durations)
    for group in per_video:
        frames, _, _ = decode_rgb(group[0].video)
        assert len(frames) == round(group[0].end * spec.fps)


def test_write_video_rejects_bad_frames_and_codecs(tmp_path):
    with pytest.raises(ValueError, match="codec='nope'"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 32, 32, 3), np.uint8), 4, "nope")
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 33, 32, 3), np.uint8), 4)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 32, 32, 3), np.float32), 4)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("field, value", [("size", 33), ("fps", 0), ("seconds", 0), ("codecs", ("h263",)),
                                          ("phrasing", "poetic"), ("split", "val"), ("count", -1),
                                          ("max_seconds", 1.0), ("holdout", frozenset({("blob", "red", "left")}))])
def test_bad_spec_fields_are_named_in_the_error(field, value):
    with pytest.raises(ValueError, match=rf"SynthSpec\.{field}="):
        replace(TINY, **{field: value})


def _words(phrases) -> set[str]:
    return {w for p in phrases for w in re.findall(r"[a-z-]+", p.replace("{", " {").lower()) if not w.startswith("{")}


def test_unseen_phrasing_uses_words_absent_from_training_phrasing():
    train_vocab = _words([w for table in (SHAPE_WORDS, MOTION_WORDS) for opts in table["train"].values() for w in opts]
                         + list(BACKGROUND_WORDS["train"].values())
                         + [t for ts in TEMPLATES["train"].values() for t in ts])
    for table in (SHAPE_WORDS, MOTION_WORDS):
        for value, phrases in table["unseen"].items():
            for phrase in phrases:
                assert _words([phrase]) - train_vocab, f"unseen phrase {phrase!r} for {value} only uses training words"
    for template in [t for ts in TEMPLATES["unseen"].values() for t in ts]:
        assert template not in [t for ts in TEMPLATES["train"].values() for t in ts]


def _phrasing_words(phrasing: str) -> set[str]:
    from trainer.lexicon import stop_words

    return _words([w for table in (SHAPE_WORDS, MOTION_WORDS) for opts in table[phrasing].values() for w in opts]
                  + list(BACKGROUND_WORDS[phrasing].values())
                  + [t for ts in TEMPLATES[phrasing].values() for t in ts]) - stop_words()


def test_held_out_phrasing_shares_no_synonym_or_sentence_shape_with_the_unseen_one():
    train, unseen = _phrasing_words("train"), _phrasing_words("unseen")
    unseen_only = unseen - train
    for table in (SHAPE_WORDS, MOTION_WORDS):
        for value, phrases in table["heldout"].items():
            for phrase in phrases:
                assert _words([phrase]) - train - unseen, f"held-out phrase {phrase!r} for {value} is not new"
                assert not _words([phrase]) & unseen_only, f"held-out phrase {phrase!r} reuses an unseen word"
    templates = {t for p in ("train", "unseen") for ts in TEMPLATES[p].values() for t in ts}
    assert not templates & {t for ts in TEMPLATES["heldout"].values() for t in ts}
    assert not (_words(BACKGROUND_WORDS["heldout"].values()) & unseen_only)


@pytest.mark.parametrize("phrasing", ["train", "unseen", "heldout"])
def test_captions_name_the_colours_shapes_and_motion_they_describe(phrasing):
    rng = np.random.default_rng(0)
    for plan in plan_clips(replace(TINY, count=60)):
        attrs = plan.attrs()
        text = make_caption(attrs, phrasing, rng)
        for color, shape in zip(attrs["colors"], attrs["shapes"]):
            assert color in text
            assert any(word in text for word in SHAPE_WORDS[phrasing][shape]), text
        motion_stems = [p.split(" ", 1)[-1] if " " in p else p[:-1] for p in MOTION_WORDS[phrasing][attrs["motion"]]]
        assert any(stem in text for stem in motion_stems), text
        if len(attrs["shapes"]) == 1:
            assert not re.search(r"\b(two|pair)\b", text)


def test_captions_vary_their_phrasing():
    attrs = {"shapes": ["circle"], "colors": ["red"], "motion": "left", "background": "solid black"}
    rng = np.random.default_rng(0)
    assert len({make_caption(attrs, "train", rng) for _ in range(50)}) >= 8
    assert make_caption(attrs, "unseen", np.random.default_rng(3)) != make_caption(attrs, "train",
                                                                               np.random.default_rng(3))
    two = {"shapes": ["square", "star"], "colors": ["orange", "blue"], "motion": "up",
           "background": "stripes gray-navy"}
    texts = {make_caption(two, "train", rng) for _ in range(40)}
    assert any(t.startswith("two shapes") for t in texts)
    assert all("an orange square" in t or "the orange square" in t for t in texts)


def test_holdout_keeps_every_value_and_every_pair_in_training():
    held = holdout_combos(seed=0)
    everything = {(s, c, m) for s in SHAPES for c in COLORS for m in MOTIONS}
    train = everything - held
    assert len(held) == len(SHAPES) * len(MOTIONS) * 2
    for i, j in combinations(range(3), 2):
        assert {(t[i], t[j]) for t in train} == {(t[i], t[j]) for t in everything}
    assert holdout_combos(seed=0) == held and holdout_combos(seed=1) != held
    with pytest.raises(ValueError, match="per_cell"):
        holdout_combos(per_cell=5)


def test_generate_split_keeps_test_combos_out_of_training(tmp_path):
    paths = generate_split(tmp_path, train=60, test=24, seed=0, seconds=1.0, fps=4, size=64, workers=1)
    held = holdout_combos(seed=0)
    rows = {name: [json.loads(line) for line in paths[name].read_text().splitlines()]
            for name in ("train", "test", "test_unseen", "test_heldout")}

    def triples(row):
        return {(s, c, row["attrs"]["motion"]) for s, c in zip(row["attrs"]["shapes"], row["attrs"]["colors"])}

    assert len(rows["train"]) == 60 and len(rows["test"]) == 24
    assert all(not triples(r) & held for r in rows["train"])
    assert all(triples(r) <= held for r in rows["test"])
    train_values = [{v for r in rows["train"] for v in r["attrs"][k]} for k in ("shapes", "colors")]
    assert train_values == [set(SHAPES), set(COLORS)]
    assert {r["attrs"]["motion"] for r in rows["train"]} == set(MOTIONS)
    # Test clips differ in what a caption can say, so each caption has exactly one right answer.
    keys = Counter((r["attrs"]["motion"], tuple(sorted(zip(r["attrs"]["shapes"], r["attrs"]["colors"]))))
                   for r in rows["test"])
    assert max(keys.values()) == 1
    assert [r["video"] for r in rows["test"]] == [r["video"] for r in rows["test_unseen"]]
    assert sum(a["caption"] != b["caption"] for a, b in zip(rows["test"], rows["test_unseen"])) == 24
    assert [r["video"] for r in rows["test"]] == [r["video"] for r in rows["test_heldout"]]
    assert sum(a["caption"] != b["caption"] for a, b in zip(rows["test_unseen"], rows["test_heldout"])) == 24
    saved = json.loads(paths["holdout"].read_text())
    assert {tuple(c) for c in saved["combos"]} == held
    for name in ("train", "test", "test_unseen", "test_heldout"):
        assert all(c.video.startswith(str(tmp_path)) and (tmp_path / c.video).is_file()
                   for c in read_manifest(paths[name]))


def test_full_size_test_split_fits_the_held_out_combos():
    spec = SynthSpec(count=120, holdout=holdout_combos(0), split="test")
    plans = plan_clips(spec, "test")
    assert len(plans) == 120
    assert len({(p.motion, tuple(sorted((o.shape, o.color) for o in p.objects))) for p in plans}) == 120
    with pytest.raises(ValueError, match="SynthSpec.count=500"):
        plan_clips(replace(spec, count=500))


def test_synth_library_fixture_covers_shapes_colours_motions_and_codecs(synth_library):
    rows = synth_library.rows
    assert 8 <= len(rows) == len(synth_library.videos) <= 12
    assert all(p.is_file() for p in synth_library.videos)
    assert {r["attrs"]["motion"] for r in rows} == set(MOTIONS)
    assert {p.suffix for p in synth_library.videos} == {".mp4", ".webm"}
    assert any(len(r["attrs"]["shapes"]) == 2 for r in rows) and any(len(r["attrs"]["shapes"]) == 1 for r in rows)
    assert len({s for r in rows for s in r["attrs"]["shapes"]}) >= 5
    assert all(4.0 <= r["end"] <= 6.0 for r in rows)
    captions = read_manifest(synth_library.manifest)
    assert [c.video for c in captions] == [str(p) for p in synth_library.videos]
    assert synth_library.sidecar == synth_library.videos[0].with_suffix(".srt")


def test_generated_videos_open_in_decord(synth_library):
    import decord
    for row, path in zip(synth_library.rows[:4], synth_library.videos[:4]):
        reader = decord.VideoReader(str(path))
        assert len(reader) == round(row["end"] * 8)
        assert reader.get_batch([0, len(reader) - 1]).asnumpy().shape == (2, 96, 96, 3)
