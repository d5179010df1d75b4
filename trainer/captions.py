"""Caption sources: JSONL manifests, sidecar subtitle files (SRT, WebVTT, plain text) beside videos, and text
subtitle streams inside video files (mov_text, SubRip, ASS, WebVTT), read through PyAV."""
from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

SIDECAR_EXTENSIONS = (".srt", ".vtt", ".txt")  # looked up in this order; the first one found wins


class CaptionError(ValueError):
    """A manifest or subtitle file that cannot be read; the message names the file and line."""

    def __init__(self, path, line: int | None, reason: str):
        self.path, self.line, self.reason = str(path), line, reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


@dataclass
class Caption:
    """A caption of a whole video (start and end None) or of the span [start, end) in seconds."""

    video: str
    text: str
    start: float | None = None
    end: float | None = None
    lang: str | None = None  # a subtitle stream's language tag (ISO 639), when the file says


class Cue(NamedTuple):
    """One timed subtitle: seconds and the cue's text on one line without markup."""

    start: float
    end: float
    text: str


# ---------------------------------------------------------------- manifests

def _seconds_field(row: dict, key: str, path, line: int) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise CaptionError(path, line, f'"{key}" must be a non-negative number of seconds, got {value!r}')
    return float(value)


def _manifest_row(row, base: Path, path, line: int) -> Caption:
    if not isinstance(row, dict):
        raise CaptionError(path, line, f"expected a JSON object, got {type(row).__name__}")
    for key in ("video", "caption"):
        if key not in row:
            raise CaptionError(path, line, f'missing "{key}" key')
        if not isinstance(row[key], str) or not row[key].strip():
            raise CaptionError(path, line, f'"{key}" must be a non-empty string')
    start, end = _seconds_field(row, "start", path, line), _seconds_field(row, "end", path, line)
    if start is not None and end is not None and end <= start:
        raise CaptionError(path, line, f'"end" ({end}) must be after "start" ({start})')
    video = Path(os.path.expanduser(row["video"]))
    video = Path(os.path.normpath(video if video.is_absolute() else base / video))
    return Caption(video=str(video), text=row["caption"].strip(), start=start, end=end)


def read_manifest(path) -> list[Caption]:
    """Captions from a JSONL manifest; relative video paths are resolved against the manifest's directory.

    Each non-blank line is ``{"video": path, "caption": text, "start": seconds?, "end": seconds?, ...}``;
    other keys are ignored. Raises ``CaptionError`` naming the file and line of the first bad line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise CaptionError(path, None, f"cannot read manifest: {e}") from e
    base = path.absolute().parent
    captions = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CaptionError(path, number, f"invalid JSON: {e.msg} (column {e.colno})") from e
        captions.append(_manifest_row(row, base, path, number))
    return captions


# ---------------------------------------------------------------- subtitles

_TIME = r"(?:\d+:)?\d{1,2}:\d{1,2}(?:[.,]\d{1,3})?"
_TIMING = re.compile(rf"^\s*({_TIME})\s*-->\s*({_TIME})(?:\s+.*)?$")  # anything after the end time: VTT cue settings
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")  # <i>, <v Name>, <00:01.000>, {\an8}


def parse_timestamp(stamp: str) -> float:
    """``01:02:03,500``, ``01:02:03.5`` or ``02:03.500`` -> seconds."""
    *hm, sec = stamp.strip().replace(",", ".").split(":")
    if not hm or len(hm) > 2:
        raise ValueError(f"timestamp {stamp!r}: expected [hh:]mm:ss[.mmm]")
    hours, minutes = (int(hm[0]), int(hm[1])) if len(hm) == 2 else (0, int(hm[0]))
    seconds = float(sec)
    if minutes >= 60 or seconds >= 60:
        raise ValueError(f"timestamp {stamp!r}: minutes and seconds must be below 60")
    return hours * 3600 + minutes * 60 + seconds


def format_timestamp(seconds: float) -> str:
    """Seconds -> an SRT timestamp ``01:02:03,500`` (what `parse_timestamp` reads back)."""
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _clean(lines: list[str]) -> str:
    """Join a cue's lines into one sentence without markup."""
    text = " ".join(_TAG.sub("", line).strip() for line in lines)
    return " ".join(html.unescape(text).split())


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    """Groups of consecutive non-blank lines, each with the 1-based line number of its first line."""
    blocks, current, first = [], [], 0
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for number, line in enumerate(lines, start=1):
        if line.strip():
            if not current:
                first = number
            current.append(line)
        elif current:
            blocks.append((first, current))
            current = []
    if current:
        blocks.append((first, current))
    return blocks


