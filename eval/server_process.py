"""A real `lsr serve` in a child process on a free loopback port, for benchmarks and tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """Start, kill and restart `lsr serve INDEX_DIR`.

    Args:
        index_dir: the index to serve.
        api_key: put in ``LSR_API_KEYS`` for the write endpoints.
        workers: uvicorn worker processes.
        log_path: where the server's output goes (default: discarded).
        env: further ``LSR_*`` settings.
        ray_replicas: serve on Ray Serve instead (``lsr serve --ray``, a local Ray the server
            starts and its process group takes down), with this many replicas per shard.
    """

    def __init__(self, index_dir: str | Path, api_key: str | None = None, workers: int = 1,
                 log_path: str | Path | None = None, env: dict | None = None, port: int | None = None,
                 ray_replicas: int | None = None) -> None:
        self.index_dir = Path(index_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.log_path = Path(log_path) if log_path else None
        self.env = {**os.environ, **(env or {})}
        if api_key:
            self.env["LSR_API_KEYS"] = api_key
        self.ray_replicas = ray_replicas
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> float:
        """Start the server and wait until /health answers; returns the seconds that took."""
        started = time.perf_counter()
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        command = [sys.executable, "-m", "lsr.cli", "serve", str(self.index_dir), "--port", str(self.port),
                   "--workers", str(self.workers), "--log-level", "warning"]
        if self.ray_replicas:
            command += ["--ray", "--replicas", str(self.ray_replicas)]
        self.process = subprocess.Popen(command, env=self.env, stdout=output, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"lsr serve exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.2)
        self.kill()
        raise TimeoutError(f"lsr serve did not answer /health within {timeout} s")

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown handler runs (a crash)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        """SIGTERM (uvicorn's graceful shutdown), then kill if it lingers."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def __enter__(self) -> "ServerProcess":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def log_tracebacks(log: str) -> list[str]:
    """Each traceback of a server log with the lines around it (what a report must show)."""
    lines = log.splitlines()
    return ["\n".join(lines[max(0, i - 3) : i + 40]) for i, line in enumerate(lines) if "Traceback" in line]
