"""Live order events: our own small layer over broadcaster.

broadcaster 0.3.1 alone is not enough (see shared STACK-NOTES): after a Redis drop its
listener dies silently, its per-subscriber queues are unbounded, and racing first
subscribers can miss messages. So:

* The process holds **one** upstream subscription (``EventHub``), watched by a heartbeat:
  it publishes a ping every ``HEARTBEAT_SECONDS`` and expects it back; a failed publish or a
  missing ping tears the connection down and reconnects with backoff. ``/readyz`` reports it.
* Broadcast messages are thin: ``{"upto": N}`` says "events up to sequence N are committed".
  Sequences are dense and follow commit order (``db.uow``), so the hub reads the events it
  has not seen yet from the event log, in order, and fans them out locally. A lost, late or
  duplicated message therefore never loses, reorders or duplicates an event; after a
  reconnect the hub simply catches up from the log.
* Each local subscriber has a bounded queue. On overflow its queue is dropped and it
  resynchronises from the event log from its own last sequence: memory stays bounded and
  nothing is skipped.
* A subscriber that is idle (waiting, nothing queued, nothing in flight) and can be written
  to directly (``app/fanout.py``) gets the event's ``next`` message from the hub itself, with
  the result executed and encoded once for all subscribers of the same document.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from broadcaster import Broadcast
from broadcaster._backends.redis import RedisBackend
from sqlalchemy.engine import make_url

from app.fanout import DirectSink, Outcome, open_sink, plain_data
from app.loaders import Loaders
from db.database import Database
from db.models import OrderEvent
from resolvers.events import EventFilterArgs, events_after, last_sequence

log = logging.getLogger("ordergraph.broadcast")

CHANNEL_PREFIX = "ordergraph.order-events"


def channel_for(database_url: str) -> str:
    """The broadcast channel of one deployment: named after its database, so deployments
    (or test runs, or a benchmark) that share one Redis never hear each other's
    announcements. Redis Pub/Sub ignores the database number; the name must differ."""
    url = make_url(database_url)
    identity = f"{url.get_backend_name()}://{url.host or ''}:{url.port or ''}/{url.database or ''}"
    return f"{CHANNEL_PREFIX}.{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


HEARTBEAT_SECONDS = 1.0
HEARTBEAT_MISSES = 3
RECONNECT_MAX_SECONDS = 5.0
READ_BATCH = 500

Delivery = tuple[OrderEvent, Loaders]


T = TypeVar("T")


class Mailbox(Generic[T]):
    """A bounded FIFO for one consumer, with the part of ``asyncio.Queue``'s interface the
    hub uses. ``asyncio.Queue`` costs about 3 KiB per instance (three deques and an Event);
    this is one list and, only while its consumer waits, one future: a server holding
    thousands of idle subscribers keeps thousands of these."""

    __slots__ = ("_head", "_items", "_waiter", "maxsize")

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._items: list[T] = []
        self._head = 0
        self._waiter: asyncio.Future[None] | None = None

    def qsize(self) -> int:
        return len(self._items) - self._head

    def empty(self) -> bool:
        return self._head >= len(self._items)

    def put_nowait(self, item: T) -> None:
        if self.maxsize > 0 and self.qsize() >= self.maxsize:
            raise asyncio.QueueFull
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def waiting(self) -> bool:
        """Its consumer is waiting in ``get`` and nothing is queued."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and self._head >= len(self._items)

    def get_nowait(self) -> T:
        if self.empty():
            raise asyncio.QueueEmpty
        item = self._items[self._head]
        self._head += 1
        if self._head >= len(self._items):
            self._items.clear()
            self._head = 0
        elif self._head > 64 and self._head * 2 > len(self._items):
            del self._items[: self._head]
            self._head = 0
        return item

    async def get(self) -> T:
        while self.empty():
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self.get_nowait()


Item = tuple[OrderEvent, int, Loaders]


@dataclass(slots=True, eq=False)
class _Subscriber:
    filter: EventFilterArgs
    queue: Mailbox[Item | None]
    last: int = 0  # the last sequence it has been given
    overflowed: bool = False
    direct: DirectSink | None = None
    sending: asyncio.Task[None] | None = None  # a direct write waiting for the socket

    def _sent(self, _task: asyncio.Task[None]) -> None:
        self.sending = None


