"""The web layer: a Flask app factory serving the JSON API, media files and the HTML search UI."""
from __future__ import annotations

from pathlib import Path

DEFAULTS = {
    "MAX_UPLOAD_BYTES": 200 * 1024 * 1024,   # largest query video accepted by POST /api/search/video
    "UPLOAD_DIR": None,                      # where uploads are spooled while searched; None = system temp dir
    "REFRESH_SECONDS": 2.0,                  # how often the engine looks for a newer index on disk
    "RERANK_TOP": 20,                        # candidates re-scored per re-ranked query (each new one is decoded)
    "PAGE_SIZE": 12,                         # results per page in the HTML UI
    "CUTOFFS": True,                         # text results must beat chance per channel (EngineConfig.cutoffs)
}


def create_app(store_dir, model_dir=None, config: dict | None = None, engine=None):
    """Build the app over the store at `store_dir`; loads the search engine once, never starts a server.

    `model_dir` overrides the model the store was indexed with. `config` overrides `DEFAULTS` and Flask settings.
    An already-built `engine` may be passed to share it between apps (tests do).
    """
    # Imported here, not at module level, so that `vidsearch --help` (webui.cli) stays instant.
    from flask import Flask

    from search import Engine, EngineConfig

    app = Flask(__name__)
    app.config.update(DEFAULTS)
    app.config.update(config or {})
    # Flask rejects bodies past MAX_CONTENT_LENGTH before a view runs; leave room for the multipart envelope.
    app.config["MAX_CONTENT_LENGTH"] = int(app.config["MAX_UPLOAD_BYTES"]) + 64 * 1024
    if engine is None:
        model = None
        if model_dir is not None:
            import trainer
            model = trainer.load(model_dir)
        engine = Engine(store_dir, model=model,
                        config=EngineConfig(refresh_seconds=float(app.config["REFRESH_SECONDS"]),
                                            rerank_top=int(app.config["RERANK_TOP"]),
                                            cutoffs=bool(app.config["CUTOFFS"])))
    app.extensions["vidsearch_engine"] = engine
    # The store resolved its directory when it opened; a relative one would be read against the package folder.
    app.config["STORE_DIR"] = str(getattr(engine.store, "dir", None) or Path(store_dir).resolve())

    from .api import api
    from .errors import register_error_handlers
    from .headers import register_security_headers
    from .media import media
    from .ui import ui
    app.register_blueprint(api)
    app.register_blueprint(media)
    app.register_blueprint(ui)
    register_error_handlers(app)
    register_security_headers(app)
    return app


__all__ = ["create_app", "DEFAULTS"]
