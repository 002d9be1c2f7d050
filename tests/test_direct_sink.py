"""app.fanout's direct path, without a server: ``send_eagerly`` behaves as running the
coroutine in its own task would (model: ``asyncio.create_task``), except that it does the
part before the first wait at once; ``DirectSink`` writes nothing once its operation is over.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.fanout import DirectSink, WsOperation, send_eagerly

Step = Literal["now", "sleep", "wait", "fail_wait", "raise"]
steps = st.lists(st.sampled_from(["now", "sleep", "wait", "fail_wait", "raise"]), max_size=8)


async def script(plan: list[Step], trace: list[Any], futures: list[asyncio.Future[int]]) -> None:
    loop = asyncio.get_running_loop()
    for i, step in enumerate(plan):
        if step == "now":
            trace.append(("now", i))
        elif step == "sleep":
            await asyncio.sleep(0)
            trace.append(("slept", i))
        elif step == "raise":
            raise KeyError(i)
        else:
            future: asyncio.Future[int] = loop.create_future()
            futures.append(future)
            try:
                trace.append(("got", await future))
            except ValueError as exc:
                trace.append(("caught", str(exc)))


async def settle(futures: list[asyncio.Future[int]], plan: list[Step]) -> None:
    """Resolve each future the script waits on, in order, as its plan says."""
    waits = [step for step in plan if step in ("wait", "fail_wait")]
    for n in range(len(waits) + 5):
        await asyncio.sleep(0)
        pending = [f for f in futures if not f.done()]
        if pending:
            kind = waits[futures.index(pending[0])]
            if kind == "wait":
                pending[0].set_result(n)
            else:
                pending[0].set_exception(ValueError(f"failed {n}"))


async def outcome(task: asyncio.Task[None] | None) -> str:
    if task is None:
        return "done"
    try:
        await task
    except KeyError as exc:
        return f"raised {exc}"
    return "done"


@settings(deadline=None)
@given(steps)
def test_send_eagerly_ends_as_a_task_would(plan: list[Step]) -> None:
    async def model() -> tuple[list[Any], str]:
        trace: list[Any] = []
        futures: list[asyncio.Future[int]] = []
        task = asyncio.create_task(script(plan, trace, futures))
        await settle(futures, plan)
        return trace, await outcome(task)

    async def eager() -> tuple[list[Any], str, list[Any]]:
        trace: list[Any] = []
        futures: list[asyncio.Future[int]] = []

        async def send(_message: Any) -> None:
            await script(plan, trace, futures)

        try:
            task = send_eagerly(send, {})
        except KeyError as exc:  # raised before its first wait: raised here
            return trace, f"raised {exc}", list(trace)
        at_once = list(trace)
        await settle(futures, plan)
        return trace, await outcome(task), at_once

    expected_trace, expected_outcome = asyncio.run(model())
    trace, result, at_once = asyncio.run(eager())
    assert (trace, result) == (expected_trace, expected_outcome)
    # Everything up to the first wait ran inside send_eagerly itself.
    first_wait = next((i for i, s in enumerate(plan) if s != "now"), len(plan))
    assert at_once == [("now", i) for i in range(first_wait)]


async def test_cancelling_the_finishing_task_cancels_the_send() -> None:
    gate = asyncio.Event()
    seen: list[str] = []

    async def send(_message: Any) -> None:
        try:
            await gate.wait()
            seen.append("sent")
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    task = send_eagerly(send, {})
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    await asyncio.sleep(0)
    assert seen == ["cancelled"]


class FakeOperation:
    def __init__(self, op_id: str) -> None:
        self.id = op_id
        self.completed = False


class FakeExecutor:
    def share_key(self) -> tuple[int, str]:
        return (1, "{}")


async def test_a_sink_writes_next_messages_only_while_its_operation_lives() -> None:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    operation = FakeOperation('op "1"')
    operations: dict[str, Any] = {operation.id: operation}
    target = WsOperation(send, operations, operation, lambda data: json.dumps(data))
    sink = DirectSink(target, FakeExecutor(), lambda *event: event)  # type: ignore[arg-type]

    assert sink.send({"orderEvents": {"sequence": 7}}) is True
    [message] = sent
    assert message["type"] == "websocket.send"
    assert json.loads(message["text"]) == {
        "id": 'op "1"',
        "type": "next",
        "payload": {"data": {"orderEvents": {"sequence": 7}}},
    }

    del operations[operation.id]  # the client completed it
    assert sink.send({"orderEvents": {"sequence": 8}}) is False
    operations[operation.id] = operation
    operation.completed = True  # the server completed it
    assert sink.send({"orderEvents": {"sequence": 9}}) is False
    assert len(sent) == 1
