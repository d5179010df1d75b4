"""The `vidsearch serve` command: the web app on the waitress WSGI server, bound to loopback unless told otherwise."""
from __future__ import annotations

import argparse
import sys


def add_parsers(subparsers) -> None:
    """Add the `serve` subcommand."""
    p = subparsers.add_parser("serve", help="serve the search UI and JSON API for a store",
                              description="Serve the search UI and JSON API for an indexed store with waitress.")
    p.add_argument("--store", required=True, help="store directory made by `vidsearch index`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000; 0 picks a free one)")
    p.add_argument("--threads", type=int, default=4, help="worker threads (default 4)")
    p.add_argument("--model", metavar="DIR", help="model directory (default: the one the store was built with)")
    p.add_argument("--max-upload-mb", type=float, default=200.0, help="largest query video accepted (default 200)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the app once, then serve until interrupted."""
    if args.threads < 1:
        print(f"vidsearch serve: --threads must be at least 1, got {args.threads}", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print(f"vidsearch serve: --port must be between 0 and 65535, got {args.port}", file=sys.stderr)
        return 2
    from pathlib import Path
    if not Path(args.store).is_dir():
        print(f"vidsearch serve: store directory not found: {args.store}", file=sys.stderr)
        return 2
    from indexer import StoreError
    from trainer import set_thread_budget

    from . import create_app
    # One compute thread per request thread on a small machine: --threads 4 on 2 cores must not run 8.
    set_thread_budget(args.threads)
    try:
        app = create_app(args.store, model_dir=args.model,
                         config={"MAX_UPLOAD_BYTES": int(args.max_upload_mb * 1024 * 1024)})
    except (StoreError, OSError, ValueError) as e:
        print(f"vidsearch serve: {e}", file=sys.stderr)
        return 2
    app.extensions["vidsearch_engine"].warm()     # load what queries need before the first one arrives
    serve(app, host=args.host, port=args.port, threads=args.threads)
    return 0


def serve(app, host: str = "127.0.0.1", port: int = 8000, threads: int = 4) -> None:
    """Run `app` on waitress until interrupted, printing the address it listens on."""
    from waitress.server import create_server
    if not is_loopback(host):
        print(f"vidsearch serve: warning: binding to {host}, not loopback: anyone who can reach this address can "
              f"search the library and read its videos (there is no authentication)", file=sys.stderr, flush=True)
    # Waitress reads a whole request body before the app sees it, so it must refuse an oversized one itself,
    # from the Content-Length (or as a chunked body grows), and answer in the API's JSON like the app would.
    # No `ident`: no Server header naming the software.
    server = create_server(app, host=host, port=port, threads=threads, ident="",
                           max_request_body_size=app.config["MAX_CONTENT_LENGTH"] + 1)
    json_errors(server, app.config["MAX_UPLOAD_BYTES"])
    for url in listen_urls(server):
        print(f"vidsearch: serving {url}  (Ctrl-C to stop)", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine (127.0.0.0/8, ::1 or localhost)."""
    import ipaddress
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def json_errors(server, upload_limit: int) -> None:
    """Make the errors waitress answers by itself (body too large, malformed request) JSON `{"error": ...}`."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        def execute(self):
            import json
            e = self.request.error
            message = (f"upload too large (limit {upload_limit} bytes)" if e.code == 413
                       else f"{e.reason}: {e.body}")
            body = json.dumps({"error": message}).encode()
            self.status = f"{e.code} {e.reason}"
            self.response_headers.extend([("Content-Type", "application/json"),
                                          ("X-Content-Type-Options", "nosniff")])
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonErrorChannel(HTTPChannel):
        error_task_class = JsonErrorTask

    # One listening socket gives one server; several (a name with several addresses) a map of them.
    listeners = [server] if hasattr(server, "channel_class") else [
        s for s in server.map.values() if hasattr(s, "channel_class")]
    for listener in listeners:
        listener.channel_class = JsonErrorChannel


def listen_urls(server) -> list[str]:
    """The http:// URLs a waitress server listens on (several when a host name resolves to several addresses)."""
    listens = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]
    urls = []
    for host, port in listens:
        host = f"[{host}]" if ":" in str(host) else host
        urls.append(f"http://{host}:{port}/")
    return urls
