"""The scenarios, run by the benchmark process against running servers. Every load runs
in a separate process (``python -m bench.load``); every scenario measures the trivial-query
ceiling first, on the same servers, and reports its result also as a ratio to it."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.config import BenchSettings
from bench.data import Dataset, check_consistency, max_order_id, sqlite_path
from bench.pgstat import ActivitySampler
from bench.queries import READ_ORDERS, TRIVIAL
from bench.servers import Server, start_server
from bench.system import (
    ROOT,
    busiest,
    cpu_by_command,
    cpu_seconds,
    cpu_times,
    foreign_cpu,
    infrastructure_cpu,
    raise_file_limit,
)


class LoadError(RuntimeError):
    """The load or floor process failed."""


@dataclass
class Context:
    backend: str
    database_url: str
    broadcast_url: str
    settings: BenchSettings
    dataset: Dataset
    server: Server
    workdir: Path

    @property
    def authorization(self) -> str:
        return f"Bearer {self.dataset.api_key}"

    def load_config(self, **extra: Any) -> dict[str, Any]:
        return {
            "host": "127.0.0.1",
            "port": self.server.port,
            "authorization": self.authorization,
            "skus": self.dataset.skus,
            "customer_ids": self.dataset.customer_ids,
            "server_pids": self.server.serving_pids(),
            **extra,
        }


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def run_module(module: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Run ``python -m <module> <args>`` and parse the JSON it prints last on stdout."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"{module} {args[:1]} timed out after {timeout:.0f}s") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise LoadError(
            f"{module} {args[:1]} exited with {done.returncode}: "
            f"{done.stdout[-1000:]}\n{done.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    if "error" in result:
        raise LoadError(f"{module} {args[:1]}: {result['error']}")
    return result


def run_load(ctx: Context, scenario: str, config: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One load process; adds how busy the servers and the machine were meanwhile (cores,
    averaged over the whole load process: connecting, warm-up and measurement)."""
    pids = ctx.server.serving_pids()
    cpu0, t0 = {pid: cpu_seconds(pid) or 0.0 for pid in pids}, time.monotonic()
    machine0, procs0 = cpu_times(), cpu_by_command()
    result = run_module("bench.load", [scenario, json.dumps(config)], timeout)
    elapsed = time.monotonic() - t0
    machine1, procs1 = cpu_times(), cpu_by_command()
    busy = {pid: ((cpu_seconds(pid) or 0.0) - cpu0[pid]) / elapsed for pid in pids}
    result["server_cpu_cores"] = round(sum(busy.values()), 2)
    result["server_cpu_cores_per_worker"] = {str(pid): round(c, 2) for pid, c in busy.items()}
    machine = 0.0
    if machine1[1] > machine0[1]:
        # Everything on the machine: servers, load process, PostgreSQL, Redis, others.
        machine = (machine1[0] - machine0[0]) / (machine1[1] - machine0[1]) * (os.cpu_count() or 1)
    result["machine_cpu_cores"] = round(machine, 2)
    # Who used the cores (the load process has exited by now: see load_cpu_seconds).
    result["cpu_by_command"] = busiest(procs0, procs1, elapsed)
    # Unrelated work meanwhile (someone's test run): the processes seen (short-lived ones
    # are missed), or what the machine's total leaves unexplained by ours, whichever is more.
    seen = foreign_cpu(procs0, procs1, elapsed, {*pids, os.getpid()})
    ours = (
        sum(busy.values())
        + infrastructure_cpu(procs0, procs1, elapsed)
        + float(result.get("load_cpu_seconds", 0.0)) / elapsed
    )
    result["other_processes_cpu_cores"] = round(max(seen, machine - ours, 0.0), 2)
    if not ctx.server.alive():
        raise LoadError(
            f"server died during {scenario}; log {ctx.server.log_path}:\n{ctx.server.log_tail()}"
        )
    return result


def _http(ctx: Context, mix: list[list[Any]], concurrency: int, **extra: Any) -> dict[str, Any]:
    s = ctx.settings
    warmup = extra.pop("warmup", s.warmup_s)
    duration = extra.pop("duration", s.duration_s)
    config = ctx.load_config(
        mix=mix, concurrency=concurrency, warmup=warmup, duration=duration, **extra
    )
    return run_load(ctx, "http", config, timeout=warmup + duration + 120)


