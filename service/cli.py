"""`lsr serve INDEX_DIR`: the search service under uvicorn (registered through ``lsr.commands``)."""

from __future__ import annotations

import argparse
import os


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve an index over HTTP (search, explain, add/delete documents)",
        description="Start the FastAPI search service on INDEX_DIR. Write endpoints need an API key: "
                    "set LSR_API_KEYS (comma-separated) in the environment. Other settings are "
                    "LSR_* variables too (see service/settings.py).",
    )
    parser.add_argument("index", metavar="INDEX_DIR", help="index directory built by lsr index")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes: they share the write-ahead log, one of them flushes and merges")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError as error:
        raise ImportError('lsr serve needs the service extra: pip install "lsr[service]"') from error
    from index.commit import read_newest_commit

    read_newest_commit(args.index)  # a clear error now rather than in every worker
    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    os.environ["LSR_INDEX_DIR"] = os.path.abspath(args.index)
    # Workers are separate processes: each builds the app from the environment.
    uvicorn.run("service.app:create_app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level)
    return 0
