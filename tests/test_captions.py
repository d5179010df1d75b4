"""Tests for caption sources: JSONL manifests, SRT and WebVTT parsing, sidecar lookup."""
from __future__ import annotations

import json

import pytest

from trainer.captions import (Caption, CaptionError, Cue, parse_srt, parse_timestamp, parse_vtt, read_manifest,
                              read_sidecar)


def write(path, text: str, encoding: str = "utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


# ---------------------------------------------------------------- manifests

def test_manifest_paths_resolve_against_the_manifest_directory(tmp_path):
    absolute = tmp_path / "elsewhere" / "b.webm"
    manifest = write(tmp_path / "sets" / "m.jsonl", "\n".join([
        json.dumps({"video": "videos/a.mp4", "caption": " a red circle moves left ", "start": 0, "end": 4.0,
                    "attrs": {"motion": "left"}, "anything": [1, 2]}),
        "",
        json.dumps({"video": str(absolute), "caption": "a blue star grows"}),
        json.dumps({"video": "../up/c.mkv", "caption": "two shapes", "start": 1.5, "end": None}),
    ]) + "\n")
    assert read_manifest(manifest) == [
        Caption(video=str(tmp_path / "sets" / "videos" / "a.mp4"), text="a red circle moves left", start=0.0, end=4.0),
        Caption(video=str(absolute), text="a blue star grows"),
        Caption(video=str(tmp_path / "up" / "c.mkv"), text="two shapes", start=1.5, end=None),
    ]


def test_manifest_given_as_a_relative_path_still_yields_absolute_videos(tmp_path, monkeypatch):
    write(tmp_path / "m.jsonl", json.dumps({"video": "v.mp4", "caption": "x"}))
    monkeypatch.chdir(tmp_path)
    assert read_manifest("m.jsonl")[0].video == str(tmp_path / "v.mp4")


def test_manifest_with_bom_and_crlf_lines(tmp_path):
    manifest = write(tmp_path / "m.jsonl", json.dumps({"video": "v.mp4", "caption": "café"}) + "\r\n", "utf-8-sig")
    assert read_manifest(manifest) == [Caption(video=str(tmp_path / "v.mp4"), text="café")]


@pytest.mark.parametrize("line, reason", [
    ('{"video": "a.mp4", "caption": "x"', "invalid JSON"),
    ('{"caption": "x"}', 'missing "video" key'),
    ('{"video": "a.mp4"}', 'missing "caption" key'),
    ('{"video": "a.mp4", "caption": ""}', '"caption" must be a non-empty string'),
    ('{"video": 3, "caption": "x"}', '"video" must be a non-empty string'),
    ('["a.mp4", "x"]', "expected a JSON object"),
    ('{"video": "a.mp4", "caption": "x", "start": -1}', '"start" must be a non-negative number'),
    ('{"video": "a.mp4", "caption": "x", "end": "4"}', '"end" must be a non-negative number'),
    ('{"video": "a.mp4", "caption": "x", "start": 3, "end": 2}', '"end" \\(2.0\\) must be after "start"'),
])
def test_bad_manifest_lines_name_the_file_and_line(tmp_path, line, reason):
    good = json.dumps({"video": "ok.mp4", "caption": "fine"})
    manifest = write(tmp_path / "bad.jsonl", f"{good}\n\n{line}\n{good}\n")
    with pytest.raises(CaptionError, match=rf"bad\.jsonl:3: {reason}") as info:
        read_manifest(manifest)
    assert info.value.line == 3 and info.value.path == str(manifest)


def test_missing_manifest_names_the_file(tmp_path):
    with pytest.raises(CaptionError, match="nope.jsonl: cannot read manifest"):
        read_manifest(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------- timestamps

@pytest.mark.parametrize("stamp, seconds", [
    ("00:00:01,500", 1.5), ("00:00:01.500", 1.5), ("01:02:03,004", 3723.004), ("02:03.250", 123.25),
    ("00:00:07", 7.0), ("0:00:01,5", 1.5), ("100:00:00.000", 360000.0),
])
def test_timestamps(stamp, seconds):
    assert parse_timestamp(stamp) == pytest.approx(seconds)


@pytest.mark.parametrize("stamp", ["00:61:00,000", "00:00:75,000", "12", "1:2:3:4"])
def test_bad_timestamps(stamp):
    with pytest.raises(ValueError, match="timestamp"):
        parse_timestamp(stamp)


# ---------------------------------------------------------------- SRT

SRT = """\ufeff1
00:00:00,000 --> 00:00:02,500
a red circle
moves to the left

2
00:00:02,500 --> 00:00:05,000
<i>the green square</i> grows &amp; glows


3
00:01:05.250 --> 00:01:07.000
{\\an8}dots in timestamps too
"""


def test_srt_cues_with_multi_line_text_markup_bom_and_extra_blank_lines():
    assert parse_srt(SRT) == [
        Cue(0.0, 2.5, "a red circle moves to the left"),
        Cue(2.5, 5.0, "the green square grows & glows"),
        Cue(65.25, 67.0, "dots in timestamps too"),
    ]


def test_srt_with_crlf_and_without_cue_numbers():
    text = "00:00:01,000 --> 00:00:02,000\r\nfirst\r\n\r\n00:00:02,000 --> 00:00:03,000\r\nsecond\r\n"
    assert parse_srt(text) == [Cue(1.0, 2.0, "first"), Cue(2.0, 3.0, "second")]


def test_srt_blank_line_inside_a_cue_continues_it_and_empty_cues_are_dropped():
    text = "1\n00:00:01,000 --> 00:00:02,000\nfirst part\n\nsecond part\n\n2\n00:00:03,000 --> 00:00:04,000\n<b></b>\n"
    assert parse_srt(text) == [Cue(1.0, 2.0, "first part second part")]


@pytest.mark.parametrize("text, line, reason", [
    ("1\n00:00:01,000 -> 00:00:02,000\nx\n", 1, "expected a cue timing line"),
    ("1\n00:00:01,000 --> 00:00:02\n\n2\n00:00:0x,000 --> 00:00:03,000\ny\n", 5, "malformed cue timing"),
    ("\n\n1\n00:00:05,000 --> 00:00:02,000\nx\n", 4, "ends .* before it starts"),
    ("1\n00:00:01,000 --> 00:00:99,000\nx\n", 2, "minutes and seconds must be below 60"),
])
def test_bad_srt_names_the_source_and_line(text, line, reason):
    with pytest.raises(CaptionError, match=rf"clip\.srt:{line}: .*{reason}"):
        parse_srt(text, "clip.srt")


# ---------------------------------------------------------------- WebVTT

VTT = """WEBVTT - made for tests
Kind: captions
Language: en

NOTE this block is a comment
that spans two lines

STYLE
::cue { color: yellow }

intro
00:01.000 --> 00:03.500 align:start position:10% line:0
<v Narrator>a blue star</v>
<c.loud>rises</c>

00:00:03.500 --> 00:00:05.000
it <00:00:04.000>keeps rising &lt;fast&gt;
"""


def test_vtt_skips_header_notes_styles_and_cue_settings():
    assert parse_vtt(VTT) == [Cue(1.0, 3.5, "a blue star rises"), Cue(3.5, 5.0, "it keeps rising <fast>")]


def test_vtt_with_bom_and_bare_header():
    assert parse_vtt("\ufeffWEBVTT\n\n00:00.000 --> 00:01.000\nhi\n") == [Cue(0.0, 1.0, "hi")]


def test_vtt_without_header_is_rejected():
    with pytest.raises(CaptionError, match=r"x\.vtt:1: missing the WEBVTT header"):
        parse_vtt("00:00.000 --> 00:01.000\nhi\n", "x.vtt")
    with pytest.raises(CaptionError, match="WEBVTT header"):
        parse_vtt("WEBVTTX\n\n00:00.000 --> 00:01.000\nhi\n")


# ---------------------------------------------------------------- sidecars

def test_sidecar_srt_vtt_and_txt_beside_the_video(tmp_path):
    srt_video, vtt_video, txt_video = tmp_path / "a.mp4", tmp_path / "b.webm", tmp_path / "c.mkv"
    write(tmp_path / "a.srt", "1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    write(tmp_path / "b.vtt", "WEBVTT\n\n00:02.000 --> 00:04.000\nworld\n")
    write(tmp_path / "c.txt", "a whole-video\ncaption\n")
    assert read_sidecar(srt_video) == [Caption(str(srt_video), "hello", 0.0, 1.0)]
    assert read_sidecar(vtt_video) == [Caption(str(vtt_video), "world", 2.0, 4.0)]
    assert read_sidecar(txt_video) == [Caption(str(txt_video), "a whole-video caption")]
    assert read_sidecar(tmp_path / "d.mp4") == []


def test_sidecar_prefers_timed_cues_over_text_and_ignores_empty_text(tmp_path):
    write(tmp_path / "a.txt", "plain")
    write(tmp_path / "a.srt", "1\n00:00:00,000 --> 00:00:01,000\ntimed\n")
    assert [c.text for c in read_sidecar(tmp_path / "a.mp4")] == ["timed"]
    write(tmp_path / "e.txt", "  \n")
    assert read_sidecar(tmp_path / "e.mp4") == []


def test_bad_sidecar_names_its_file(tmp_path):
    sidecar = write(tmp_path / "a.srt", "1\n00:00:03,000 --> 00:00:01,000\nbackwards\n")
    with pytest.raises(CaptionError, match=rf"{sidecar}:2: cue ends"):
        read_sidecar(tmp_path / "a.mp4")
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe\xfa not utf-8")
    with pytest.raises(CaptionError, match="b.txt: cannot read captions"):
        read_sidecar(tmp_path / "b.mp4")


def test_synth_library_sidecar_is_read_with_two_timed_cues(synth_library):
    video = synth_library.videos[0]
    captions = read_sidecar(video)
    assert [c.video for c in captions] == [str(video)] * 2
    assert captions[0].text == synth_library.rows[0]["caption"]
    assert captions[0].start == 0.0 and captions[-1].end == pytest.approx(synth_library.rows[0]["end"])
    assert captions[0].end == captions[1].start
    assert all(read_sidecar(v) == [] for v in synth_library.videos[1:])


@pytest.mark.parametrize("seconds", [0.0, 0.5, 59.999, 3723.25])
def test_formatted_timestamps_read_back(seconds):
    from trainer.captions import format_timestamp, parse_timestamp

    assert parse_timestamp(format_timestamp(seconds)) == pytest.approx(seconds)
