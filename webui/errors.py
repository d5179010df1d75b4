"""Error pages: JSON `{"error": ...}` under /api, /media and /thumbs, HTML elsewhere, and never a bare 500."""
from __future__ import annotations

import logging

from flask import Flask, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, NotFound, RequestEntityTooLarge

log = logging.getLogger(__name__)

JSON_PREFIXES = ("/api/", "/media/", "/thumbs/")


def wants_json() -> bool:
    """Machine endpoints answer errors as JSON; the HTML pages answer with an error page."""
    return request.path.startswith(JSON_PREFIXES) or request.path == "/api"


def error_response(status: int, message: str, headers: dict | None = None):
    """An error answer in the form the requested endpoint speaks."""
    if wants_json():
        response = jsonify(error=message)
    else:
        response = render_template("error.html", status=status, message=message)
    return response, status, headers or {}


def register_error_handlers(app: Flask) -> None:
    """Map HTTP errors, query errors and unknown ids to 4xx answers, anything unexpected to a logged 500."""
    from search import QueryError, UnknownId

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        headers = {k: v for k, v in e.get_headers() if k.lower() not in ("content-type", "content-length")}
        return error_response(e.code or 500, _describe(e), headers)

    @app.errorhandler(QueryError)
    def query_error(e: QueryError):
        return error_response(400, str(e))

    @app.errorhandler(UnknownId)
    def unknown_id(e: UnknownId):
        return error_response(404, str(e))

    @app.errorhandler(Exception)
    def unexpected(e: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal server error")


def _describe(e: HTTPException) -> str:
    if e.code == 404 and e.description == NotFound.description:
        return f"no such resource: {request.path}"
    if e.code == 405:
        return f"method {request.method} is not allowed on {request.path}"
    if e.code == 413 and e.description == RequestEntityTooLarge.description:
        return f"upload too large (limit {current_app.config['MAX_UPLOAD_BYTES']} bytes)"
    return e.description or e.name