def _kind(result: dict[str, Any], name: str) -> dict[str, Any]:
    kind: dict[str, Any] = result["kinds"][name]
    return kind


def _server_use(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "server_cpu_cores": result["server_cpu_cores"],
        "server_cpu_cores_per_worker": result["server_cpu_cores_per_worker"],
        "connections_per_worker": result.get("connections_per_worker"),
        "machine_cpu_cores": result.get("machine_cpu_cores"),
        "cpu_by_command": result.get("cpu_by_command"),
        "other_processes_cpu_cores": result.get("other_processes_cpu_cores"),
    }


def _ratio(value: float | None, ceiling: float | None) -> float | None:
    if not value or not ceiling:
        return None
    return round(value / ceiling, 3)


def ceiling(ctx: Context) -> dict[str, Any]:
    """The trivial query's rate on these servers right now."""
    s = ctx.settings
    result = _http(
        ctx,
        [["trivial", 1]],
        s.trivial_concurrency,
        warmup=s.ceiling_warmup_s,
        duration=s.ceiling_duration_s,
    )
    trivial = _kind(result, "trivial")
    return {
        "rate": trivial["rate"],
        "failed": trivial["failed_total"],
        "latency_ms": trivial["latency_ms"],
        **_server_use(result),
    }


# Scenarios ---------------------------------------------------------------------------------


def trivial(ctx: Context) -> dict[str, Any]:
    result = _http(ctx, [["trivial", 1]], ctx.settings.trivial_concurrency)
    t = _kind(result, "trivial")
    return {
        "requests_per_s": t["rate"],
        "latency_ms": t["latency_ms"],
        "failed": t["failed_total"],
        "failures": t["failures"],
        "concurrency": result["concurrency"],
        **_server_use(result),
        "load_cpu_share": result["load_cpu_share"],
        "ratio_to_trivial": 1.0,
    }


def _activity(ctx: Context) -> contextlib.AbstractContextManager[Any]:
    """On PostgreSQL, sample what the database sessions wait for while the load runs."""
    if ctx.database_url.startswith("postgresql"):
        return ActivitySampler(ctx.database_url)
    return contextlib.nullcontext()


def place(ctx: Context) -> dict[str, Any]:
    top = ceiling(ctx)
    before = max_order_id(ctx.database_url)
    with _activity(ctx) as activity:
        result = _http(ctx, [["place", 1]], ctx.settings.place_concurrency)
    p = _kind(result, "place")
    rounds = place_ratio_rounds(ctx)
    ok_total = p["ok_total"] + sum(r["ok_total"] for r in rounds)
    consistency = check_consistency(ctx.database_url, before, ok_total)
    for window in [p, *rounds]:
        if window["distinct_orders"] != window["ok_total"]:
            consistency["ok"] = False
            consistency["problems"].append(
                f"{window['ok_total']} successful responses named only "
                f"{window['distinct_orders']} orders"
            )
    one_window = _ratio(p["rate"], top["rate"])
    ratios = [r["ratio"] for r in rounds if r["ratio"] is not None]
    cpu_ratios = [r["cpu_ratio"] for r in rounds if r["cpu_ratio"] is not None]
    trivial_rates = [r["trivial_rps"] for r in rounds if r["trivial_rps"]]
    raw = (
        raw_sqlite_writes(ctx, median(trivial_rates) or top["rate"])
        if ctx.backend == "sqlite"
        else None
    )
    return {
        "orders_per_s": p["rate"],
        "latency_ms": p["latency_ms"],
        "failed": p["failed_total"] + sum(r["failed"] for r in rounds),
        "failures": p["failures"],
        "failure_samples": p["failure_samples"],
        "successful_responses": ok_total,
        "concurrency": result["concurrency"],
        **_server_use(result),
        "load_cpu_share": result["load_cpu_share"],
        "trivial_rps": top["rate"],
        # The median of the alternating rounds' ratios when there are any, else the one
        # window's against the ceiling before it.
        "ratio_to_trivial": median(ratios) if ratios else one_window,
        "ratio_one_window": one_window,
        "ratio_rounds": rounds,
        # The same from the servers' CPU time per request, for the record (the target is
        # the ratio of rates).
        "cpu_ratio_to_trivial": median(cpu_ratios) if cpu_ratios else None,
        "raw_sqlite": raw,
        "consistency": consistency,
        "postgres_sessions": activity.summary() if activity is not None else None,
    }


