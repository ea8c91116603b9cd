"""`acai-omr web serve`: run the web app on one machine (development or a small private server).

For a public server use gunicorn behind nginx (deploy/).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="serve the upload-and-transcribe page (threaded werkzeug server)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--weights", default="", help="weights folder (default: $ACAI_WEIGHTS_DIR, else weights/)")
    serve.add_argument("--work-dir", default="", help="folder for per-job temp files (default: system temp)")
    serve.add_argument("--pool-size", type=int, default=None, help="inference worker threads")
    serve.add_argument("--no-render", action="store_true", help="skip MuseScore rendering (MusicXML/LMX only)")
    serve.add_argument("--redis-url", default="", metavar="URL",
                       help="send jobs through Redis to `acai-omr worker` processes (default: $ACAI_REDIS_URL, "
                            "else run them in this process)")
    serve.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from werkzeug.serving import run_simple

    from acai_omr.web import create_app, resolve_web_config

    overrides = {}
    if args.weights:
        overrides["weights_dir"] = args.weights
    if args.work_dir:
        overrides["work_dir"] = args.work_dir
    if args.pool_size is not None:
        overrides["pool_size"] = args.pool_size
    if args.no_render:
        overrides["render"] = False
    if args.redis_url:
        overrides["redis_url"] = args.redis_url
    app = create_app({"WEB": resolve_web_config(overrides)})
    status = app.extensions["acai_omr"].model.status()
    print(("model: " if status["ok"] else "warning: ") + status["message"])
    print(f"serving on http://{args.host}:{args.port}/")
    run_simple(args.host, args.port, app, threaded=True, use_reloader=False)
    return 0
