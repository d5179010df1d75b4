"""Media endpoints: indexed video files streamed by id with HTTP Range support, and clip thumbnails."""
from __future__ import annotations

import mimetypes
import os
from pathlib import Path

from flask import Blueprint, Response, current_app, send_file
from flask import request

from .errors import error_response

media = Blueprint("media", __name__)

CHUNK = 256 * 1024
VIDEO_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
               ".webm": "video/webm", ".avi": "video/x-msvideo"}


class RangeNotSatisfiable(Exception):
    """The Range header asks only for bytes past the end of the file."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte positions of a single `bytes=` range, or None to send the whole file.

    Headers that are malformed, use another unit or ask for several ranges are ignored, as RFC 9110 allows;
    a well-formed range that starts past the end raises `RangeNotSatisfiable`.
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    first_s, last_s = first_s.strip(), last_s.strip()
    if not dash or not (first_s or last_s) or not all(_digits(s) for s in (first_s, last_s) if s):
        return None
    if not first_s:                                  # suffix range: the last N bytes
        length = int(last_s)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - length), size - 1
    first = int(first_s)
    if last_s and int(last_s) < first:               # invalid: ignored, the whole file is sent
        return None
    if first >= size:
        raise RangeNotSatisfiable
    last = int(last_s) if last_s else size - 1
    return first, min(last, size - 1)


def _digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def _read(path: str, first: int, length: int):
    """Yield `length` bytes of the file from `first`, in chunks, closing the file however the stream ends."""
    with open(path, "rb") as f:
        f.seek(first)
        remaining = length
        while remaining > 0:
            chunk = f.read(min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk


def stream_file(path: str, mimetype: str) -> Response:
    """A 200 or 206 response for `path` honouring the request's Range header; 416 when it cannot be met."""
    size = os.path.getsize(path)
    try:
        wanted = parse_range(request.headers.get("Range"), size)
    except RangeNotSatisfiable:
        return error_response(416, f"requested range not satisfiable (file is {size} bytes)",
                              {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
    first, last = wanted if wanted else (0, size - 1)
    length = max(0, last - first + 1)
    response = Response(_read(path, first, length), status=206 if wanted else 200, mimetype=mimetype,
                        direct_passthrough=True)
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["Content-Length"] = str(length)
    response.headers["Cache-Control"] = "no-cache"
    response.last_modified = os.path.getmtime(path)
    if wanted:
        response.headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return response


@media.get("/media/<int:video_id>")
def video_file(video_id: int):
    """Stream an indexed video file, chosen by its id only (never by a path from the request)."""
    record = current_app.extensions["vidsearch_engine"].video_record(video_id)
    path = str(record.path)
    if not os.path.isfile(path):
        return error_response(404, f"the file of video {video_id} is no longer on disk")
    suffix = Path(path).suffix.lower()
    mimetype = VIDEO_TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"
    return stream_file(path, mimetype)


@media.get("/thumbs/<int:clip_id>.jpg")
def thumbnail(clip_id: int):
    """The JPEG thumbnail the indexer wrote for a clip."""
    engine = current_app.extensions["vidsearch_engine"]
    record = engine.clip(clip_id)
    path = thumbnail_path(record, current_app.config["STORE_DIR"])
    if path is None:
        return error_response(404, f"clip {clip_id} has no thumbnail")
    return send_file(path, mimetype="image/jpeg", max_age=3600)


def thumbnail_path(record, store_dir: str) -> str | None:
    """Where a clip's thumbnail lies: the path its record gives, else `thumbs/<clip_id>.jpg` in the store."""
    for name in ("thumbnail", "thumbnail_path", "thumb"):
        value = getattr(record, name, None)
        if value:
            path = Path(value)
            path = path if path.is_absolute() else Path(store_dir) / path
            if path.is_file():
                return str(path)
    fallback = Path(store_dir) / "thumbs" / f"{record.id}.jpg"
    return str(fallback) if fallback.is_file() else None
