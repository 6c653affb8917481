"""`lsr serve INDEX_DIR`: the search service under uvicorn (registered through ``lsr.commands``)."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from contextlib import contextmanager

from lsr.encoders.query_backends import add_query_backend_option


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
    add_query_backend_option(parser, default=None,
                             note="; documents always go through PyTorch (sets LSR_QUERY_BACKEND)")
    ray = parser.add_argument_group("sharded search on Ray Serve (needs lsr-engine[ray])")
    ray.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                     help="serve on Ray Serve: the cluster at ADDRESS (`auto` for the one `ray start` runs here), or "
                          "without ADDRESS a local Ray; one deployment per shard, an encoder deployment, this API as "
                          "the ingress")
    ray.add_argument("--replicas", type=int, default=1, help="replicas of each shard's deployment (default 1)")
    ray.add_argument("--shard-cpus", type=float, default=0.0,
                     help="CPUs Ray reserves for each shard replica (default 0: packed wherever there is room)")
    ray.add_argument("--encoder-cpus", type=float, default=0.0, help="CPUs Ray reserves for the encoder replica")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError as error:
        raise ImportError('lsr serve needs the service extra: pip install "lsr-engine[service]"') from error
    from lsr.index.commit import read_newest_commit

    from lsr.index.shards import shard_directories

    for directory in shard_directories(args.index).values():
        read_newest_commit(directory)  # a clear error now rather than in every worker
    if args.query_backend:
        os.environ["LSR_QUERY_BACKEND"] = args.query_backend  # workers and Ray replicas read settings from it
    if args.ray is not None:
        return _run_on_ray(args)
    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    os.environ["LSR_INDEX_DIR"] = os.path.abspath(args.index)
    with _shared_metrics(args.workers):
        # Workers are separate processes: each builds the app from the environment.
        # h11, whichever parsers are installed (Ray Serve brings httptools): the app then answers a
        # made-up method with 405 and counts it, and the recorded latencies were measured with it.
        uvicorn.run("lsr.service.app:create_app_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level=args.log_level, http="h11")
    return 0


@contextmanager
def _shared_metrics(workers: int):
    """With several workers, prometheus-client's multiprocess mode: each worker writes its
    metrics to files in ``PROMETHEUS_MULTIPROC_DIR`` and `/metrics`, whichever worker answers,
    sums them all (a worker killed and restarted keeps its counts). The directory is a fresh
    temporary one, removed at exit, unless the environment names one already (then it is the
    caller's to empty between runs, as the library asks)."""
    if workers == 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    directory = tempfile.mkdtemp(prefix="lsr-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory  # read by the workers' prometheus-client at import
    try:
        yield
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(directory, ignore_errors=True)


def _run_on_ray(args: argparse.Namespace) -> int:
    from lsr.service.ray_serve import serve_on_ray
    from lsr.service.settings import Settings

    if args.workers != 1:
        raise ValueError("--workers is for the one-machine service; on Ray use --replicas")
    settings = Settings(index_dir=os.path.abspath(args.index))  # and the LSR_* environment
    serve_on_ray(settings.index_dir, settings, address=args.ray or None, replicas=args.replicas, host=args.host,
                 port=args.port, shard_cpus=args.shard_cpus, encoder_cpus=args.encoder_cpus)
    return 0