def place_ratio_rounds(ctx: Context) -> list[dict[str, Any]]:
    """``placeOrder`` against ``{ __typename }`` in alternating short windows on the same
    servers, each round a window of each. The VM's speed drifts within seconds: one ceiling
    measured before one 10 s window of orders gave ratios from 0.22 to 0.31 for the same
    code in runs a minute apart, which hid changes of 10%. The target takes the median of
    the rounds' ratios, each from two adjacent windows."""
    s = ctx.settings
    rounds: list[dict[str, Any]] = []
    for _ in range(s.place_ratio_rounds):
        windows: dict[str, dict[str, Any]] = {}
        cpu: dict[str, float | None] = {}
        for kind, concurrency in (
            ("trivial", s.trivial_concurrency),
            ("place", s.place_concurrency),
        ):
            result = _http(
                ctx,
                [[kind, 1]],
                concurrency,
                warmup=s.place_ratio_warmup_s,
                duration=s.place_ratio_window_s,
            )
            windows[kind] = _kind(result, kind)
            cpu[kind] = _cpu_us_per_request(result, windows[kind]["rate"])
        trivial, orders = windows["trivial"], windows["place"]
        rounds.append(
            {
                "trivial_rps": trivial["rate"],
                "orders_per_s": orders["rate"],
                "ratio": _ratio(orders["rate"], trivial["rate"]),
                "server_cpu_us_per_trivial": cpu["trivial"],
                "server_cpu_us_per_order": cpu["place"],
                "cpu_ratio": _ratio(cpu["trivial"], cpu["place"]),
                "failed": orders["failed_total"],
                "ok_total": orders["ok_total"],
                "distinct_orders": orders["distinct_orders"],
            }
        )
    return rounds


def _cpu_us_per_request(result: dict[str, Any], rate: float | None) -> float | None:
    """The servers' CPU time per request of a window: what a request costs, whatever share
    of the cores the VM gave the servers meanwhile (its rate moves with that share)."""
    cores = result.get("server_cpu_cores")
    if not cores or not rate:
        return None
    return round(float(cores) / rate * 1e6, 1)


def raw_sqlite_writes(ctx: Context, trivial_rps: float | None) -> dict[str, Any]:
    """The place target's premise, measured: raw sqlite3 doing placeOrder's writes
    (``bench.rawplace``), one thread on a copy of this database, while the server idles.
    ``ratio_to_trivial`` is what the issue expects to be about 2; ``place_ratio_bound`` is
    what placeOrder's ratio would be if an order cost the server a trivial request plus
    those writes and nothing else: 1 / (1 + trivial rate / raw rate)."""
    s = ctx.settings
    source = sqlite_path(ctx.database_url)
    copy = ctx.workdir / "rawplace.db"
    # (sqlite3's own context manager commits but does not close.)
    with (
        contextlib.closing(sqlite3.connect(source)) as live,
        contextlib.closing(sqlite3.connect(copy)) as target,
    ):
        live.backup(target)
    try:
        result = run_module(
            "bench.rawplace",
            [
                json.dumps(
                    {
                        "database": str(copy),
                        "warmup": s.place_ratio_warmup_s,
                        "duration": s.place_ratio_window_s,
                    }
                )
            ],
            timeout=s.place_ratio_warmup_s + s.place_ratio_window_s + 60,
        )
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
    rate = result["orders_per_s"]
    return {
        **result,
        "trivial_rps": trivial_rps,
        "ratio_to_trivial": _ratio(rate, trivial_rps),
        "place_ratio_bound": round(rate / (rate + trivial_rps), 3) if trivial_rps else None,
    }


def machine_bound(
    two: dict[str, Any], one_rate: float | None, cores: int | None
) -> dict[str, Any] | None:
    """The most orders per second the machine's cores allow at the CPU per order measured
    with 2 processes (everything that ran, not just the servers), as a ratio to the
    1-process rate: when the servers, PostgreSQL and the load generator share the cores, a
    second server process can only use what the others leave."""
    busy, rate = two.get("machine_cpu_cores"), two.get("orders_per_s")
    if not busy or not rate or not cores or not one_rate:
        return None
    limit = rate * cores / busy
    return {"cores": cores, "orders_per_s": round(limit, 1), "ratio": round(limit / one_rate, 2)}


