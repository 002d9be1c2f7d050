"""Fan-out: one execution per event and subscription document, and direct delivery.

**Shared execution.** When an order event reaches 5,000 subscribers of the same subscription
document, graphql-core would run the selection (``orderEvents { sequence type order { number
status } }``) 5,000 times over the same event: about 400 microseconds each here, most of a
fan-out's time. The result of that execution depends only on the event, the document and the
variables: which events a subscriber receives, and which fields it may select, are settled
before (by its filter and by the guard), and every field reads the same shared per-event
loaders. So the first subscriber to reach an event executes it and the others reuse the
result. The payload must be the same object for every subscriber (``schema/root.py``
converts each event row once); results are kept on the payload, so they go away with it.

**Direct delivery.** Even with a shared result, each subscriber's event then passed through
its own chain: its task woke up, our generator, graphql-core's response stream, Strawberry's
per-result handling and extension hooks, the protocol handler, Starlette's WebSocket, and
only then the socket write, about 55 microseconds a delivery in all. A subscriber that is
*idle* (its task waits for the next event with nothing queued and nothing in flight) needs
none of that: the hub (``app/broadcast.py``) writes the ``next`` message, with the data's
JSON encoded once per event and document, straight to the connection's ASGI ``send``. Order
is kept because an idle subscriber has sent everything before; anything that is not plain
data (errors, extensions) takes the ordinary path, as does every subscriber that is busy,
replaying, or whose previous direct write is still waiting for the socket to drain.

Direct delivery needs to know where an operation's messages go; the graphql-transport-ws
handler (``app/http.py``) provides that as a ``WsOperation`` while it runs the operation.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import struct
import weakref
from collections.abc import AsyncIterable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from graphql import ExecutionResult, GraphQLResolveInfoHelpers, OperationType
from starlette.types import Message, Send

from app.execution import PlainFieldPath

try:  # uvicorn's default WebSocket implementation when websockets is installed
    from uvicorn.protocols.websockets.websockets_sansio_impl import (
        WebSocketsSansIOProtocol as _SansIOProtocol,
    )
    from websockets.protocol import State

    _OPEN: Any = State.OPEN
except ImportError:  # pragma: no cover - another server or implementation: ASGI send only
    _SansIOProtocol = None  # type: ignore[assignment,misc]
    _OPEN = None

_RESULTS = "_ordergraph_results"

T = TypeVar("T")

ShareKey = tuple[int, str]
#: The shared result of one event for one document: a result, or a task that will have it.
Outcome = ExecutionResult | asyncio.Future[ExecutionResult]


def weak_async_helpers(executor: Any) -> GraphQLResolveInfoHelpers:
    """``executor``'s resolver helpers (``info.async_helpers``) without a reference to it.

    graphql-core makes them of the executor's bound methods and keeps them on the executor:
    a reference cycle in every operation, so the executor and everything it reaches (the
    request, its context and loaders, the variables, the result) outlived the request
    until the cyclic collector came by. Under load that was about 40 objects a request and
    one young-generation collection of tens of milliseconds, holding up every request,
    several times a second."""
    ref = weakref.ref(executor)

    def live() -> Any:
        found = ref()
        if found is None:
            raise RuntimeError("the operation's executor is gone")
        return found

    def gather(values: Any) -> Any:
        return live().gather_async_work(values)

    def track(values: Any) -> None:
        live().track_async_work(values)

    return GraphQLResolveInfoHelpers(gather=gather, track=track)


#: Every attribute graphql-core's and Strawberry's executors set (graphql-core 3.3): more
#: than CPython shares in an instance dictionary's keys (30), so each executor had a
#: dictionary of its own (1.6 KB; slots take 0.3 KB), and every idle subscriber keeps its
#: executor. One they add later goes to the instance dictionary, as before
#: (tests/api/test_websocket_memory.py notices).
EXECUTOR_ATTRIBUTES = (
    *("schema", "fragment_definitions", "fragments", "root_value", "context_value"),
    *("operation", "variable_values", "field_resolver", "type_resolver"),
    *("subscribe_field_resolver", "enable_early_execution", "hide_suggestions"),
    *("abort_signal", "hooks", "async_helpers", "middleware_manager", "error_propagation"),
    *("is_awaitable", "is_async_iterable", "collected_errors", "pending_incremental_futures"),
    *("background_futures", "async_work_finished_hook_task", "_relevant_sub_fields"),
    *("_stream_usages", "defer_usage_set", "groups", "tasks", "streams"),
    *("_initial_execution_plans", "_deferred_execution_plans", "operation_extensions"),
)


class SharedEventExecution(PlainFieldPath):
    """A graphql-core executor whose per-event executions are shared between subscribers
    of the same operation and variables, and which a query or mutation leaves to be freed
    as soon as it is done (``weak_async_helpers``)."""

    __slots__ = (*EXECUTOR_ATTRIBUTES, "_key")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._key: ShareKey | None = None
        super().__init__(*args, **kwargs)
        # A subscription keeps its executor for its whole life anyway: graphql-core's own
        # helpers there (smaller: every idle subscriber holds them), and its per-event
        # copies share them, as graphql-core means them to.
        if self.operation.operation is not OperationType.SUBSCRIPTION:
            self.async_helpers = weak_async_helpers(self)

    def share_key(self) -> ShareKey:
        if self._key is None:
            coerced = getattr(self.variable_values, "coerced", self.variable_values)
            variables = json.dumps(coerced, sort_keys=True, default=str)
            # ParserCache hands the same document object to every request with the same
            # text; the cache entry holds the operation, so its id cannot be reused.
            self._key = (id(self.operation), variables)
        return self._key

    def shared_outcome(self, payload: Any) -> Outcome:
        """This operation's result for ``payload``: executed by the first caller, reused
        by every later one."""
        results: dict[ShareKey, tuple[Any, Outcome]] = payload.__dict__.setdefault(_RESULTS, {})
        key = self.share_key()
        found = results.get(key)
        if found is not None:
            return found[1]
        executor = super().build_per_event_executor(payload)
        executed: Any = executor.execute_operation(None)
        # A pending result gets its own task: a subscriber that leaves must not cancel the
        # others' result.
        outcome: Outcome = (
            asyncio.ensure_future(executed) if executor.is_awaitable(executed) else executed
        )
        results[key] = (self.operation, outcome)  # the entry keeps the operation (and id) alive
        return outcome

    def build_per_event_executor(self, payload: Any) -> Any:
        if not hasattr(payload, "__dict__"):  # a payload we cannot annotate: as usual
            return super().build_per_event_executor(payload)
        # No executor copy at all: graphql-core only calls execute_operation() on it, and
        # copying an executor (what the base class does) costs more than the rest.
        return _SharedResult(self.shared_outcome(payload))

    def cancellable_iterable(self, iterable: AsyncIterable[T]) -> AsyncIterable[T]:
        # graphql-core calls this once per subscription, with the source stream the root
        # resolver returned and before the first item is asked for: the resolver's body runs
        # after this, in this task, and finds its executor here (``open_sink``).
        _subscription.set(self)
        return super().cancellable_iterable(iterable)


class _SharedResult:
    """Stands in for a per-event executor whose result is shared."""

    __slots__ = ("_shared",)

    def __init__(self, shared: Outcome) -> None:
        self._shared = shared

    def execute_operation(self, serially: bool | None = None) -> Any:
        shared = self._shared
        if isinstance(shared, asyncio.Future):
            if shared.done() and not shared.cancelled() and shared.exception() is None:
                return shared.result()
            return _shared(shared)
        return shared


async def _shared(shared: asyncio.Future[ExecutionResult]) -> ExecutionResult:
    return await asyncio.shield(shared)


def plain_data(outcome: Outcome | BaseException) -> Any:
    """The data of a finished outcome that can go out as it is (no errors, no extensions),
    else None."""
    if isinstance(outcome, asyncio.Future):
        if not outcome.done() or outcome.cancelled() or outcome.exception() is not None:
            return None
        outcome = outcome.result()
    if not isinstance(outcome, ExecutionResult) or outcome.errors or outcome.extensions:
        return None
    return outcome.data


# direct delivery --------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class WsOperation:
    """Where one graphql-transport-ws operation's messages go."""

    send: Send  # the connection's ASGI send
    operations: dict[str, Any]  # the handler's live operations, by id
    operation: Any  # Strawberry's Operation (``id``, ``completed``)
    dumps: Callable[[Any], str]  # JSON of a result's data (shared per data object)
    prefix: str = ""
    socket: Any = None  # uvicorn's connection, when frames can be written to it directly

    def __post_init__(self) -> None:
        self.prefix = f'{{"id":{json.dumps(self.operation.id)},"type":"next","payload":{{"data":'
        self.socket = frame_socket(self.send)


