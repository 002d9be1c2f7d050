"""Real server processes for end-to-end tests: ``python -m app serve`` under uvicorn, and
API keys for them made by ``python -m app api-key create`` (every request needs one)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def _server_env(database_url: str) -> dict[str, str]:
    """This process's environment without its ORDERGRAPH_ settings, on ``database_url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERGRAPH_")}
    env.update({"ORDERGRAPH_DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"})
    return env


def create_api_key(database_url: str, role: str = "ADMIN", name: str = "e2e") -> str:
    """A new API key in the database, made as an operator would: ``python -m app api-key
    create``. It prints the key on stdout and what it did on stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "app", "api-key", "create", "--role", role, "--name", name],
        cwd=ROOT,
        env=_server_env(database_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    key = result.stdout.strip()
    assert result.returncode == 0 and key.startswith("og_"), (
        f"api-key create exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash)."""
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def start_server(
    database_url: str,
    log_dir: Path,
    *,
    broadcast_url: str = "memory://",
    extra_env: dict[str, str] | None = None,
    ready_timeout: float = 30.0,
) -> Server:
    """Start one server process on a free port and wait until ``/readyz`` answers 200."""
    port = free_port()
    env = _server_env(database_url)
    env.update({"ORDERGRAPH_BROADCAST_URL": broadcast_url, "ORDERGRAPH_DEBUG": "1"})
    env.update(extra_env or {})
    log_path = log_dir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--ws-per-message-deflate",
                "false",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, port, log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server not ready after {ready_timeout}s:\n{server.log()}")


@contextmanager
def running_servers(
    database_url: str, log_dir: Path, count: int = 1, **kwargs: object
) -> Iterator[list[Server]]:
    servers: list[Server] = []
    try:
        for _ in range(count):
            servers.append(start_server(database_url, log_dir, **kwargs))  # type: ignore[arg-type]
        yield servers
    finally:
        for server in servers:
            server.stop()
