"""In-process locks on sets of keys (db/keylocks.py): all keys at once, no two holders of one
key, first come first served among requests that share a key, nothing left behind by a
cancelled waiter."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from db.keylocks import KeyLocks


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class Holder:
    """Holds ``keys`` in a task until ``release()``; ``granted`` once it holds them."""

    def __init__(self, locks: KeyLocks, keys: Iterable[Hashable], log: list[str], name: str):
        self.granted = asyncio.Event()
        self._release = asyncio.Event()
        self.task = asyncio.create_task(self._run(locks, list(keys), log, name))

    async def _run(self, locks: KeyLocks, keys: list[Hashable], log: list[str], name: str) -> None:
        async with locks.hold(keys):
            log.append(name)
            self.granted.set()
            await self._release.wait()

    async def release(self) -> None:
        self._release.set()
        await self.task


async def test_requests_without_a_shared_key_hold_at_once() -> None:
    locks, log = KeyLocks(), list[str]()
    a = Holder(locks, ["x", "y"], log, "a")
    b = Holder(locks, ["z"], log, "b")
    await _settle()
    assert log == ["a", "b"]
    assert locks.held == {"x", "y", "z"}
    await a.release()
    await b.release()
    assert locks.held == frozenset() and locks.waiting == 0


async def test_a_request_waits_for_every_key_it_shares() -> None:
    locks, log = KeyLocks(), list[str]()
    a = Holder(locks, ["x"], log, "a")
    b = Holder(locks, ["y"], log, "b")
    await _settle()
    c = Holder(locks, ["x", "y"], log, "c")
    await _settle()
    assert log == ["a", "b"] and locks.waiting == 1
    await a.release()
    await _settle()
    assert log == ["a", "b"], "granted with one of its keys still held"
    assert locks.held == {"y"}, "held a key while waiting for another"
    await b.release()
    await asyncio.wait_for(c.granted.wait(), 1)
    await c.release()


async def test_first_come_first_served_among_requests_that_share_a_key() -> None:
    """A later request for a free key still waits when an earlier waiter wants it: the
    earlier one is not starved by a stream of smaller requests."""
    locks, log = KeyLocks(), list[str]()
    a = Holder(locks, ["x"], log, "a")
    d = Holder(locks, ["z"], log, "d")
    await _settle()
    b = Holder(locks, ["x", "y"], log, "b")
    await _settle()
    c = Holder(locks, ["y"], log, "c")
    await _settle()
    assert log == ["a", "d"]
    await d.release()  # a release that frees nothing b wants
    await _settle()
    assert log == ["a", "d"], "jumped the queue on a key an earlier waiter wants"
    await a.release()
    await asyncio.wait_for(b.granted.wait(), 1)
    await _settle()
    assert log == ["a", "d", "b"]
    await b.release()
    await asyncio.wait_for(c.granted.wait(), 1)
    await c.release()
    assert log == ["a", "d", "b", "c"]


async def test_a_request_sharing_nothing_with_the_queue_goes_ahead() -> None:
    locks, log = KeyLocks(), list[str]()
    a = Holder(locks, ["x"], log, "a")
    await _settle()
    b = Holder(locks, ["x"], log, "b")
    d = Holder(locks, ["z"], log, "d")
    await _settle()
    assert log == ["a", "d"]
    for holder in (a, d, b):
        await holder.release()
    assert log == ["a", "d", "b"]


async def test_a_cancelled_waiter_leaves_no_claim_behind() -> None:
    locks, log = KeyLocks(), list[str]()
    a = Holder(locks, ["x"], log, "a")
    await _settle()
    b = Holder(locks, ["x", "y"], log, "b")
    await _settle()
    c = Holder(locks, ["y"], log, "c")
    await _settle()
    assert log == ["a"]
    b.task.cancel()
    await asyncio.wait_for(c.granted.wait(), 1)  # y was only held back by b
    assert locks.waiting == 0
    await a.release()
    await c.release()
    assert locks.held == frozenset()


async def test_a_waiter_cancelled_as_it_is_granted_releases_what_it_got() -> None:
    locks, log = KeyLocks(), list[str]()
    held = locks.hold(["x"])
    await held.__aenter__()
    b = Holder(locks, ["x"], log, "b")
    await _settle()
    await held.__aexit__(None, None, None)  # grants x to b without a turn of the loop
    assert locks.held == {"x"}
    b.task.cancel()  # before b could run
    await asyncio.gather(b.task, return_exceptions=True)
    assert log == []
    assert locks.held == frozenset() and locks.waiting == 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.frozensets(st.sampled_from("abcde"), min_size=1, max_size=3),
            st.integers(0, 3),  # turns of the loop before asking
            st.integers(0, 3),  # turns of the loop while holding
        ),
        min_size=1,
        max_size=25,
    )
)
def test_no_key_ever_has_two_holders_and_every_request_is_served(
    requests: list[tuple[frozenset[str], int, int]],
) -> None:
    async def scenario() -> None:
        locks = KeyLocks()
        holding: set[str] = set()
        served: list[int] = []

        async def one(i: int, keys: frozenset[str], before: int, hold: int) -> None:
            for _ in range(before):
                await asyncio.sleep(0)
            async with locks.hold(keys):
                assert holding.isdisjoint(keys)
                holding.update(keys)
                for _ in range(hold):
                    await asyncio.sleep(0)
                holding.difference_update(keys)
            served.append(i)

        await asyncio.wait_for(
            asyncio.gather(*(one(i, *request) for i, request in enumerate(requests))), 5
        )
        assert sorted(served) == list(range(len(requests)))
        assert locks.held == frozenset() and locks.waiting == 0

    asyncio.run(scenario())


async def test_keys_released_early_are_not_released_twice() -> None:
    locks, log = KeyLocks(), list[str]()
    async with locks.hold(["x"]) as held:
        waiter = Holder(locks, ["x"], log, "b")
        await _settle()
        assert log == []
        held.release()
        await asyncio.wait_for(waiter.granted.wait(), 1)
        assert locks.held == {"x"}  # b's now
    assert locks.held == {"x"}, "leaving the block let b's key go"
    await waiter.release()
    assert locks.held == frozenset()