ws_operation: contextvars.ContextVar[WsOperation | None] = contextvars.ContextVar(
    "ws_operation", default=None
)
_subscription: contextvars.ContextVar[SharedEventExecution | None] = contextvars.ContextVar(
    "subscription_executor", default=None
)


class DirectSink:
    """One subscription's direct path: its executor, its payload factory, its socket."""

    __slots__ = ("executor", "group", "payload", "target")

    def __init__(
        self, target: WsOperation, executor: SharedEventExecution, payload: Callable[..., Any]
    ) -> None:
        self.target = target
        self.executor = executor
        self.payload = payload
        self.group = executor.share_key()  # subscribers with equal groups share results

    def outcome(self, *event: Any) -> Outcome:
        return self.executor.shared_outcome(self.payload(*event))

    def encode(self, data: Any) -> str:
        """The JSON of a result's data, as ``send`` takes it (the same for a whole group)."""
        return self.target.dumps(data)

    def send(self, encoded: str) -> bool | asyncio.Task[None]:
        """Write a ``next`` message with the ``encode``d data. False: the operation is over,
        nothing was sent; True: written; a task: the socket is draining and the write
        finishes there. Raises what the server's ``send`` raises (the client is gone)."""
        target = self.target
        op = target.operation
        if op.completed or target.operations.get(op.id) is not op:
            return False
        text = f"{target.prefix}{encoded}}}}}"
        if target.socket is not None and write_text_frame(target.socket, text):
            return True
        task = send_eagerly(target.send, {"type": "websocket.send", "text": text})
        return True if task is None else task


