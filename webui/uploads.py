"""Query-video uploads: spool the multipart file to a temporary file that is always deleted afterwards."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from flask import current_app
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

CHUNK = 1 << 20


@contextmanager
def spooled(upload: FileStorage | None):
    """Yield the path of a temporary copy of `upload`; the copy is removed on exit, whatever happened.

    Raises 400 when no file was sent and 413 when it is larger than the app's `MAX_UPLOAD_BYTES`.
    """
    if upload is None or not upload.filename:
        raise BadRequest("multipart field 'file' with a video is required")
    limit = int(current_app.config["MAX_UPLOAD_BYTES"])
    suffix = Path(upload.filename).suffix.lower()
    suffix = suffix if suffix.isascii() and 1 < len(suffix) <= 8 and suffix[1:].isalnum() else ".bin"
    fd, path = tempfile.mkstemp(prefix="vidsearch-query-", suffix=suffix, dir=current_app.config["UPLOAD_DIR"])
    try:
        with os.fdopen(fd, "wb") as out:
            _copy_limited(upload.stream, out, limit)
        yield path
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _copy_limited(src, dst, limit: int) -> None:
    written = 0
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            break
        written += len(chunk)
        if written > limit:
            raise RequestEntityTooLarge(f"upload too large (limit {limit} bytes)")
        dst.write(chunk)
    if written == 0:
        raise BadRequest("the uploaded file is empty")
