"""What the PostgreSQL sessions of the benchmark database are doing while a load runs:
``pg_stat_activity`` sampled from a background thread (e.g. how many wait on row locks)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from types import TracebackType
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bench.data import postgres_admin_dsn

ACTIVITY_SQL = """
SELECT state, COALESCE(wait_event_type, '-') AS wait_type, COALESCE(wait_event, '-') AS wait
FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()
"""


class ActivitySampler:
    def __init__(self, database_url: str, interval: float = 0.5) -> None:
        _, self.database = postgres_admin_dsn(database_url)
        self.dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self.interval = interval
        self.samples = 0
        self.counts: Counter[str] = Counter()
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-activity", daemon=True)

    def __enter__(self) -> ActivitySampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._sample())
        except Exception as exc:  # diagnostics only: never fail the benchmark
            self.error = f"{type(exc).__name__}: {exc}"

    async def _sample(self) -> None:
        conn = await asyncpg.connect(self.dsn, timeout=5)
        try:
            while not self._stop.is_set():
                for row in await conn.fetch(ACTIVITY_SQL, self.database):
                    key = row["state"] or "-"
                    if row["wait_type"] != "-":
                        key += f" / {row['wait_type']}:{row['wait']}"
                    self.counts[key] += 1
                self.samples += 1
                await asyncio.sleep(self.interval)
        finally:
            await conn.close()

    def summary(self) -> dict[str, Any]:
        """Average number of sessions in each state (and wait) over the samples."""
        if not self.samples:
            return {"samples": 0, "error": self.error}
        average = {k: round(v / self.samples, 1) for k, v in self.counts.most_common(8)}
        lock_waits = sum(v for k, v in self.counts.items() if "/ Lock:" in k) / self.samples
        return {
            "samples": self.samples,
            "sessions": average,
            "waiting_on_locks": round(lock_waits, 1),
        }
