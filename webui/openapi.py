"""The OpenAPI 3 document describing the JSON API and the media endpoints."""
from __future__ import annotations

from search import MAX_K, MAX_OFFSET

from .api import MAX_LIST, MAX_LIST_OFFSET


def _param(name: str, where: str, schema: dict, description: str, required: bool = False) -> dict:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema,
            "description": description}


def _errors(*codes: int) -> dict:
    text = {400: "Bad parameter", 403: "The file on disk is no longer the one that was indexed",
            404: "Unknown id or route", 413: "Upload over the size limit",
            415: "Upload is not a decodable video", 416: "Range not satisfiable"}
    return {str(c): {"description": text[c], "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}} for c in codes}


def _ok(schema_ref: str, description: str = "OK") -> dict:
    return {"200": {"description": description, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}}


# Bounds as the API checks them, from the same constants.
K_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10}
OFFSET_SCHEMA = {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}
ID_SCHEMA = {"type": "integer", "minimum": 0, "maximum": 2 ** 63 - 1}
K = _param("k", "query", K_SCHEMA, "Number of results")
OFFSET = _param("offset", "query", OFFSET_SCHEMA, "Results to skip (paging)")
GROUP = _param("group", "query", {"type": "string", "enum": ["clip", "video"], "default": "clip"},
               "One result per clip, or only the best clip of each video")
PREFIX = _param("prefix", "query", {"type": "string"}, "Only videos whose path starts with this")

CHANNEL = {"type": "string", "enum": ["dense", "keyword", "concept", "lookalike", "clip"],
           "description": "dense: the model's clip and caption vectors; keyword: FTS5 over captions and concept "
                          "tags; concept: the query's ImageNet classes against each clip's class probabilities; "
                          "lookalike: the frame encoder's pooled features (video and similar-clip queries); clip: "
                          "the query through the CLIP text tower against the clips' CLIP image embeddings"}

SCHEMAS = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Result": {"type": "object", "required": ["clip_id", "video_id", "video_path", "start", "end", "score",
                                              "caption", "description", "thumbnail_url", "video_url", "sources",
                                              "similarities"],
               "properties": {"clip_id": {"type": "integer"}, "video_id": {"type": "integer"},
                              "video_path": {"type": "string"},
                              "start": {"type": "number", "description": "seconds"},
                              "end": {"type": "number", "description": "seconds"},
                              "score": {"type": "number", "description": "higher is better: the channel's own "
                                        "score for one channel, the reciprocal rank fusion score for several"},
                              "sources": {"type": "array", "items": CHANNEL,
                                          "description": "the channels that found this clip"},
                              "similarities": {"type": "object", "additionalProperties": {"type": "number"},
                                               "description": "each source channel's own score: cosine (dense, "
                                               "lookalike), BM25 (keyword), share of the clip's class "
                                               "probability on the query's concepts (concept)"},
                              "caption": {"type": "string", "nullable": True},
                              "description": {"type": "string", "nullable": True,
                                              "description": "the model's generated description of the clip"},
                              "thumbnail_url": {"type": "string"},
                              "video_url": {"type": "string",
                                            "description": "the video, with a #t=start,end media fragment"}}},
    "SearchAnswer": {"type": "object", "required": ["query", "took_ms", "results"],
                     "properties": {"query": {"type": "string"}, "took_ms": {"type": "number"},
                                    "results": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}},
                                    "read_as": {"$ref": "#/components/schemas/Reading"}}},
    "Reading": {"type": "object", "required": ["text", "substitutions", "concepts"],
                "description": "The text query as search read it: for the dense channel, unknown words put into "
                               "training words; for the concept channel, the ImageNet classes its words reached.",
                "properties": {"text": {"type": "string"},
                               "concepts": {"type": "array", "items": {
                                   "type": "object", "required": ["from", "classes", "count", "evidence"],
                                   "properties": {"from": {"type": "string", "description": "query words"},
                                                  "classes": {"type": "array", "items": {"type": "string"},
                                                              "description": "the first ten classes reached"},
                                                  "count": {"type": "integer", "description": "classes reached"},
                                                  "evidence": {"type": "string", "enum": ["wordnet", "similarity"],
                                                               "description": "wordnet: the classes are kinds of "
                                                               "the words; similarity: the sentence encoder puts "
                                                               "the word near the classes' names (ConSE)"}}}},
                               "substitutions": {"type": "array", "items": {
                                   "type": "object", "required": ["from", "to", "evidence", "score"],
                                   "properties": {"from": {"type": "string"}, "to": {"type": "string"},
                                                  "evidence": {"type": "string",
                                                               "enum": ["synonym", "related", "definition",
                                                                        "described", "sibling", "seen", "unknown"],
                                                               "description": "described: the word's definition "
                                                               "names `to`; sibling: `to` is the only training "
                                                               "word of the word's kind; seen: the frame "
                                                               "encoder saw what the word names mostly in clips "
                                                               "of `to`; unknown: nothing placed the word, so it "
                                                               "was left out (`to` is empty)"},
                                                  "score": {"type": "number", "description": "1 for a dictionary "
                                                            "relation, the definitions' cosine, or for seen the "
                                                            "lift"}}}}}},
    "Video": {"type": "object", "description": "A video as the store records it, with its index status and error.",
              "properties": {"id": {"type": "integer"}, "path": {"type": "string"}, "status": {"type": "string"},
                             "error": {"type": "string", "nullable": True}},
              "additionalProperties": True},
    "VideoList": {"type": "object", "required": ["offset", "limit", "total", "videos"],
                  "properties": {"offset": {"type": "integer"}, "limit": {"type": "integer"},
                                 "total": {"type": "integer"},
                                 "videos": {"type": "array", "items": {"$ref": "#/components/schemas/Video"}}}},
    "Clip": {"type": "object", "description": "A stored clip with its caption, tags and URLs.",
             "properties": {"id": {"type": "integer"}, "video_id": {"type": "integer"},
                            "start": {"type": "number"}, "end": {"type": "number"},
                            "thumbnail_url": {"type": "string"}, "video_url": {"type": "string"}},
             "additionalProperties": True},
    "Health": {"type": "object", "required": ["status", "videos", "clips", "model", "index", "channels"],
               "properties": {"status": {"type": "string", "enum": ["ok"]}, "videos": {"type": "integer"},
                              "clips": {"type": "integer"},
                              "model": {"type": "string", "description": "empty for a store without a model"},
                              "index": {"type": "string"},
                              "channels": {"type": "array", "items": CHANNEL,
                                           "description": "the channels the store answers"}}},
}