def scale_out(one: Context, two: Context) -> dict[str, Any]:
    """``placeOrder`` on one server process and on two, in alternating windows, on servers
    that run side by side on the same database and broadcast (the idle one only hears the
    other's announcements). The VM's speed drifts by tens of percent within minutes, so one
    window of each a minute apart measured the drift as much as the processes; the ratio is
    the median of the rounds' ratios, each from two adjacent windows."""
    s = one.settings
    before = max_order_id(one.database_url)
    rounds: list[dict[str, Any]] = []
    ok_total, problems = 0, []
    for _ in range(s.scale_out_rounds):
        pair: dict[str, Any] = {}
        for label, ctx in (("one", one), ("two", two)):
            result = _http(
                ctx,
                [["place", 1]],
                s.place_concurrency,
                warmup=s.scale_out_warmup_s,
                duration=s.scale_out_window_s,
            )
            p = _kind(result, "place")
            ok_total += p["ok_total"]
            if p["distinct_orders"] != p["ok_total"]:
                problems.append(
                    f"{p['ok_total']} successful responses named only {p['distinct_orders']} orders"
                )
            pair[label] = {
                "orders_per_s": p["rate"],
                "latency_ms": p["latency_ms"],
                "failed": p["failed_total"],
                "failures": p["failures"],
                **_server_use(result),
            }
        pair["ratio"] = _ratio(pair["two"]["orders_per_s"], pair["one"]["orders_per_s"])
        pair["machine_bound"] = machine_bound(
            pair["two"], pair["one"]["orders_per_s"], os.cpu_count()
        )
        rounds.append(pair)
    consistency = check_consistency(one.database_url, before, ok_total)
    if problems:
        consistency["ok"] = False
        consistency["problems"].extend(problems)
    bounds = [r["machine_bound"]["ratio"] for r in rounds if r["machine_bound"]]
    return {
        "rounds": rounds,
        "one_process_orders_per_s": median([r["one"]["orders_per_s"] for r in rounds]),
        "two_processes_orders_per_s": median([r["two"]["orders_per_s"] for r in rounds]),
        "ratio": median([r["ratio"] for r in rounds if r["ratio"] is not None]),
        "machine_bound_ratio": median(bounds),
        "failed": sum(r[k]["failed"] for r in rounds for k in ("one", "two")),
        "window_s": s.scale_out_window_s,
        "concurrency": s.place_concurrency,
        "consistency": consistency,
    }


