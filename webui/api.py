"""The JSON API: text, video and similar-clip search, the video library, health and the OpenAPI document."""
from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path

from flask import Blueprint, current_app, jsonify, request, url_for
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

api = Blueprint("api", __name__, url_prefix="/api")

MAX_LIST = 500
MAX_LIST_OFFSET = 10 ** 9     # far past any library, well inside SQLite's 64-bit integers


def engine():
    """The app's search engine, loaded once by `create_app`."""
    return current_app.extensions["vidsearch_engine"]


# ---- parameters ------------------------------------------------------------------------------------------------
def int_param(source, name: str, default: int, low: int, high: int | None = None) -> int:
    """An integer query/form parameter within [low, high]; 400 naming the parameter otherwise."""
    raw = source.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadRequest(f"{name} must be {bounds}, got {value}")
    return value


def choice_param(source, name: str, choices, default: str) -> str:
    """A parameter restricted to a few words; 400 listing them otherwise."""
    value = source.get(name, default)
    if value not in choices:
        raise BadRequest(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def flag_param(source, name: str, default: bool = False) -> bool:
    """A 0/1 switch (also accepts true/false); `default` when the request leaves it out."""
    if source.get(name) is None:
        return default
    raw = source.get(name).lower()
    if raw not in ("0", "1", "true", "false"):
        raise BadRequest(f"{name} must be 0 or 1, got {raw!r}")
    return raw in ("1", "true")


def paging(source) -> dict:
    """k, offset and group, checked, for the search endpoints."""
    from search import GROUPS, MAX_K, MAX_OFFSET
    return {"k": int_param(source, "k", 10, 1, MAX_K), "offset": int_param(source, "offset", 0, 0, MAX_OFFSET),
            "group": choice_param(source, "group", GROUPS, "clip")}


# ---- answers ---------------------------------------------------------------------------------------------------
def hit_json(hit) -> dict:
    """One result as the API documents it, with the URLs of its thumbnail and of its video at the clip's time."""
    out = hit.to_dict()
    out["thumbnail_url"] = url_for("media.thumbnail", clip_id=hit.clip_id)
    out["video_url"] = url_for("media.video_file", video_id=hit.video_id) + f"#t={hit.start:g},{hit.end:g}"
    return out


def answer(query: str, hits, started: float, **extra):
    """The common search answer: {"query", "took_ms", "results"} and any `extra` fields."""
    took = (time.perf_counter() - started) * 1000.0
    return jsonify(query=query, took_ms=round(took, 3), results=[hit_json(h) for h in hits], **extra)


def record_json(record) -> dict:
    """A store record (dataclass or plain object) as JSON-safe dict."""
    if dataclasses.is_dataclass(record):
        raw = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    else:
        raw = {k: v for k, v in vars(record).items() if not k.startswith("_")}
    return {k: _plain(v) for k, v in raw.items()}


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):      # numpy scalars
        return value.item()
    return value


# ---- endpoints -------------------------------------------------------------------------------------------------
@api.get("/search")
def search_text():
    """Text to video: dense, keyword, concept or hybrid search, optionally re-ranked and grouped by video."""
    from search import MODES
    args = request.args
    q = (args.get("q") or "").strip()
    if not q:
        raise BadRequest("q must be a non-empty query text")
    params = paging(args)
    mode = choice_param(args, "mode", MODES, "hybrid")
    rerank = flag_param(args, "rerank")
    rewrite = flag_param(args, "rewrite", default=True)
    started = time.perf_counter()
    eng = engine()
    hits = eng.text(q, mode=mode, rerank=rerank, prefix=args.get("prefix") or None, rewrite=rewrite, **params)
    extra = {} if mode == "keyword" else {"read_as": eng.read(q, rewrite).to_dict()}
    return answer(q, hits, started, **extra)


@api.post("/search/video")
def search_video():
    """Video to video: the uploaded file is decoded and embedded like indexed clips; 415 if it is not a video."""
    from trainer.media import MediaError

    from .uploads import spooled
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType(f"send the video as multipart/form-data (field 'file'), not {request.mimetype!r}")
    source = request.form if request.form else request.args
    params = paging(source)
    prefix = source.get("prefix") or None
    upload = request.files.get("file")
    started = time.perf_counter()
    with spooled(upload) as path:
        try:
            hits = engine().video(path, prefix=prefix, **params)
        except MediaError as e:
            raise UnsupportedMediaType(f"{upload.filename!r} is not a decodable video: {e.reason}") from None
    return answer(f"video:{upload.filename}", hits, started)


@api.get("/clips/<int:clip_id>/similar")
def similar_clips(clip_id: int):
    """Clips that look like a stored clip."""
    params = paging(request.args)
    started = time.perf_counter()
    hits = engine().similar(clip_id, prefix=request.args.get("prefix") or None, **params)
    return answer(f"similar:{clip_id}", hits, started)


@api.get("/clips/<int:clip_id>")
def clip_detail(clip_id: int):
    """One stored clip: its time range, caption, tags and URLs."""
    out = record_json(engine().clip(clip_id))
    out["thumbnail_url"] = url_for("media.thumbnail", clip_id=clip_id)
    out["video_url"] = url_for("media.video_file", video_id=out["video_id"]) + f"#t={out['start']:g},{out['end']:g}"
    return jsonify(out)


@api.get("/videos")
def list_videos():
    """A page of the library: every video with its index status and, for failures, the reason."""
    offset = int_param(request.args, "offset", 0, 0, MAX_LIST_OFFSET)
    limit = int_param(request.args, "limit", 50, 1, MAX_LIST)
    counts = engine().counts()
    videos = [record_json(v) for v in engine().videos(offset=offset, limit=limit)]
    total = int(counts.get("videos", 0)) + int(counts.get("failed", 0))
    return jsonify(offset=offset, limit=limit, total=total, videos=videos)


@api.get("/videos/<int:video_id>")
def video_detail(video_id: int):
    """One video's record: path, status, error, duration and clip count as the store keeps them."""
    out = record_json(engine().video_record(video_id))
    out["video_url"] = url_for("media.video_file", video_id=video_id)
    return jsonify(out)


@api.get("/health")
def health():
    """Liveness and what is being served: counts, model (empty for a store without one), index and channels."""
    from search.engine import recorded_model_path
    eng = engine()
    counts = eng.counts()
    identity = getattr(eng.model, "identity", None) or {}
    model = identity.get("path") or recorded_model_path(eng.store) or identity.get("name") or ""
    return jsonify(status="ok", videos=int(counts.get("videos", 0)), clips=int(counts.get("clips", 0)),
                   model=str(model), index=index_name(eng.store), channels=eng.channels)


def index_name(store) -> str:
    """The FAISS index the store searches clips with (its factory spec), else its configured index type."""
    meta = getattr(store, "meta", None)
    if isinstance(meta, dict) and meta.get("clip_index"):
        return str(meta["clip_index"])
    config = getattr(store, "config", None)
    for name in ("index_type", "index", "faiss_index"):
        value = getattr(config, name, None)
        if isinstance(value, str) and value:
            return value
    return "unknown"


@api.get("/openapi.json")
def openapi():
    """The OpenAPI 3 description of this API."""
    from .openapi import document
    return jsonify(document(engine().channels))