@dataclass(eq=False)
class _DirectGroup:
    """The idle subscribers of one event and one document, and that document's result."""

    sink: DirectSink  # the first subscriber's: executes and encodes for the group
    outcome: Outcome | BaseException
    subscribers: list[_Subscriber] = field(default_factory=list)


@dataclass
class HubStatus:
    connected: bool = False
    last_error: str | None = None
    reconnects: int = 0
    position: int = 0
    subscribers: int = 0
    delivered_direct: int = 0  # events the hub wrote to subscribers' sockets itself
    delivered_queued: int = 0  # events handed to subscribers' own tasks
    extra: dict[str, Any] = field(default_factory=dict)


class EventHub:
    def __init__(
        self,
        db: Database,
        url: str,
        *,
        queue_size: int = 1000,
        loaders_factory: Callable[[Database], Loaders] = Loaders,
    ) -> None:
        self.db = db
        self.url = url
        self.channel = channel_for(db.url)
        self.queue_size = queue_size
        self._loaders_factory = loaders_factory
        self._subscribers: set[_Subscriber] = set()
        self.position = 0  # every event up to here has been handed to local subscribers
        self._wanted = 0  # highest sequence announced so far
        self._wake = asyncio.Event()
        self._broadcast: Broadcast | None = None
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._nonce = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._last_ping = 0.0
        self.status = HubStatus()

    # lifecycle -------------------------------------------------------------------------

    async def start(self, connect_timeout: float = 10.0) -> None:
        self.position = self._wanted = await last_sequence(self.db)
        self._tasks = [
            asyncio.create_task(self._connection_loop(), name="hub-connection"),
            asyncio.create_task(self._delivery_loop(), name="hub-delivery"),
        ]
        try:
            await asyncio.wait_for(self._connected.wait(), connect_timeout)
        except TimeoutError:
            log.warning(
                "broadcast %s not reachable yet; retrying in the background", _redact(self.url)
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        for sub in list(self._subscribers):
            while not sub.queue.empty():  # a full queue must not stop the shutdown
                sub.queue.get_nowait()
            sub.queue.put_nowait(None)

    @property
    def ready(self) -> bool:
        return self._connected.is_set()

    # publishing (the outbox relay calls this after commit) ------------------------------

    async def announce(self, upto: int) -> None:
        """Tell every process that events up to ``upto`` are committed."""
        broadcast = self._broadcast
        if broadcast is None or not self.ready:
            raise ConnectionError("broadcast is not connected")
        await broadcast.publish(self.channel, json.dumps({"upto": upto}))

    # subscribing ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscribe(
        self,
        f: EventFilterArgs,
        after: int | None,
        *,
        payload: Callable[[OrderEvent, Loaders], Any] | None = None,
    ) -> AsyncIterator[AsyncIterator[Delivery]]:
        """Events matching ``f``: the stored ones after ``after`` first (when given), then
        live ones, each exactly once and in sequence order.

        ``payload`` makes the GraphQL payload of an event (the same object for every
        subscriber); with it, the hub may deliver live events to this subscription
        directly, without waking its task (``app/fanout.py``)."""
        sub = _Subscriber(f, Mailbox(self.queue_size))
        if payload is not None:
            sub.direct = open_sink(payload)
        # Register before reading the log, so no event can fall between replay and live.
        self._subscribers.add(sub)
        sub.last = self.position if after is None else after
        try:
            yield self._stream(sub)
        finally:
            self._subscribers.discard(sub)

    async def _stream(self, sub: _Subscriber) -> AsyncIterator[Delivery]:
        # Stored events up to where the hub stands now; later ones are already queued.
        async for delivery in self._read(sub.filter, sub.last, self.position):
            sub.last = delivery[0].sequence
            yield delivery
        while True:
            if sub.overflowed:
                sub.overflowed = False
                while not sub.queue.empty():
                    sub.queue.get_nowait()
                log.info("slow subscriber overflowed; resynchronising from sequence %s", sub.last)
                await self._drained(sub)
                async for delivery in self._read(sub.filter, sub.last, self.position):
                    sub.last = delivery[0].sequence
                    yield delivery
                continue
            item = await sub.queue.get()
            await self._drained(sub)
            if item is None:
                if sub.overflowed:
                    continue
                return  # the hub is stopping
            event, _customer, loaders = item
            if event.sequence <= sub.last:
                continue
            sub.last = event.sequence
            yield event, loaders

    @staticmethod
    async def _drained(sub: _Subscriber) -> None:
        """Wait for a direct write still in flight, so messages keep their order."""
        sending = sub.sending
        if sending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(sending)

    async def _read(self, f: EventFilterArgs, after: int, upto: int) -> AsyncIterator[Delivery]:
        while after < upto:
            rows = await events_after(self.db, after, f, up_to=upto, limit=READ_BATCH)
            if not rows:
                return
            loaders = self._loaders_factory(self.db)
            for event, _customer in rows:
                yield event, loaders
            after = rows[-1][0].sequence

    # the connection ---------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._connect_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any backend failure: report, back off, reconnect
                self.status.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("broadcast connection lost: %s", self.status.last_error)
            self._connected.clear()
            self.status.connected = False
            self._broadcast = None
            self.status.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)

    async def _connect_once(self) -> None:
        broadcast = _make_broadcast(self.url)
        await broadcast.connect()
        try:
            async with broadcast.subscribe(self.channel) as upstream:
                self._broadcast = broadcast
                self._last_ping = time.monotonic()
                heartbeat = asyncio.create_task(self._heartbeat(broadcast))
                try:
                    self._connected.set()
                    self.status.connected = True
                    self.status.last_error = None
                    # Catch up on whatever was committed while we were away.
                    self._wanted = max(self._wanted, await last_sequence(self.db))
                    self._wake.set()
                    while True:
                        if heartbeat.done():
                            heartbeat.result()  # raises what broke it
                        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow
                        # a cancellation that arrives as a message does, and then stop()
                        # would wait for a loop that never ends.
                        message = None
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(HEARTBEAT_SECONDS):
                                message = await upstream.get()
                        if message is not None:
                            self._on_message(message.message)
                        if (
                            time.monotonic() - self._last_ping
                            > HEARTBEAT_SECONDS * HEARTBEAT_MISSES
                        ):
                            raise ConnectionError("broadcast heartbeat lost")
                finally:
                    heartbeat.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await heartbeat
        finally:
            self._broadcast = None
            self._connected.clear()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(broadcast.disconnect(), 2)

    async def _heartbeat(self, broadcast: Broadcast) -> None:
        while True:
            async with asyncio.timeout(HEARTBEAT_SECONDS * 2):
                await broadcast.publish(self.channel, json.dumps({"ping": self._nonce}))
            await asyncio.sleep(HEARTBEAT_SECONDS)

    def _on_message(self, raw: str) -> None:
        try:
            data = json.loads(raw)
        except ValueError:
            log.warning("ignoring a malformed broadcast message")
            return
        if data.get("ping") == self._nonce:
            self._last_ping = time.monotonic()
        upto = data.get("upto")
        if isinstance(upto, int) and upto > self._wanted:
            self._wanted = upto
            self._wake.set()

    # delivery ---------------------------------------------------------------------------

    async def _delivery_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._deliver_up_to(self._wanted)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the event log failed; retrying")
                await asyncio.sleep(0.5)
                self._wake.set()

    async def _deliver_up_to(self, upto: int) -> None:
        while self.position < upto:
            if not self._subscribers:
                self.position = upto  # nobody listens here: nothing to read
                return
            rows = await events_after(
                self.db, self.position, EventFilterArgs(), up_to=upto, limit=READ_BATCH
            )
            if not rows:
                # Announced but not visible yet (replica lag would do this): try again soon.
                await asyncio.sleep(0.05)
                self._wake.set()
                return
            await self._fan_out(rows, self._loaders_factory(self.db))

    async def _fan_out(self, rows: list[tuple[OrderEvent, int]], loaders: Loaders) -> None:
        """Hand ``rows`` to every matching subscriber: idle ones with a direct path are
        grouped per event and document, the rest get the event in their queue."""
        direct: list[tuple[Item, dict[Hashable, _DirectGroup]]] = []
        for event, customer_id in rows:
            item = (event, customer_id, loaders)
            groups: dict[Hashable, _DirectGroup] = {}
            for sub in self._subscribers:
                if sub.overflowed or not sub.filter.matches(event, customer_id):
                    continue
                sink = sub.direct
                # Idle: everything before has been sent, so this event may go directly.
                if sink is not None and sub.sending is None and sub.queue.waiting():
                    group = groups.get(sink.group)
                    if group is None:
                        group = _DirectGroup(sink, _outcome(sink, event, loaders))
                        groups[sink.group] = group
                    group.subscribers.append(sub)
                else:
                    self._enqueue(sub, item)
            if groups:
                direct.append((item, groups))
            # Advanced per event, with no await in between: a subscriber that registers
            # later replays from the log up to here, so it misses nothing in this batch.
            self.position = event.sequence
        if direct:
            await self._send_direct(direct)

    async def _send_direct(self, direct: list[tuple[Item, dict[Hashable, _DirectGroup]]]) -> None:
        pending = {
            group.outcome
            for _item, groups in direct
            for group in groups.values()
            if isinstance(group.outcome, asyncio.Future) and not group.outcome.done()
        }
        if pending:
            await asyncio.wait(pending)
        # A subscriber that once in this batch took the queue keeps to it, behind that event.
        queued: set[_Subscriber] = set()
        sent_directly = 0
        for item, groups in direct:
            sequence = item[0].sequence
            for group in groups.values():
                encoded = _encoded(group)
                for sub in group.subscribers:
                    sink = sub.direct
                    if (
                        encoded is not None
                        and sink is not None
                        and sub.sending is None
                        and sub not in queued
                    ):
                        try:
                            sent = sink.send(encoded)
                        except Exception:  # the client is gone; its own task will see it
                            sub.direct = None
                        else:
                            if sent is False:
                                continue  # the operation is over
                            sub.last = sequence
                            sent_directly += 1
                            if sent is not True:
                                sub.sending = sent
                                sent.add_done_callback(sub._sent)
                            continue
                    queued.add(sub)
                    self._enqueue(sub, item)
        self.status.delivered_direct += sent_directly

    def _enqueue(self, sub: _Subscriber, item: Item) -> None:
        if sub.overflowed:
            return
        try:
            sub.queue.put_nowait(item)
            self.status.delivered_queued += 1
        except asyncio.QueueFull:
            sub.overflowed = True
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.queue.put_nowait(None)  # wake the consumer so it resynchronises

    def describe(self) -> HubStatus:
        self.status.position = self.position
        self.status.subscribers = len(self._subscribers)
        return self.status