def _parse_cues(blocks, source) -> list[Cue]:
    """Cues from blocks of ``[id]`` + timing line + text lines; a block with no timing continues the last cue."""
    cues: list[tuple[float, float, list[str]]] = []
    for first, lines in blocks:
        at = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if at is None:
            if not cues:
                raise CaptionError(source, first, "expected a cue timing line like '00:00:01,000 --> 00:00:02,000'")
            cues[-1][2].extend(lines)  # a blank line inside a cue's text
            continue
        match = _TIMING.match(lines[at])
        if match is None:
            raise CaptionError(source, first + at, f"malformed cue timing {lines[at].strip()!r}")
        try:
            start, end = parse_timestamp(match.group(1)), parse_timestamp(match.group(2))
        except ValueError as e:
            raise CaptionError(source, first + at, str(e)) from e
        if end < start:
            raise CaptionError(source, first + at, f"cue ends ({end}s) before it starts ({start}s)")
        cues.append((start, end, lines[at + 1:]))
    return [Cue(start, end, text) for start, end, lines in cues if (text := _clean(lines))]


def parse_srt(text: str, source="<srt>") -> list[Cue]:
    """Cues of a SubRip file: numbered blocks of a timing line and one or more text lines."""
    return _parse_cues(_blocks(text), source)


def parse_vtt(text: str, source="<vtt>") -> list[Cue]:
    """Cues of a WebVTT file; the header, NOTE, STYLE and REGION blocks and cue settings are skipped."""
    blocks = _blocks(text)
    if not blocks or not re.match(r"WEBVTT(\s|$)", blocks[0][1][0]):
        raise CaptionError(source, 1, "missing the WEBVTT header")
    blocks = blocks[1:]  # the header block may carry metadata lines; none of it is a cue
    keep = [(first, lines) for first, lines in blocks
            if not (re.match(r"(NOTE|STYLE|REGION)(\s|$)", lines[0]) and "-->" not in lines[0])]
    return _parse_cues(keep, source)


def read_sidecar(video_path) -> list[Caption]:
    """Captions stored beside a video: ``clip.srt`` or ``clip.vtt`` (timed cues) or ``clip.txt`` (whole video).

    Returns an empty list when there is no sidecar. The first of .srt, .vtt, .txt that exists is used.
    """
    video = Path(video_path)
    for ext in SIDECAR_EXTENSIONS:
        sidecar = video.with_suffix(ext)
        if not sidecar.is_file():
            continue
        try:
            text = sidecar.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise CaptionError(sidecar, None, f"cannot read captions: {e}") from e
        if ext == ".txt":
            caption = " ".join(text.split())
            return [Caption(video=str(video), text=caption)] if caption else []
        cues = parse_srt(text, sidecar) if ext == ".srt" else parse_vtt(text, sidecar)
        return [Caption(video=str(video), text=c.text, start=c.start, end=c.end) for c in cues]
    return []


# ---------------------------------------------------------------- subtitles inside the file

# Decoders of text subtitles; their cues come out of PyAV as ASS dialogue. Bitmap subtitles (DVD, PGS)
# carry pictures of text, which would need OCR, so their streams are left alone.
TEXT_SUBTITLE_CODECS = frozenset({"mov_text", "subrip", "srt", "ass", "ssa", "webvtt", "text", "microdvd",
                                  "subviewer", "subviewer1", "sami", "realtext", "mpl2", "vplayer", "pjs",
                                  "stl", "jacosub"})


class SubtitleStream(NamedTuple):
    """One text subtitle stream of a video file: its cues, or why they could not be read."""

    index: int
    codec: str
    lang: str | None
    cues: list[Cue]
    error: str | None = None


