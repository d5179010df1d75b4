"""Media endpoints: indexed video files streamed by id with HTTP Range support, and clip thumbnails."""
from __future__ import annotations

import hashlib
import io
import os
import stat
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


def _read(f, first: int, length: int):
    """Yield `length` bytes of the open file `f` from `first`, in chunks, closing it however the stream ends."""
    with f:
        f.seek(first)
        remaining = length
        while remaining > 0:
            chunk = f.read(min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk


def stream_file(f, mimetype: str) -> Response:
    """A 200 or 206 response for the open file `f` honouring the request's Range header; 416 when it cannot be met."""
    st = os.fstat(f.fileno())
    size = st.st_size
    try:
        wanted = parse_range(request.headers.get("Range"), size)
    except RangeNotSatisfiable:
        f.close()
        return error_response(416, f"requested range not satisfiable (file is {size} bytes)",
                              {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
    first, last = wanted if wanted else (0, size - 1)
    length = max(0, last - first + 1)
    response = Response(_read(f, first, length), status=206 if wanted else 200, mimetype=mimetype,
                        direct_passthrough=True)
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["Content-Length"] = str(length)
    response.headers["Cache-Control"] = "no-cache"
    response.last_modified = st.st_mtime
    if wanted:
        response.headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return response


class Refused(Exception):
    """The file at an indexed video's path is not the file that was indexed there; the message says how."""


def open_indexed(record):
    """The indexed video file of `record`, opened for reading; raises FileNotFoundError or `Refused`.

    Only a file that is still the one indexed is served: a regular file with a video extension and the size and
    modification time recorded when it was indexed. A symlink swapped in, a link pointed elsewhere or a file
    replaced since changes them. The checks run on the opened file, so the file cannot change between check and read.
    """
    from trainer.media import VIDEO_EXTENSIONS
    path = str(record.path)
    if record.status != "indexed":
        raise FileNotFoundError(f"video {record.id} is not indexed ({record.status})")
    if Path(path).suffix.lower() not in VIDEO_EXTENSIONS:
        raise Refused(f"video {record.id} does not name a video file")
    f = open(path, "rb")            # FileNotFoundError when it is gone
    st = os.fstat(f.fileno())
    same = (stat.S_ISREG(st.st_mode) and record.size is not None and st.st_size == record.size
            and record.mtime is not None and abs(st.st_mtime - float(record.mtime)) < 1e-3)
    if not same:
        f.close()
        raise Refused(f"the file of video {record.id} changed since it was indexed; index it again to serve it")
    return f


@media.get("/media/<int:video_id>")
def video_file(video_id: int):
    """Stream an indexed video file, chosen by its id only (never by a path from the request)."""
    record = current_app.extensions["vidsearch_engine"].video_record(video_id)
    try:
        f = open_indexed(record)
    except Refused as e:
        return error_response(403, str(e))
    except OSError:
        return error_response(404, f"the file of video {video_id} is no longer on disk")
    suffix = Path(str(record.path)).suffix.lower()
    return stream_file(f, VIDEO_TYPES.get(suffix) or "application/octet-stream")


@media.get("/thumbs/<int:clip_id>.jpg")
def thumbnail(clip_id: int):
    """The JPEG thumbnail the indexer made for a clip."""
    jpeg = current_app.extensions["vidsearch_engine"].thumbnail(clip_id)
    if jpeg is None:
        return error_response(404, f"clip {clip_id} has no thumbnail")
    # Revalidated by content: a store rebuilt with --reindex gives its new clips the old ids again.
    return send_file(io.BytesIO(jpeg), mimetype="image/jpeg", max_age=3600,
                     etag=hashlib.sha1(jpeg).hexdigest(), conditional=True)