def _encoded(group: _DirectGroup) -> str | None:
    """The group's data as JSON when it can go out directly; None sends it the ordinary way
    (which reports what went wrong), never an exception: the batch's position has moved on."""
    data = plain_data(group.outcome)
    if data is None:
        return None
    try:
        return group.sink.encode(data)
    except Exception:
        return None


def _outcome(sink: DirectSink, event: OrderEvent, loaders: Loaders) -> Outcome | BaseException:
    try:
        return sink.outcome(event, loaders)
    except Exception as exc:  # the ordinary path will meet (and report) it again
        return exc


class _RedisBackend(RedisBackend):
    """broadcaster's Redis backend, with its listener released only once SUBSCRIBE is done.

    Upstream sets the ready flag before subscribing; redis-py records the channel only after
    sending the command, so the listener can start, find no channel, stop listening and wait
    for a flag that is never set again: the subscription then receives nothing at all.
    """

    async def subscribe(self, channel: str) -> None:
        await self._pubsub.subscribe(channel)
        self._ready.set()

    async def disconnect(self) -> None:
        """The listener first, then the connections. Upstream closes the pub/sub connection
        first and only then asks the listener to stop: a listener still reading meets the
        closed connection, and redis-py's retry opens a new one, which nothing closes."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
        await self._pubsub.aclose()
        await self._conn.aclose()


def _make_broadcast(url: str) -> Broadcast:
    if url.startswith(("redis://", "rediss://")):
        return Broadcast(backend=_RedisBackend(url))
    return Broadcast(url)


def _redact(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