def _stream_cues(container, stream) -> list[Cue]:
    """Cues of one subtitle stream, timed by their packets; a cue without a duration lasts until the next."""
    base = stream.time_base
    timed: list[tuple[float, float | None, str]] = []
    for packet in container.demux(stream):
        if packet.pts is None:
            continue  # the flush packet at the end of the stream
        start = float(packet.pts * base)
        length = float(packet.duration * base) if packet.duration else None
        for sub in packet.decode():
            text = getattr(sub, "dialogue", None) or getattr(sub, "text", None) or b""
            text = _clean(bytes(text).decode("utf-8", "replace").replace("\\N", "\n").split("\n"))
            if text:
                timed.append((start, length, text))
    timed.sort(key=lambda t: t[0])
    cues = []
    for i, (start, length, text) in enumerate(timed):
        if start < 0 or (length is not None and length < 0):
            raise ValueError(f"cue {text!r} has a negative time ({start}s, lasting {length}s)")
        end = start + length if length else (timed[i + 1][0] if i + 1 < len(timed) else start)
        cues.append(Cue(start, max(end, start), text))
    return cues


def read_subtitle_streams(path) -> list[SubtitleStream]:
    """Every text subtitle stream of a video file with its cues. A stream that cannot be demuxed or decoded
    comes back with `error` set and no cues, so one bad stream never hides the others. Raises CaptionError
    only when the file cannot be opened at all."""
    import av

    try:
        container = av.open(str(path))
    except Exception as e:  # a file PyAV cannot open has no streams to read (the video decoder says why)
        raise CaptionError(path, None, f"cannot open for subtitles: {e}") from e
    out = []
    with container:
        for stream in container.streams.subtitles:
            codec = stream.codec_context.name if stream.codec_context is not None else "unknown"
            if codec not in TEXT_SUBTITLE_CODECS:
                continue
            lang = (stream.metadata or {}).get("language")
            lang = None if lang in (None, "", "und") else lang
            try:
                out.append(SubtitleStream(stream.index, codec, lang, _stream_cues(container, stream)))
            except Exception as e:
                out.append(SubtitleStream(stream.index, codec, lang, [], f"{type(e).__name__}: {e}"))
            container.seek(0)  # demuxing read to the end; the next stream starts over
    return out


def read_embedded(video_path, timeout: float = 60.0) -> tuple[list[Caption], list[str]]:
    """Captions from the text subtitle streams inside a video file, and a warning per stream that could not
    be read (naming the file and stream). The streams are read in a worker process with a time limit, so a
    malformed stream that crashes or hangs the demuxer costs only its captions."""
    from .media import MediaError
    from .media.workers import run_in_worker

    try:
        streams = run_in_worker(read_subtitle_streams, video_path, timeout=timeout)
    except (MediaError, CaptionError) as e:
        return [], [f"embedded subtitles skipped ({e})"]
    captions, warnings = [], []
    for s in streams:
        if s.error is not None:
            warnings.append(f"embedded subtitles skipped ({video_path}: stream {s.index} ({s.codec}): {s.error})")
            continue
        captions += [Caption(str(video_path), c.text, c.start, c.end, s.lang) for c in s.cues]
    return captions, warnings


def read_timed_text(video_path, subtitle_streams: int | None = None) -> tuple[list[tuple[Caption, str]], list[str]]:
    """A video's own captions with their source ("sidecar" or "embedded"), and warnings for what was skipped.

    A readable sidecar file wins over subtitle streams inside the video; a sidecar that cannot be read is
    skipped with a warning naming it, and the embedded streams are used instead. `subtitle_streams` is how
    many the container holds, where its decoder already counted them: with none, the file is not opened again.
    """
    warnings = []
    try:
        sidecar = read_sidecar(video_path)
        if sidecar or any(Path(video_path).with_suffix(ext).is_file() for ext in SIDECAR_EXTENSIONS):
            return [(c, "sidecar") for c in sidecar], warnings
    except CaptionError as err:
        warnings.append(f"sidecar captions skipped ({err})")
    if subtitle_streams == 0:
        return [], warnings
    embedded, more = read_embedded(video_path)
    return [(c, "embedded") for c in embedded], warnings + more
