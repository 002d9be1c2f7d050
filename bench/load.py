"""The load process: ``python -m bench.load <scenario> <json-config>``; prints one JSON
object with the results on stdout (diagnostics on stderr).

Scenarios:

- ``http``: a closed loop of ``concurrency`` keep-alive connections sending requests of the
  configured ``mix`` (e.g. ``[["place", 1]]``) for ``warmup`` + ``duration`` seconds.
  Throughput and latency count only responses completed inside the measurement window;
  ``ok_total`` counts every successful response (for the consistency check).
- ``fanout``: ``subscribers`` WebSocket connections subscribed to ``orderEvents``, the
  servers' RSS before and after, then rounds of: place an order (untimed; everyone must
  get its event), confirm it (timed from sending the mutation until each subscriber has the
  CONFIRMED event). Round 0 is a warm-up.
- ``mixed``: ``subscribers`` live subscriptions, then the ``http`` loop with the mix; every
  subscriber must receive every event, in order, with no gap.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.httpclient import HttpConnection, HttpError
from bench.queries import ORDER_EVENTS, count_fields
from bench.stats import summary_ms
from bench.system import (
    connection_owner,
    cpu_seconds,
    established_connections,
    raise_file_limit,
    rss_bytes,
)
from bench.workload import RequestKind, confirm_body, make_kind, place_body
from bench.wsclient import SubscriptionClient, open_subscriptions

CONNECT_STAGGER_S = 0.002
SEQUENCE = re.compile(rb'"sequence":(\d+)')


def log(message: str) -> None:
    print(f"[load] {message}", file=sys.stderr, flush=True)


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# The closed HTTP loop --------------------------------------------------------------------


@dataclass
class KindStats:
    ok: int = 0
    failed: int = 0
    ok_total: int = 0
    failed_total: int = 0
    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)

    def report(self, duration: float) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failed": self.failed,
            "rate": round(self.ok / duration, 2) if duration else 0.0,
            "latency_ms": summary_ms(self.latencies),
            "ok_total": self.ok_total,
            "failed_total": self.failed_total,
            "failures": dict(self.failures),
            "failure_samples": self.samples,
        }


def judge(kind: RequestKind, status: int, raw: bytes) -> str | None:
    if status != 200:
        return f"HTTP {status}"
    try:
        document = json.loads(raw)
    except ValueError:
        return "response is not JSON"
    if document.get("errors"):
        first = document["errors"][0]
        code = (first.get("extensions") or {}).get("code", "")
        return f"errors: {code} {str(first.get('message'))[:80]}"
    data = document.get("data")
    if not isinstance(data, dict):
        return "no data"
    return kind.check(data)


async def open_balanced(
    host: str, port: int, authorization: str, n: int, server_pids: list[int]
) -> list[HttpConnection]:
    """``n`` keep-alive connections, as evenly spread over the server's processes as a load
    balancer would. uvicorn's workers accept from one shared socket, and which one wins a
    connection is up to the kernel: a burst of connects went to one worker (31 of 32, or
    8 of 8), and even connects 2 ms apart sometimes all did, which measures one process
    instead of two. So each connection is looked up (which worker holds its other end);
    one that landed on a worker with its share already is kept aside and closed at the end,
    and the next is tried. Where each connection landed is reported with the results."""

    async def connected() -> HttpConnection:
        conn = HttpConnection(host, port, {"Authorization": authorization})
        await conn.connect()
        return conn

    kept: list[HttpConnection] = []
    extra: list[HttpConnection] = []
    share = -(-n // max(len(server_pids), 1))
    landed = dict.fromkeys(server_pids, 0)
    for _ in range(20 * n):
        if len(kept) == n:
            break
        conn = await connected()
        await asyncio.sleep(CONNECT_STAGGER_S)
        owner = await _owner(server_pids, port, conn.local_port) if len(server_pids) > 1 else None
        if owner is None or landed[owner] < share:
            kept.append(conn)
            if owner is not None:
                landed[owner] += 1
        else:
            extra.append(conn)
    for conn in extra:
        await conn.close()
    while len(kept) < n:  # the kernel would not spread them: measure what there is
        kept.append(await connected())
    return kept


async def _owner(server_pids: list[int], port: int, local_port: int) -> int | None:
    for _ in range(100):  # until a worker has accepted it (a busy one may take a while)
        owner = connection_owner(server_pids, port, local_port)
        if owner is not None:
            return owner
        await asyncio.sleep(0.005)
    return None


async def closed_loop(
    host: str,
    port: int,
    authorization: str,
    mix: list[tuple[RequestKind, float]],
    concurrency: int,
    warmup: float,
    duration: float,
    seed: int = 1,
    server_pids: list[int] | None = None,
) -> dict[str, Any]:
    stats = {kind.name: KindStats() for kind, _ in mix}
    kinds = [kind for kind, _ in mix]
    weights = [weight for _, weight in mix]
    connections = await open_balanced(host, port, authorization, concurrency, server_pids or [])
    start = time.monotonic()
    window_start = start + warmup
    window_end = window_start + duration
    cpu_marks: dict[str, float] = {}
    per_worker: dict[int, int] = {}

    async def mark_cpu() -> None:
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        cpu_marks["start"] = cpu_self()
        await asyncio.sleep(max(0.0, window_start + duration / 2 - time.monotonic()))
        if server_pids:
            per_worker.update(established_connections(server_pids, port))
        await asyncio.sleep(max(0.0, window_end - time.monotonic()))
        cpu_marks["end"] = cpu_self()

    async def worker(index: int) -> None:
        rng = random.Random(seed * 10_000 + index)
        conn = connections[index]
        try:
            while time.monotonic() < window_end:
                kind = kinds[0] if len(kinds) == 1 else rng.choices(kinds, weights)[0]
                body = kind.body(rng)
                t0 = time.monotonic()
                try:
                    status, raw = await conn.post("/graphql", body)
                    reason = judge(kind, status, raw)
                except HttpError as exc:
                    reason, raw = f"connection: {exc}"[:120], b""
                t1 = time.monotonic()
                s = stats[kind.name]
                in_window = window_start <= t1 < window_end
                if reason is None:
                    s.ok_total += 1
                    if in_window:
                        s.ok += 1
                        s.latencies.append(t1 - t0)
                else:
                    s.failed_total += 1
                    if in_window:
                        s.failed += 1
                    s.failures[reason] += 1
                    if len(s.samples) < 5:
                        s.samples.append(f"{reason} :: {raw[:300]!r}")
        finally:
            await conn.close()

    cpu_task = asyncio.create_task(mark_cpu())
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    await cpu_task
    load_cpu = cpu_marks.get("end", 0.0) - cpu_marks.get("start", 0.0)
    return {
        "concurrency": concurrency,
        "warmup_s": warmup,
        "duration_s": duration,
        "kinds": {name: s.report(duration) for name, s in stats.items()},
        "load_cpu_share": round(load_cpu / duration, 3),
        # Which server process holds how many of the connections (mid-window, all kinds).
        "connections_per_worker": {str(pid): n for pid, n in per_worker.items()},
    }


async def run_http(cfg: dict[str, Any]) -> dict[str, Any]:
    mix = [(make_kind(name, cfg), float(weight)) for name, weight in cfg["mix"]]
    result = await closed_loop(
        cfg["host"],
        cfg["port"],
        cfg["authorization"],
        mix,
        int(cfg["concurrency"]),
        float(cfg["warmup"]),
        float(cfg["duration"]),
        int(cfg.get("seed", 1)),
        [int(p) for p in cfg.get("server_pids", [])],
    )
    for kind, _ in mix:
        extra = result["kinds"][kind.name]
        if hasattr(kind, "numbers"):
            extra["distinct_orders"] = len(kind.numbers)
        sample = getattr(kind, "sample", None)
        if sample is not None:
            extra["response_fields"] = count_fields(sample)
    return result


# Fan-out -----------------------------------------------------------------------------------


class Arrivals:
    """Every ``next`` message each subscriber got (arrival time, raw payload), and a future
    completed once every subscriber holds at least ``target`` messages."""

    def __init__(self, size: int) -> None:
        self.times: list[list[float]] = [[] for _ in range(size)]
        self.payloads: list[list[bytes]] = [[] for _ in range(size)]
        self.target = 0
        self.expected = 0
        self.reached = 0
        self.done: asyncio.Future[None] | None = None

    def on_next(self, client: SubscriptionClient, now: float, payload: bytes) -> None:
        self.times[client.index].append(now)
        self.payloads[client.index].append(payload)
        if client.next_count == self.target:
            self.reached += 1
            if self.reached >= self.expected and self.done is not None and not self.done.done():
                self.done.set_result(None)

    def expect(self, target: int, clients: list[SubscriptionClient]) -> asyncio.Future[None]:
        self.target = target
        self.expected = len(clients)
        self.reached = sum(1 for c in clients if c.next_count >= target)
        self.done = asyncio.get_running_loop().create_future()
        if self.reached >= self.expected:
            self.done.set_result(None)
        return self.done


async def _wait(future: asyncio.Future[None], seconds: float) -> bool:
    try:
        await asyncio.wait_for(asyncio.shield(future), seconds)
        return True
    except TimeoutError:
        return False


async def _graphql(conn: HttpConnection, body: bytes) -> dict[str, Any]:
    status, raw = await conn.post("/graphql", body)
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {raw[:300]!r}")
    document: dict[str, Any] = json.loads(raw)
    if document.get("errors"):
        raise RuntimeError(f"errors: {document['errors']}")
    return document["data"]  # type: ignore[no-any-return]


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) or 0.0 for pid in pids)


def _rss(pids: list[int]) -> int:
    return sum(rss_bytes(pid) or 0 for pid in pids)


async def run_fanout(cfg: dict[str, Any]) -> dict[str, Any]:
    host, port, auth = cfg["host"], cfg["port"], cfg["authorization"]
    count = int(cfg["subscribers"])
    pids = [int(p) for p in cfg["server_pids"]]
    timeout = float(cfg.get("event_timeout", 30))
    rng = random.Random(int(cfg.get("seed", 1)))
    arrivals = Arrivals(count)

    rss_before = _rss(pids)
    t0 = time.monotonic()
    clients, connect_errors = await open_subscriptions(
        host, port, auth, ORDER_EVENTS, count, arrivals.on_next, parallel=int(cfg["parallel"])
    )
    connect_seconds = time.monotonic() - t0
    log(f"{len(clients)}/{count} subscribed in {connect_seconds:.1f}s")
    subscribed = len(clients)
    if subscribed < count:
        for client in clients:
            client.close()
        return {
            "subscribers": count,
            "subscribed": subscribed,
            "connect_seconds": round(connect_seconds, 2),
            "connect_errors": len(connect_errors),
            "connect_error_samples": connect_errors[:5],
            "problems": [f"only {subscribed} of {count} subscriptions started"],
        }
    await asyncio.sleep(float(cfg.get("settle", 2)))
    rss_idle = _rss(pids)
    per_worker = established_connections(pids, port)

    http = HttpConnection(host, port, {"Authorization": auth})
    await http.connect()
    rounds: list[dict[str, Any]] = []
    confirmed: list[tuple[str, float]] = []  # (order number, time the mutation was sent)
    problems: list[str] = []
    try:
        for r in range(int(cfg["rounds"]) + 1):
            done = arrivals.expect(2 * r + 1, clients)
            placed = await _graphql(
                http, place_body(rng.sample(cfg["skus"], 3), rng.choice(cfg["customer_ids"]))
            )
            order = placed["placeOrder"]["order"]
            if not await _wait(done, timeout):
                problems.append(f"round {r}: {arrivals.reached}/{subscribed} got the PLACED event")
            done = arrivals.expect(2 * r + 2, clients)
            load_cpu0, server_cpu0 = cpu_self(), _cpu(pids)
            sent = time.monotonic()
            confirmation = await _graphql(http, confirm_body(order["id"]))
            answered = time.monotonic()
            complete = await _wait(done, timeout)
            finished = time.monotonic()
            load_cpu, server_cpu = cpu_self() - load_cpu0, _cpu(pids) - server_cpu0
            status = (confirmation["confirmOrder"]["order"] or {}).get("status")
            if status != "CONFIRMED":
                problems.append(f"round {r}: confirmOrder answered {confirmation}")
            confirmed.append((order["number"], sent))
            rounds.append(
                {
                    "round": r,
                    "warmup": r == 0,
                    "mutation_ms": round((answered - sent) * 1000, 2),
                    "all_delivered_ms": round((finished - sent) * 1000, 2) if complete else None,
                    "reached": arrivals.reached,
                    # CPU spent meanwhile: is the client keeping up, is the server busy?
                    "load_cpu_ms": round(load_cpu * 1000, 1),
                    "server_cpu_ms": round(server_cpu * 1000, 1),
                }
            )
            await asyncio.sleep(0.2)
        rss_after = _rss(pids)
    finally:
        await http.close()
        for client in clients:
            client.close()

    # Match each subscriber's CONFIRMED events to the rounds, and check its stream.
    latencies: list[float] = []
    per_round: list[list[float]] = [[] for _ in confirmed]
    missing = [0 for _ in confirmed]
    gaps = 0
    round_of = {number: i for i, (number, _) in enumerate(confirmed)}
    for client in clients:
        got: dict[int, float] = {}
        sequences: list[int] = []
        for when, raw in zip(
            arrivals.times[client.index], arrivals.payloads[client.index], strict=True
        ):
            event = json.loads(raw)["payload"]["data"]["orderEvents"]
            sequences.append(event["sequence"])
            if event["type"] == "CONFIRMED" and event["order"]["status"] in (
                "CONFIRMED",
                "PROCESSING",
            ):
                i = round_of.get(event["order"]["number"])
                if i is not None:
                    got[i] = when - confirmed[i][1]
        if any(b != a + 1 for a, b in itertools.pairwise(sequences)):
            gaps += 1
        for i in range(len(confirmed)):
            if i in got:
                per_round[i].append(got[i])
                if i > 0:
                    latencies.append(got[i])
            else:
                missing[i] += 1
    for i, info in enumerate(rounds):
        info["latency_ms"] = summary_ms(per_round[i])
        info["missing"] = missing[i]
    if gaps:
        problems.append(f"{gaps} subscriber(s) saw a gap or duplicate in event sequences")
    if sum(missing):
        problems.append(f"{sum(missing)} CONFIRMED event deliveries missing")
    errors = sum(len(c.errors) for c in clients)
    if errors:
        sample = next(c.errors[0] for c in clients if c.errors)
        problems.append(f"{errors} error message(s) on subscriptions, e.g. {sample[:200]!r}")
    if connect_errors:
        problems.append(
            f"{len(connect_errors)} subscription(s) failed to start, e.g. {connect_errors[0]}"
        )
    return {
        "subscribers": count,
        "subscribed": subscribed,
        "connect_errors": len(connect_errors),
        "connect_error_samples": connect_errors[:5],
        "connect_seconds": round(connect_seconds, 2),
        "rss_before": rss_before,
        "rss_idle": rss_idle,
        "rss_after_events": rss_after,
        "bytes_per_idle_subscriber": round((rss_idle - rss_before) / subscribed)
        if subscribed
        else None,
        "subscribers_per_worker": {str(pid): n for pid, n in per_worker.items()},
        "rounds": rounds,
        "latency_ms": summary_ms(latencies),
        "problems": problems,
    }


# Mixed -------------------------------------------------------------------------------------


class Streams:
    """Per subscriber: events received, the last sequence, and breaks in the sequence."""

    def __init__(self, size: int) -> None:
        self.count = [0] * size
        self.last = [0] * size
        self.breaks = [0] * size

    def on_next(self, client: SubscriptionClient, now: float, payload: bytes) -> None:
        match = SEQUENCE.search(payload)
        i = client.index
        self.count[i] += 1
        if match is None:
            self.breaks[i] += 1
            return
        sequence = int(match.group(1))
        if self.last[i] and sequence != self.last[i] + 1:
            self.breaks[i] += 1
        self.last[i] = sequence


async def run_mixed(cfg: dict[str, Any]) -> dict[str, Any]:
    host, port, auth = cfg["host"], cfg["port"], cfg["authorization"]
    count = int(cfg["subscribers"])
    streams = Streams(count)
    clients, connect_errors = await open_subscriptions(
        host, port, auth, ORDER_EVENTS, count, streams.on_next, parallel=int(cfg["parallel"])
    )
    log(f"{len(clients)}/{count} subscribed")
    await asyncio.sleep(float(cfg.get("settle", 2)))
    try:
        result = await run_http(cfg)
        expected = result["kinds"]["place"]["ok_total"]
        started = time.monotonic()
        deadline = started + float(cfg.get("event_timeout", 30))
        while time.monotonic() < deadline:
            if all(streams.count[c.index] >= expected for c in clients):
                break
            await asyncio.sleep(0.05)
        drain = time.monotonic() - started
    finally:
        for client in clients:
            client.close()
    counts = [streams.count[c.index] for c in clients]
    complete = sum(1 for n in counts if n == expected)
    breaks = sum(streams.breaks[c.index] for c in clients)
    problems = []
    if complete != len(clients):
        problems.append(
            f"{len(clients) - complete} subscriber(s) did not receive exactly the {expected} "
            f"events (min {min(counts, default=0)}, max {max(counts, default=0)})"
        )
    if breaks:
        problems.append(f"{breaks} break(s) in subscribers' event sequences")
    if connect_errors:
        problems.append(
            f"{len(connect_errors)} subscription(s) failed to start, e.g. {connect_errors[0]}"
        )
    result["subscriptions"] = {
        "subscribers": count,
        "subscribed": len(clients),
        "events_expected": expected,
        "complete": complete,
        "sequence_breaks": breaks,
        "messages": sum(counts),
        "drain_after_load_s": round(drain, 3),
        "problems": problems,
    }
    return result


SCENARIOS = {"http": run_http, "fanout": run_fanout, "mixed": run_mixed}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in SCENARIOS:
        print(
            f"usage: python -m bench.load {{{','.join(SCENARIOS)}}} <json-config>", file=sys.stderr
        )
        return 2
    config = json.loads(argv[1])
    limit = raise_file_limit()
    needed = int(config.get("subscribers", 0)) + int(config.get("concurrency", 0)) + 100
    if limit.soft < needed:
        print(
            json.dumps({"error": f"RLIMIT_NOFILE {limit.soft} < {needed} sockets needed"}),
            flush=True,
        )
        return 1
    runner = SCENARIOS[argv[0]]
    try:
        import uvloop
    except ImportError:  # uvicorn[standard] brings it; plain asyncio works too
        result = asyncio.run(runner(config))
    else:
        result = uvloop.run(runner(config))
    result["load_file_limit"] = limit.soft
    result["load_cpu_seconds"] = round(cpu_self(), 3)  # the whole process, imports included
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
