"""The HTML pages: search (text or example video), watch a clip in place, and the library with index status."""
from __future__ import annotations

import time

from flask import Blueprint, current_app, render_template, request
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

from .api import choice_param, engine, flag_param, int_param, record_json

# Templates and static files live in the package's templates/ and static/, served by the app itself.
ui = Blueprint("ui", __name__)

SIMILAR_STRIP = 8


@ui.app_template_filter("mmss")
def mmss_filter(seconds) -> str:
    """Seconds as m:ss for time ranges under thumbnails."""
    from search.cli import mmss
    return mmss(float(seconds or 0.0))


@ui.app_template_filter("basename")
def basename_filter(path) -> str:
    """The file name of a path, for compact result cards."""
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]


def _form_state(args) -> dict:
    """The search form's fields as the request gave them, checked."""
    from search import GROUPS, MODES
    return {"q": (args.get("q") or "").strip(), "mode": choice_param(args, "mode", MODES, "hybrid"),
            "rerank": flag_param(args, "rerank"), "group": choice_param(args, "group", GROUPS, "clip"),
            "rewrite": flag_param(args, "rewrite", default=True),
            "page": int_param(args, "page", 1, 1, 10_000)}


@ui.get("/")
def search_page():
    """The search page; with `q` it shows a page of results (a plain GET form, so it works without JS)."""
    state = _form_state(request.args)
    size = int(current_app.config["PAGE_SIZE"])
    hits, took, more, reading = [], None, False, None
    if state["q"]:
        started = time.perf_counter()
        # One extra result tells whether a next page exists without counting the whole ranking.
        found = engine().text(state["q"], k=size + 1, offset=(state["page"] - 1) * size, mode=state["mode"],
                              rerank=state["rerank"], group=state["group"], rewrite=state["rewrite"])
        took = (time.perf_counter() - started) * 1000.0
        hits, more = found[:size], len(found) > size
        if state["mode"] != "keyword":
            reading = engine().read(state["q"], state["rewrite"])
    return render_template("search.html", state=state, hits=hits, took=took, more=more, reading=reading,
                           counts=engine().counts(), **_channels())


def _channels() -> dict:
    """The store's channels, and the search modes they allow, for the search form."""
    channels = engine().channels
    modes = ["hybrid"] + [m for m in ("dense", "keyword", "concept", "clip") if m in channels]
    return {"channels": channels, "modes": modes}


@ui.post("/search/video")
def search_video_page():
    """Results for an uploaded query video, rendered as the search page does."""
    from trainer.media import MediaError

    from .uploads import spooled
    state = {"q": "", "mode": "hybrid", "rerank": False, "group": request.form.get("group") or "clip", "page": 1,
             "rewrite": True}
    if state["group"] not in ("clip", "video"):
        raise BadRequest(f"group must be clip or video, got {state['group']!r}")
    upload = request.files.get("file")
    started = time.perf_counter()
    with spooled(upload) as path:
        try:
            hits = engine().video(path, k=2 * int(current_app.config["PAGE_SIZE"]), group=state["group"])
        except MediaError as e:
            raise UnsupportedMediaType(f"{upload.filename!r} is not a decodable video: {e.reason}") from None
    took = (time.perf_counter() - started) * 1000.0
    return render_template("search.html", state=state, hits=hits, took=took, more=False,
                           counts=engine().counts(), query_video=upload.filename, **_channels())


@ui.get("/watch/<int:clip_id>")
def watch_page(clip_id: int):
    """Play a clip's video from the clip's start, with a strip of similar clips below."""
    eng = engine()
    clip = eng.clip(clip_id)
    video = eng.video_record(clip.video_id)
    similar = eng.similar(clip_id, k=SIMILAR_STRIP)
    return render_template("watch.html", clip=clip, video=video, similar=similar,
                           tags=_tag_words(getattr(clip, "tags", None)), captions=eng.video_captions(clip.video_id))


@ui.get("/library")
def library_page():
    """Every video with its index status, clip count and, for failures, the reason."""
    size = 50
    page = int_param(request.args, "page", 1, 1, 100_000)
    eng = engine()
    videos = [record_json(v) for v in eng.videos(offset=(page - 1) * size, limit=size + 1)]
    for v in videos[:size]:
        # Indexed videos link to the watch page of their first clip.
        clips = eng.video_clips(v["id"]) if v.get("status") == "indexed" and v.get("clips") else []
        v["first_clip"] = clips[0] if clips else None
    return render_template("library.html", videos=videos[:size], page=page, more=len(videos) > size,
                           counts=eng.counts())


def _tag_words(tags) -> list[str]:
    """Concept tags as plain words, whatever shape the store keeps them in."""
    if not tags:
        return []
    if isinstance(tags, str):
        return [t for t in tags.replace(",", " ").split() if t][:10]
    words = []
    for tag in tags:
        words.append(str(tag[0]) if isinstance(tag, (list, tuple)) else str(tag))
    return words[:10]
