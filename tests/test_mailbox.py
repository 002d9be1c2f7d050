"""app.broadcast.Mailbox: the per-subscriber FIFO, against collections.deque as the model."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.broadcast import Mailbox


@given(st.lists(st.one_of(st.integers(0, 10**6), st.none()), max_size=400), st.integers(0, 50))
def test_mailbox_behaves_as_a_bounded_fifo(ops: list[int | None], maxsize: int) -> None:
    # An int is a put of that item, None a get.
    box: Mailbox[int] = Mailbox(maxsize)
    model: deque[int] = deque()
    for op in ops:
        if op is None:
            if model:
                assert box.get_nowait() == model.popleft()
            else:
                with pytest.raises(asyncio.QueueEmpty):
                    box.get_nowait()
        elif maxsize and len(model) >= maxsize:
            with pytest.raises(asyncio.QueueFull):
                box.put_nowait(op)
        else:
            box.put_nowait(op)
            model.append(op)
        assert box.qsize() == len(model)
        assert box.empty() == (not model)
    assert [box.get_nowait() for _ in range(box.qsize())] == list(model)


async def test_get_waits_for_the_next_put_and_survives_cancellation() -> None:
    box: Mailbox[str] = Mailbox(2)
    waiting = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    box.put_nowait("a")
    assert await waiting == "a"

    cancelled = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    box.put_nowait("b")  # nobody waits: kept for the next get
    assert await box.get() == "b"