TEXT_MODES = ["dense", "keyword", "concept", "clip"]


def _paths(channels=None) -> dict:
    """Path item objects for every JSON and media endpoint; `channels` (the served store's) narrow the modes."""
    modes = [m for m in TEXT_MODES if channels is None or m in channels] + ["hybrid"]
    clip_id = _param("clip_id", "path", ID_SCHEMA, "Clip id")
    video_id = _param("video_id", "path", ID_SCHEMA, "Video id")
    return {
        "/api/search": {"get": {
            "summary": "Search clips by text", "operationId": "searchText",
            "parameters": [_param("q", "query", {"type": "string", "pattern": r"\S", "maxLength": 2000},
                                  "Query text (not only spaces, at most 2,000 characters)", True), K, OFFSET,
                           _param("mode", "query", {"type": "string",
                                                    "enum": modes,
                                                    "default": "hybrid"},
                                  "One channel (400 if the store lacks it), or hybrid: every text channel the "
                                  "store has, fused by reciprocal rank"),
                           _param("rerank", "query", {"type": "integer", "enum": [0, 1], "default": 0},
                                  "Re-rank the top candidates with the alignment head"),
                           _param("rewrite", "query", {"type": "integer", "enum": [0, 1], "default": 1},
                                  "Put words the model never saw in training into words it did"), GROUP, PREFIX],
            "responses": {**_ok("SearchAnswer"), **_errors(400)}}},
        "/api/search/video": {"post": {
            "summary": "Search clips by an example video", "operationId": "searchVideo",
            "requestBody": {"required": True, "content": {"multipart/form-data": {
                "schema": {"type": "object", "required": ["file"],
                           "properties": {"file": {"type": "string", "format": "binary",
                                                   "description": "a video file (mp4, m4v, mov, mkv, webm, avi) "
                                                                  "no larger than the server's upload limit"},
                                          "k": K_SCHEMA, "offset": OFFSET_SCHEMA,
                                          "group": {"type": "string", "enum": ["clip", "video"]},
                                          "prefix": {"type": "string"}}},
                "encoding": {"file": {"contentType": "video/*, application/octet-stream"}}}}},
            "responses": {**_ok("SearchAnswer"), **_errors(400, 413, 415)}}},
        "/api/clips/{clip_id}": {"get": {
            "summary": "One stored clip", "operationId": "getClip", "parameters": [clip_id],
            "responses": {**_ok("Clip"), **_errors(404)}}},
        "/api/clips/{clip_id}/similar": {"get": {
            "summary": "Clips similar to a stored clip", "operationId": "similarClips",
            "parameters": [clip_id, K, OFFSET, GROUP, PREFIX],
            "responses": {**_ok("SearchAnswer"), **_errors(400, 404)}}},
        "/api/videos": {"get": {
            "summary": "The video library with index status", "operationId": "listVideos",
            "parameters": [_param("offset", "query", {"type": "integer", "minimum": 0, "maximum": MAX_LIST_OFFSET,
                                                      "default": 0}, "Videos to skip (paging)"),
                           _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_LIST,
                                                     "default": 50}, "Page size")],
            "responses": {**_ok("VideoList"), **_errors(400)}}},
        "/api/videos/{video_id}": {"get": {
            "summary": "One video with its status and error", "operationId": "getVideo", "parameters": [video_id],
            "responses": {**_ok("Video"), **_errors(404)}}},
        "/api/health": {"get": {"summary": "Service health and what is served", "operationId": "health",
                                "responses": _ok("Health")}},
        "/api/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                      "responses": {"200": {"description": "OpenAPI 3 document"}}}},
        "/media/{video_id}": {"get": {
            "summary": "Stream an indexed video file (HTTP Range supported)", "operationId": "media",
            "parameters": [video_id, _param("Range", "header", {"type": "string"}, "e.g. bytes=0-1023")],
            "responses": {"200": {"description": "The whole file", "content": {"video/*": {}}},
                          "206": {"description": "The requested byte range", "content": {"video/*": {}}},
                          **_errors(403, 404, 416)}}},
        "/thumbs/{clip_id}.jpg": {"get": {
            "summary": "A clip's thumbnail", "operationId": "thumbnail", "parameters": [clip_id],
            "responses": {"200": {"description": "JPEG image", "content": {"image/jpeg": {}}}, **_errors(404)}}},
    }


def document(channels=None) -> dict:
    """The OpenAPI 3.0 document for every endpoint the app serves outside the HTML pages; given the served
    store's channels, `mode` lists only the ones it answers."""
    return {"openapi": "3.0.3",
            "info": {"title": "vidsearch", "version": "1",
                     "description": "Cross-modal video search: find the moments of a video library that match a "
                                    "sentence or an example video."},
            "paths": _paths(channels),
            "components": {"schemas": SCHEMAS}}
