"""Server processes: ``python -m app serve --port P [--workers N]``, ready when
``GET /readyz`` answers 200, stopped with SIGTERM; their output goes to a log file."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.data import app_env
from bench.system import ROOT, children, cmdline, cpu_seconds, rss_bytes


class ServerError(RuntimeError):
    """A server did not start or died; the message points to its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One ``serve`` command: a single process, or uvicorn's supervisor and its workers."""

    process: subprocess.Popen[bytes]
    port: int
    workers: int
    log_path: Path
    label: str
    _log_offset: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serving_pids(self) -> list[int]:
        """The processes that serve requests: the process itself with one worker, else
        uvicorn's worker children (not multiprocessing's resource tracker)."""
        if self.workers == 1:
            return [self.process.pid]
        return [
            pid
            for pid in children(self.process.pid)
            if "resource_tracker" not in cmdline(pid) and "semaphore_tracker" not in cmdline(pid)
        ]

    def rss(self) -> int:
        return sum(rss_bytes(pid) or 0 for pid in self.serving_pids())

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) or 0.0 for pid in self.serving_pids())

    def alive(self) -> bool:
        return self.process.poll() is None and len(self.serving_pids()) == self.workers

    def new_log_lines(self) -> list[str]:
        """Lines the server logged since the previous call."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                data = f.read()
        except OSError:
            return []
        self._log_offset += len(data)
        return data.decode(errors="replace").splitlines()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def start_server(
    label: str,
    database_url: str,
    broadcast_url: str,
    log_dir: Path,
    *,
    workers: int = 1,
    debug: bool = False,
    log_level: str = "warning",
    ready_timeout: float = 60.0,
) -> Server:
    """Start ``python -m app serve`` on a free port and wait until every worker is up and
    ``/readyz`` answers 200. The cost budget is off (ORDERGRAPH_COST_BUCKET=0)."""
    port = free_port()
    extra = {"ORDERGRAPH_COST_BUCKET": "0"}
    if debug:
        extra["ORDERGRAPH_DEBUG"] = "1"
    env = app_env(database_url, broadcast_url, **extra)
    log_path = log_dir / f"server-{label}-{port}.log"
    command = [sys.executable, "-m", "app", "serve", "--port", str(port), "--log-level", log_level]
    if workers > 1:
        command += ["--workers", str(workers)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the benchmark must not skip our cleanup
        )
    server = Server(process, port, workers, log_path, label)
    deadline = time.monotonic() + ready_timeout
    ready_in_a_row = 0
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerError(
                    f"server {label} exited with {process.returncode}; log {log_path}:\n"
                    + server.log_tail()
                )
            try:
                ok = client.get(f"{server.url}/readyz").status_code == 200
            except httpx.HTTPError:
                ok = False
            # With several workers, each must be up: ask a few times in a row.
            ready_in_a_row = ready_in_a_row + 1 if ok else 0
            if ready_in_a_row >= 2 * workers and len(server.serving_pids()) == workers:
                return server
            time.sleep(0.1)
    server.stop()
    raise ServerError(f"server {label} not ready after {ready_timeout}s; log {log_path}")
