"""WAL checkpoints for SQLite on a thread of their own, not on a writer's commit.

By default SQLite checkpoints inside the commit that pushes the write-ahead log past 1,000
pages: that commit copies the pages into the database file and syncs it, on the event
loop's thread (every SQLite call here runs there, db/inline_sqlite.py). Measured under a
placeOrder load: one commit in about 70 took 15-28 ms, which averaged 300 us on every order
and stalled every request on the process meanwhile.

While the server runs, a ``WalCheckpointer`` does that work instead: every ``interval``
seconds it runs a PASSIVE checkpoint on its own connection on its own thread. SQLite
releases the GIL for it, so copying and syncing overlap the loop's work; PASSIVE never waits
for readers or writers, and they never wait for it.

A write-ahead log starts over from its beginning only when a writer begins after every
frame in it has been copied. Under a steady stream of commits that moment may never come:
each checkpoint finishes behind the latest commit. So once the log holds ``restart_frames``
frames, the checkpointer takes the process's write lock (writers queue on it anyway, see
``Database.write_lock``) and copies the last few frames with no commit in between; the next
writer then starts the log over. Writers wait for that short copy only.

The serving connections keep SQLite's own automatic checkpoint as a backstop, at
``BACKSTOP_PAGES``: far above ``restart_frames``, it triggers only if this thread stops
keeping up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

log = logging.getLogger("ordergraph.db")

#: ``PRAGMA wal_autocheckpoint`` on the serving connections while a checkpointer runs.
BACKSTOP_PAGES = 20_000


@dataclass(frozen=True, slots=True)
class CheckpointResult:
    """What ``PRAGMA wal_checkpoint`` reported."""

    busy: bool  # could not run (another checkpoint was running)
    log_frames: int  # frames in the write-ahead log since it last started over
    copied_frames: int  # of those, how many are now in the database file


class WalCheckpointer:
    def __init__(
        self,
        path: str,
        write_lock: asyncio.Lock,
        *,
        interval: float = 0.05,
        restart_frames: int = 4096,
    ) -> None:
        self.path = path
        self.write_lock = write_lock
        self.interval = interval
        self.restart_frames = restart_frames
        self.checkpoints = 0
        self.restarts = 0  # checkpoints under the write lock, letting the log start over
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # used on the executor's thread only
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite-checkpoint")
            self._task = asyncio.create_task(self._run(), name="sqlite-checkpoint")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, self._close)
            executor.shutdown(wait=True)

    async def checkpoint(self) -> CheckpointResult:
        """One PASSIVE checkpoint on the checkpointer's thread; once the log is long, a
        second one under the write lock, so that the next writer starts the log over."""
        assert self._executor is not None, "start() first"
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, self._checkpoint)
        self.checkpoints += 1
        if result.log_frames >= self.restart_frames and not result.busy:
            async with self.write_lock:
                result = await loop.run_in_executor(self._executor, self._checkpoint)
            self.restarts += 1
        return result

    async def _run(self) -> None:
        delay = self.interval
        while True:
            await asyncio.sleep(delay)
            try:
                await self.checkpoint()
                delay = self.interval
            except Exception:
                # SQLite's own checkpoint (the backstop) still bounds the log meanwhile.
                log.exception("WAL checkpoint failed; retrying")
                delay = min(max(delay * 2, self.interval), 5.0)

    # On the executor's thread --------------------------------------------------------

    def _checkpoint(self) -> CheckpointResult:
        if self._conn is None:
            self._conn = sqlite3.connect(self.path, isolation_level=None)
        busy, log_frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return CheckpointResult(bool(busy), log_frames, copied)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