def open_sink(payload: Callable[..., Any]) -> DirectSink | None:
    """The direct path of the subscription whose resolver is running, if it has one:
    graphql-transport-ws operations do (when the view enables it); others (the legacy
    protocol, a subscription executed in-process) do not."""
    target = ws_operation.get()
    executor = _subscription.get()
    if target is None or executor is None:
        return None
    return DirectSink(target, executor, payload)


# Writing frames to uvicorn's connection itself. Through the ASGI send, one message costs
# about 12 microseconds of Python in uvicorn and websockets (an Event wait, state checks, a
# Frame object serialized through BytesIO) on top of the write; to 5,000 subscribers that is
# 60 ms. An unfragmented, unmasked, uncompressed text frame is two to ten header bytes and
# the UTF-8 text (RFC 6455, 5.2), so for uvicorn's websockets-sansio connections without
# extensions the hub writes it to the transport itself, after the checks uvicorn's send
# makes. Anything else (another server or implementation, compression, a paused transport,
# a closing connection) goes through the ASGI send.

_HEADER_SHORT = struct.Struct("!BB")
_HEADER_MEDIUM = struct.Struct("!BBH")
_HEADER_LONG = struct.Struct("!BBQ")
_FIN_TEXT = 0x81


def frame_socket(send: Send) -> Any:
    """The uvicorn connection behind ``send`` when text frames may be written to it
    directly, else None."""
    connection = getattr(send, "__self__", None)
    if _SansIOProtocol is None or not isinstance(connection, _SansIOProtocol):
        return None
    if connection.conn.extensions:  # permessage-deflate: frames need encoding
        return None
    return connection


def text_frame(text: str) -> bytes:
    data = text.encode()
    n = len(data)
    if n < 126:
        return _HEADER_SHORT.pack(_FIN_TEXT, n) + data
    if n < 65536:
        return _HEADER_MEDIUM.pack(_FIN_TEXT, 126, n) + data
    return _HEADER_LONG.pack(_FIN_TEXT, 127, n) + data


def write_text_frame(connection: Any, text: str) -> bool:
    """Write ``text`` as one frame to uvicorn's ``connection``. False when its transport is
    paused (the ASGI send waits for it to drain); raises when the connection is closing."""
    if not connection.writable.is_set():
        return False
    conn = connection.conn
    if (
        connection.disconnected
        or connection.close_sent
        or conn.state is not _OPEN
        or conn.expect_continuation_frame
    ):
        raise ConnectionError("the WebSocket is closing")
    connection.transport.write(text_frame(text))
    return True


def send_eagerly(send: Send, message: Message) -> asyncio.Task[None] | None:
    """Run ``send(message)`` now, in the caller, as far as it goes without waiting; None when
    it finished, else a task that finishes it (the socket's buffer was full). What Python
    3.12's eager tasks do, for one coroutine, without a task when none is needed. Raises
    what ``send`` raises before it first waits."""
    coro = cast("Coroutine[Any, Any, None]", send(message))
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_finish(coro, waiting_on))


async def _finish(coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    """Drive a started coroutine to its end, as its own task would have."""
    while True:
        try:
            if waiting_on is None:  # a bare yield (asyncio.sleep(0)): run again soon
                await asyncio.sleep(0)
            else:
                # What Task.__step does with a future its coroutine yielded: it was marked
                # as being awaited, and awaiting it again requires the mark cleared.
                waiting_on._asyncio_future_blocking = False
                await waiting_on
        except BaseException as exc:  # includes our own cancellation: pass it in
            try:
                waiting_on = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return
