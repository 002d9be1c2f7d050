"""app.fanout's direct path, without a server: ``send_eagerly`` behaves as running the
coroutine in its own task would (model: ``asyncio.create_task``), except that it does the
part before the first wait at once; ``DirectSink`` writes nothing once its operation is over;
frames written to uvicorn's connection directly are byte for byte what websockets would
write, and only go to an open, writable connection."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any, Literal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from app.fanout import DirectSink, WsOperation, send_eagerly, text_frame, write_text_frame

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


async def settle(
    futures: list[asyncio.Future[int]], plan: list[Step], task: asyncio.Task[None] | None
) -> None:
    """Resolve each future the script waits on, in order, as its plan says (the i-th with
    ``i``, or failing with ``failed i``), until the script has ended."""
    waits = [step for step in plan if step in ("wait", "fail_wait")]
    for _ in range(1000):  # a script of at most 8 steps ends long before: fail, not hang
        if task is None or task.done():
            return
        await asyncio.sleep(0)
        for i, future in enumerate(futures):
            if not future.done():
                if waits[i] == "wait":
                    future.set_result(i)
                else:
                    future.set_exception(ValueError(f"failed {i}"))
                break
    raise AssertionError("the script did not end")


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
@example(["sleep"] * 7 + ["wait"])  # the future comes late: settle must wait for it
@example(["now", "wait", "sleep", "fail_wait", "raise"])
def test_send_eagerly_ends_as_a_task_would(plan: list[Step]) -> None:
    async def model() -> tuple[list[Any], str]:
        trace: list[Any] = []
        futures: list[asyncio.Future[int]] = []
        task = asyncio.create_task(script(plan, trace, futures))
        await settle(futures, plan, task)
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
        await settle(futures, plan, task)
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

    assert sink.send(sink.encode({"orderEvents": {"sequence": 7}})) is True
    [message] = sent
    assert message["type"] == "websocket.send"
    assert json.loads(message["text"]) == {
        "id": 'op "1"',
        "type": "next",
        "payload": {"data": {"orderEvents": {"sequence": 7}}},
    }

    del operations[operation.id]  # the client completed it
    assert sink.send(sink.encode({"orderEvents": {"sequence": 8}})) is False
    operations[operation.id] = operation
    operation.completed = True  # the server completed it
    assert sink.send(sink.encode({"orderEvents": {"sequence": 9}})) is False
    assert len(sent) == 1


@given(
    st.one_of(
        st.text(max_size=300),
        st.sampled_from([125, 126, 127, 65535, 65536, 70000]).map(
            lambda n: "é" * (n // 2) + "x" * (n % 2)
        ),
        st.sampled_from([125, 126, 65535, 65536]).map(lambda n: "x" * n),
    )
)
def test_text_frames_are_what_websockets_would_send(text: str) -> None:
    expected = Frame(Opcode.TEXT, text.encode()).serialize(mask=False)
    assert text_frame(text) == expected


def fake_connection(**state: Any) -> tuple[SimpleNamespace, list[bytes]]:
    written: list[bytes] = []
    writable = asyncio.Event()
    writable.set()
    conn = SimpleNamespace(state=State.OPEN, expect_continuation_frame=False, extensions=[])
    connection = SimpleNamespace(
        writable=writable,
        disconnected=False,
        close_sent=False,
        conn=conn,
        transport=SimpleNamespace(write=written.append),
    )
    for name, value in state.items():
        target = conn if hasattr(conn, name) else connection
        setattr(target, name, value)
    return connection, written


def test_a_frame_is_written_only_to_an_open_writable_connection() -> None:
    connection, written = fake_connection()
    assert write_text_frame(connection, '{"a":1}') is True
    assert written == [text_frame('{"a":1}')]

    paused, written = fake_connection()
    paused.writable.clear()  # the transport is over its high-water mark
    assert write_text_frame(paused, "x") is False
    assert written == []

    for closing in (
        {"disconnected": True},
        {"close_sent": True},
        {"state": State.CLOSING},
        {"expect_continuation_frame": True},
    ):
        connection, written = fake_connection(**closing)
        with pytest.raises(ConnectionError):
            write_text_frame(connection, "x")
        assert written == [], closing
