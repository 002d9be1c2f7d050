"""db.checkpoint: WAL checkpoints on their own thread, and a log that still starts over."""

from __future__ import annotations

import asyncio
import struct
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from db.checkpoint import BACKSTOP_PAGES, WalCheckpointer
from db.database import Database

HANG_PROTECTION_SECONDS = 10


def wal_pages(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size // 4096 if wal.exists() else 0


def backfill(path: Path) -> tuple[int, int]:
    """(frames in the log, frames copied into the database), read from the WAL index
    without checkpointing (https://www.sqlite.org/walformat.html: the header's mxFrame at
    byte 16, the checkpoint info's nBackfill at byte 96, in native byte order)."""
    header = Path(f"{path}-shm").read_bytes()[:136]
    (log_frames,) = struct.unpack_from("=I", header, 16)
    (copied,) = struct.unpack_from("=I", header, 96)
    return log_frames, copied


async def make_db(tmp_path: Path, **kwargs: object) -> tuple[Database, Path]:
    path = tmp_path / "ckpt.db"
    database = Database(f"sqlite+aiosqlite:///{path}", **kwargs)  # type: ignore[arg-type]
    async with database.write_engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, blob BLOB)"))
    return database, path


async def write(database: Database, rows: int) -> None:
    """Commits of one 3 KB row each, every one of them under the write lock as writers do."""
    assert database.write_lock is not None
    for _ in range(rows):
        async with database.write_lock, database.write_engine.begin() as conn:
            await conn.execute(text("INSERT INTO t (blob) VALUES (randomblob(3000))"))


async def test_serving_connections_leave_checkpoints_to_the_checkpointer(tmp_path: Path) -> None:
    database, _ = await make_db(tmp_path, background_checkpoints=True)
    try:
        assert database.checkpointer is not None
        for engine in (database.write_engine, database.read_engine):
            async with engine.connect() as conn:
                value = (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one()
                assert value == BACKSTOP_PAGES
        assert database.sync_write_engine is not None
        with database.sync_write_engine.connect() as sync_conn:
            value = sync_conn.execute(text("PRAGMA wal_autocheckpoint")).scalar_one()
            assert value == BACKSTOP_PAGES
    finally:
        await database.dispose()


async def test_without_it_sqlite_keeps_its_own_checkpoints(tmp_path: Path) -> None:
    database, _ = await make_db(tmp_path)
    try:
        assert database.checkpointer is None
        async with database.write_engine.connect() as conn:
            value = (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one()
            assert value == 1000  # SQLite's default
    finally:
        await database.dispose()


async def test_in_memory_databases_have_no_checkpointer() -> None:
    database = Database("sqlite+aiosqlite:///:memory:", background_checkpoints=True)
    try:
        assert database.checkpointer is None
    finally:
        await database.dispose()


async def test_committed_frames_are_copied_in_the_background_off_the_loop_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database, path = await make_db(tmp_path, background_checkpoints=True)
    checkpointer = database.checkpointer
    assert checkpointer is not None
    threads: set[str] = set()
    real = WalCheckpointer._checkpoint

    def recording(self: WalCheckpointer):  # type: ignore[no-untyped-def]
        threads.add(threading.current_thread().name)
        return real(self)

    monkeypatch.setattr(WalCheckpointer, "_checkpoint", recording)
    try:
        # Far fewer pages than SQLite's own threshold: nothing is copied by the writers.
        await write(database, 40)
        log_frames, copied = backfill(path)
        assert log_frames >= 40 and copied < log_frames
        database.start()
        deadline = asyncio.get_running_loop().time() + HANG_PROTECTION_SECONDS
        while True:
            log_frames, copied = backfill(path)
            if log_frames >= 40 and copied == log_frames and checkpointer.checkpoints:
                break
            assert asyncio.get_running_loop().time() < deadline, (log_frames, copied)
            await asyncio.sleep(0.02)
        assert threads and all(name.startswith("sqlite-checkpoint") for name in threads)
        assert threading.main_thread().name not in threads
    finally:
        await database.dispose()


async def test_the_log_starts_over_under_a_steady_stream_of_commits(tmp_path: Path) -> None:
    database, path = await make_db(tmp_path, background_checkpoints=True)
    checkpointer = database.checkpointer
    assert checkpointer is not None
    checkpointer.interval = 0.005
    checkpointer.restart_frames = 64
    database.start()
    try:
        most = 0
        for _ in range(40):
            # No pause between commits except the loop's own turns.
            await write(database, 20)
            await asyncio.sleep(0)
            most = max(most, wal_pages(path))
        assert checkpointer.restarts >= 1
        # 800 commits of a page or more each: without starting over the log would hold
        # them all; it stays within a few restart thresholds.
        assert most < 8 * checkpointer.restart_frames, most
    finally:
        await database.dispose()


async def test_the_checkpointer_stops_with_the_database(tmp_path: Path) -> None:
    database, _ = await make_db(tmp_path, background_checkpoints=True)
    database.start()
    await write(database, 3)
    checkpointer = database.checkpointer
    assert checkpointer is not None
    await database.dispose()
    assert checkpointer._task is None and checkpointer._executor is None
    assert not any(t.name.startswith("sqlite-checkpoint") for t in threading.enumerate())
