"""app.wsprotocol: the queue and the flag behave as the asyncio classes they replace."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from app.wsprotocol import Flag, ReceiveQueue

# A script: put an item, or let the consumer take one (and wait for it if none is there).
steps = st.lists(st.one_of(st.integers(0, 99), st.just("get")), max_size=40)


async def run(queue: Any, script: list[Any]) -> list[tuple[str, Any]]:
    """Drive ``queue`` with ``script``; what the consumer got, and when, and the sizes."""
    log: list[tuple[str, Any]] = []
    pending: list[asyncio.Task[Any]] = []
    for step in script:
        if step == "get":
            pending.append(asyncio.ensure_future(queue.get()))
        else:
            queue.put_nowait(step)
        for _ in range(3):
            await asyncio.sleep(0)
        for task in [t for t in pending if t.done()]:
            pending.remove(task)
            log.append(("got", task.result()))
        log.append(("size", (queue.qsize(), queue.empty())))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    # A cancelled get loses nothing: what is left is still there, in order.
    left = []
    while not queue.empty():
        left.append(await queue.get())
    log.append(("left", left))
    return log


@given(script=steps)
async def test_the_receive_queue_gives_what_asyncio_queue_gives(script: list[Any]) -> None:
    # One consumer at a time, as uvicorn's receive() is: at most one get outstanding.
    one_at_a_time: list[Any] = []
    outstanding = 0
    for step in script:
        if step == "get":
            if outstanding:
                continue
            outstanding = 1
        else:
            outstanding = 0
        one_at_a_time.append(step)
    assert await run(ReceiveQueue(), one_at_a_time) == await run(asyncio.Queue(), one_at_a_time)


async def test_a_waiting_consumer_is_woken_by_a_put() -> None:
    queue = ReceiveQueue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put_nowait({"type": "websocket.connect"})
    assert await asyncio.wait_for(getter, 1) == {"type": "websocket.connect"}
    assert queue._waiter is None  # nothing kept once nobody waits


flag_steps = st.lists(st.sampled_from(["set", "clear", "wait", "cancel"]), max_size=30)


async def drive_flag(flag: Any, script: list[str]) -> list[tuple[int, int, bool]]:
    waiters: list[asyncio.Task[Any]] = []
    log = []
    for step in script:
        if step == "set":
            flag.set()
        elif step == "clear":
            flag.clear()
        elif step == "wait":
            waiters.append(asyncio.ensure_future(flag.wait()))
        elif waiters:
            waiters.pop(0).cancel()
        for _ in range(3):
            await asyncio.sleep(0)
        done = sum(1 for w in waiters if w.done() and not w.cancelled())
        log.append((len(waiters), done, flag.is_set()))
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    return log


@given(script=flag_steps)
async def test_the_flag_behaves_as_asyncio_event(script: list[str]) -> None:
    assert await drive_flag(Flag(), script) == await drive_flag(asyncio.Event(), script)


async def test_the_flag_keeps_no_waiters_once_set() -> None:
    flag = Flag()
    waiter = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    assert flag._waiters is not None and len(flag._waiters) == 1
    flag.set()
    assert await asyncio.wait_for(waiter, 1) is True
    assert flag._waiters is None
