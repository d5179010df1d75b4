"""Subtitle streams inside video files (mov_text in MP4; SubRip, ASS and WebVTT in MKV/WebM) become captions."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from indexer import Store, index_paths
from tests.fixtures.store import FakeModel, make_mp4

SRT = ("1\n00:00:00,500 --> 00:00:01,500\nthe <i>kettle</i> whistles\nloudly\n\n"
       "2\n00:00:02,000 --> 00:00:03,500\n{\\an8}a heron lands\n")
VTT = "WEBVTT\n\n00:00.500 --> 00:01.500\nthe kettle whistles loudly\n\n00:02.000 --> 00:03.500\na heron lands\n"


def _mux(video: Path, subtitles: Path, out: Path, codec: str, lang: str | None = None, video_codec="copy") -> Path:
    """`video` with `subtitles` muxed in as a `codec` stream (ffmpeg converts between subtitle formats)."""
    cmd = ["ffmpeg", "-loglevel", "error", "-y", "-i", str(video), "-i", str(subtitles), "-map", "0:v", "-map", "1",
           "-c:v", video_codec, "-c:s", codec]
    if lang:
        cmd += ["-metadata:s:s:0", f"language={lang}"]
    subprocess.run(cmd + [str(out)], check=True, capture_output=True, timeout=60)
    return out


@pytest.fixture(scope="module")
def subtitled(tmp_path_factory):
    """Videos carrying the same two cues as mov_text, SubRip, ASS and WebVTT streams, plus a broken one."""
    src = tmp_path_factory.mktemp("subsrc")
    lib = tmp_path_factory.mktemp("subtitled")
    video = make_mp4(src / "bars.mp4", seconds=4.0)
    (src / "cues.srt").write_text(SRT)
    (src / "cues.vtt").write_text(VTT)
    files = {
        "mov_text": _mux(video, src / "cues.srt", lib / "movtext.mp4", "mov_text", "fra"),
        "subrip": _mux(video, src / "cues.srt", lib / "subrip.mkv", "srt", "eng"),
        "ass": _mux(video, src / "cues.srt", lib / "ass.mkv", "ass"),
        "webvtt": _mux(video, src / "cues.vtt", lib / "webvtt.webm", "webvtt", video_codec="libvpx"),
    }
    # Invalid UTF-8 inside one SubRip cue: the subtitle decoder refuses the stream; the video is intact.
    data = files["subrip"].read_bytes()
    assert data.count(b"heron") == 1
    (lib / "broken.mkv").write_bytes(data.replace(b"heron", b"\xff\xfe\x00\xc3\x28"))
    return lib, files


@pytest.mark.parametrize("kind", ["mov_text", "subrip", "ass", "webvtt"])
def test_each_text_subtitle_format_is_read_with_times_text_and_language(subtitled, kind):
    from trainer.captions import read_embedded

    _, files = subtitled
    captions, warnings = read_embedded(files[kind])
    assert warnings == []
    assert [(c.start, c.end, c.text) for c in captions] == [
        (0.5, 1.5, "the kettle whistles loudly"), (2.0, 3.5, "a heron lands")]
    assert {c.lang for c in captions} == {{"mov_text": "fra", "subrip": "eng"}.get(kind)}


def test_a_malformed_stream_is_a_warning_naming_the_file(subtitled):
    from trainer.captions import read_embedded

    lib, _ = subtitled
    captions, warnings = read_embedded(lib / "broken.mkv")
    assert captions == []
    assert len(warnings) == 1 and "broken.mkv" in warnings[0] and "stream 1" in warnings[0]


def test_indexed_subtitles_are_found_by_keyword_and_listed_with_source_and_language(subtitled, tmp_path):
    lib, files = subtitled
    report = index_paths([lib], tmp_path / "store", FakeModel(), workers=1, timeout=60)
    assert report.failed == []
    assert len(report.indexed) == 5  # the broken stream fails only its captions
    assert [p for p, _ in report.warnings] == [str(lib / "broken.mkv")]
    with Store(tmp_path / "store") as store:
        video = store.video_by_path(files["mov_text"])
        listed = store.video_captions(video.id)
        assert [(c.text, c.source, c.lang) for c in listed] == [
            ("the kettle whistles loudly", "embedded", "fra"), ("a heron lands", "embedded", "fra")]
        hits = {store.clips([cid])[0].video_path for cid, _ in store.keyword("heron", 20)}
        assert hits == {str(p) for p in files.values()}
        broken = store.video_by_path(lib / "broken.mkv")
        assert broken.status == "indexed" and store.video_captions(broken.id) == []


def test_a_sidecar_wins_over_the_embedded_stream(subtitled, tmp_path):
    _, files = subtitled
    lib = tmp_path / "lib"
    lib.mkdir()
    video = lib / "movtext.mp4"
    video.write_bytes(files["mov_text"].read_bytes())
    (lib / "movtext.srt").write_text("1\n00:00:00,000 --> 00:00:02,000\nan otter swims\n")
    index_paths([lib], tmp_path / "store", FakeModel(), workers=1, timeout=60)
    with Store(tmp_path / "store") as store:
        listed = store.video_captions(store.video_by_path(video).id)
        assert [(c.text, c.source) for c in listed] == [("an otter swims", "sidecar")]
        assert store.keyword("heron", 5) == []


def test_watch_page_lists_the_videos_subtitles(subtitled, tmp_path):
    from search import Engine
    from webui import create_app

    _, files = subtitled
    index_paths([files["subrip"]], tmp_path / "store", FakeModel(), workers=1, timeout=60)
    engine = Engine(tmp_path / "store", model=FakeModel())
    client = create_app(tmp_path / "store", engine=engine, config={"UPLOAD_DIR": str(tmp_path / "up")}).test_client()
    clip_id = engine.video_clips(engine.videos()[0].id)[0]
    page = client.get(f"/watch/{clip_id}").get_data(as_text=True)
    assert "a heron lands" in page and "the kettle whistles loudly" in page
    assert "embedded · eng" in page


def test_the_decoder_counts_subtitle_streams_and_a_file_without_any_is_not_opened_again(subtitled, tmp_path,
                                                                                      monkeypatch):
    import trainer.media.workers
    from trainer.media import decode

    lib, files = subtitled
    plain = make_mp4(tmp_path / "plain.mp4", seconds=4.0)
    assert decode(files["subrip"]).info.subtitle_streams == 1 and decode(plain).info.subtitle_streams == 0
    opened = []
    real = trainer.media.workers.run_in_worker
    monkeypatch.setattr(trainer.media.workers, "run_in_worker", lambda func, path, **kw: (
        opened.append(str(path)), real(func, path, **kw))[1])
    index_paths([plain, files["subrip"]], tmp_path / "store", FakeModel(), workers=1, timeout=60)
    assert opened == [str(files["subrip"])]  # only the file whose decoder saw a subtitle stream
    with Store(tmp_path / "store") as store:
        assert [c.text for c in store.video_captions(store.video_by_path(files["subrip"]).id)] == [
            "the kettle whistles loudly", "a heron lands"]