def median(values: list[float]) -> float | None:
    """The median (the mean of the middle two for an even count); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    mid = len(ordered) // 2
    value = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return round(value, 3)


def sql_statements(ctx: Context) -> dict[str, Any]:
    """A short, separate run with ORDERGRAPH_DEBUG=1: SQL statements per request, from
    ``extensions.debug.sqlStatements`` (never measured in the timed runs)."""
    server = start_server(
        f"{ctx.backend}-debug", ctx.database_url, ctx.broadcast_url, ctx.workdir, debug=True
    )
    counts: dict[str, list[int]] = {}
    try:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": ctx.authorization}, timeout=30
        ) as client:
            cases: list[tuple[str, str, dict[str, Any] | None]] = [
                ("trivial", TRIVIAL, None),
                ("read_first_1", READ_ORDERS, {"first": 1}),
                (
                    f"read_first_{ctx.settings.read_first}",
                    READ_ORDERS,
                    {"first": ctx.settings.read_first},
                ),
            ]
            for name, query, variables in cases:
                for _ in range(ctx.settings.sql_samples):
                    response = client.post(
                        "/graphql", json={"query": query, "variables": variables}
                    )
                    body = response.json()
                    if response.status_code != 200 or body.get("errors"):
                        raise LoadError(f"debug run {name}: {response.status_code} {body}")
                    count = body.get("extensions", {}).get("debug", {}).get("sqlStatements")
                    counts.setdefault(name, []).append(count)
    finally:
        server.stop()
    return counts


def read(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    top = ceiling(ctx)
    result = _http(ctx, [["read", 1]], s.read_concurrency, read_first=s.read_first)
    r = _kind(result, "read")
    floor = run_module(
        "bench.floor",
        [
            json.dumps(
                {
                    "database_url": ctx.database_url,
                    "first": s.read_first,
                    "warmup": s.floor_warmup_s,
                    "duration": s.floor_duration_s,
                }
            )
        ],
        timeout=s.floor_warmup_s + s.floor_duration_s + 120,
    )
    statements = sql_statements(ctx)
    fields = r.get("response_fields")
    rate = r["rate"]
    one = statements.get("read_first_1", [])
    many = statements.get(f"read_first_{s.read_first}", [])
    return {
        "first": s.read_first,
        "pages_per_s": rate,
        "latency_ms": r["latency_ms"],
        "failed": r["failed_total"],
        "failures": r["failures"],
        "response_fields": fields,
        "served_us_per_field": round(1e6 / rate / fields, 2) if rate and fields else None,
        "concurrency": result["concurrency"],
        **_server_use(result),
        "load_cpu_share": result["load_cpu_share"],
        "trivial_rps": top["rate"],
        "ratio_to_trivial": _ratio(rate, top["rate"]),
        "floor": floor,
        "ratio_to_floor": _ratio(rate, floor["pages_per_s"]),
        # The floor is one process; with several server processes, compare like with like.
        "server_processes": ctx.server.workers,
        "ratio_to_floor_per_process": _ratio(rate, floor["pages_per_s"] * ctx.server.workers),
        "sql_statements": statements,
        "sql_statements_constant": bool(one and many and set(one) == set(many)),
    }


def fanout(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    top = ceiling(ctx)
    limit = raise_file_limit()
    runs: dict[str, Any] = {}
    for size in s.fanout_sizes:
        needed = size + 200
        if limit.soft < needed:
            runs[str(size)] = {
                "error": f"RLIMIT_NOFILE soft limit {limit.soft} (hard {limit.hard}) is below "
                f"the {needed} descriptors {size} subscribers need in the servers and in the "
                "load process"
            }
            continue
        config = ctx.load_config(
            subscribers=size,
            rounds=s.fanout_rounds,
            parallel=s.connect_parallel,
            settle=2,
        )
        try:
            result = run_load(ctx, "fanout", config, timeout=600)
        except LoadError as exc:
            runs[str(size)] = {"error": str(exc)}
            continue
        latency = result.get("latency_ms", {})
        worst = latency.get("max")
        deliveries = round(size / (worst / 1000), 1) if worst else None
        result["deliveries_per_s"] = deliveries
        result["ratio_to_trivial"] = _ratio(deliveries, top["rate"])
        per_sub = result.get("bytes_per_idle_subscriber")
        result["kib_per_idle_subscriber"] = round(per_sub / 1024, 1) if per_sub else None
        runs[str(size)] = result
    return {"trivial_rps": top["rate"], "file_limit": limit.soft, "runs": runs}


def mixed(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    top = ceiling(ctx)
    before = max_order_id(ctx.database_url)
    config = ctx.load_config(
        mix=[["read", 9], ["place", 1]],
        concurrency=s.mixed_concurrency,
        warmup=s.warmup_s,
        duration=s.duration_s,
        read_first=s.mixed_read_first,
        subscribers=s.mixed_subscribers,
        parallel=s.connect_parallel,
        settle=2,
    )
    result = run_load(ctx, "mixed", config, timeout=s.warmup_s + s.duration_s + 300)
    reads, writes = _kind(result, "read"), _kind(result, "place")
    consistency = check_consistency(ctx.database_url, before, writes["ok_total"])
    total = reads["rate"] + writes["rate"]
    return {
        "read_query": f"the read query with first: {s.mixed_read_first}",
        "read_response_fields": reads.get("response_fields"),
        "requests_per_s": round(total, 2),
        "reads": {k: reads[k] for k in ("rate", "latency_ms", "failed_total", "failures")},
        "writes": {k: writes[k] for k in ("rate", "latency_ms", "failed_total", "failures")},
        "subscriptions": result["subscriptions"],
        "concurrency": result["concurrency"],
        **_server_use(result),
        "load_cpu_share": result["load_cpu_share"],
        "trivial_rps": top["rate"],
        "ratio_to_trivial": _ratio(total, top["rate"]),
        "consistency": consistency,
    }


SCENARIO_RUNNERS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "trivial": trivial,
    "place": place,
    "read": read,
    "fanout": fanout,
    "mixed": mixed,
}
