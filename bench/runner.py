"""One benchmark run: per backend a fresh database, servers, the scenarios, and the checks;
then the targets, the table and ``bench/results.json``."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bench.config import BenchSettings
from bench.data import PrepareError, analyze_postgres, prepare, probe_services
from bench.report import evaluate_targets, render_table
from bench.scenarios import SCENARIO_RUNNERS, Context, LoadError, loadavg, scale_out
from bench.servers import Server, ServerError, start_server
from bench.system import git_commit, machine, raise_file_limit


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BackendPlan:
    name: str
    database_url: str
    broadcast_url: str
    workers: int


def plan(name: str, settings: BenchSettings, workdir: Path) -> BackendPlan:
    if name == "sqlite":
        path = workdir / "sqlite" / "ordergraph_bench.db"
        return BackendPlan(name, f"sqlite+aiosqlite:///{path}", "memory://", 1)
    return BackendPlan(name, settings.postgres_url, settings.redis_url, settings.postgres_workers)


def _redact(url: str) -> str:
    return re.sub(r"//([^:@/]+):[^@/]*@", r"//\1:***@", url)


NOTABLE = re.compile(r"^(WARNING|ERROR|CRITICAL)|^Traceback")
ERROR_LINE = re.compile(r"^(ERROR|CRITICAL)|Traceback|Exception in ", re.MULTILINE)


def scan_logs(workdir: Path, backend: str) -> dict[str, Any]:
    """ERROR lines and tracebacks the servers logged: anything unexpected in the app."""
    found: dict[str, Any] = {}
    for path in sorted(workdir.glob(f"server-{backend}*.log")):
        text = path.read_text(errors="replace")
        hits = [m.start() for m in ERROR_LINE.finditer(text)]
        if hits:
            found[str(path)] = {
                "count": len(hits),
                "samples": [text[i : i + 600] for i in hits[:3]],
            }
    return found


def _run_scenario(
    name: str, ctx: Context, runner: Callable[[Context], dict[str, Any]] | None = None
) -> dict[str, Any]:
    autovacuum = None
    if ctx.backend == "postgres":
        try:
            autovacuum = analyze_postgres(ctx.database_url)
        except (OSError, asyncpg.PostgresError) as exc:
            say(f"{ctx.backend}: ANALYZE before {name} failed: {exc}")
    load_before = loadavg()
    say(f"{ctx.backend}: {name} (load average {load_before})")
    ctx.server.new_log_lines()  # what came before belongs to other scenarios
    started = time.monotonic()
    try:
        result = (runner or SCENARIO_RUNNERS[name])(ctx)
    except (LoadError, ServerError, PrepareError, OSError, ValueError, KeyError) as exc:
        say(f"{ctx.backend}: {name} failed: {exc}")
        result = {"error": str(exc), "traceback": traceback.format_exc(limit=5)}
    result["seconds"] = round(time.monotonic() - started, 1)
    notable = Counter(line[:200] for line in ctx.server.new_log_lines() if NOTABLE.match(line))
    if notable:
        # Warnings and errors the servers logged during this scenario, with their counts.
        result["server_log"] = dict(notable.most_common(10))
    result["loadavg_before"] = load_before
    if autovacuum is not None:
        result["analyzed_before"] = {"autovacuum": autovacuum}
    return result


def _ensure_server(ctx: Context, plan_: BackendPlan, label: str) -> None:
    if not ctx.server.alive():
        say(f"{plan_.name}: server {label} is gone (log {ctx.server.log_path}); restarting")
        ctx.server.stop()
        ctx.server = start_server(
            label,
            plan_.database_url,
            plan_.broadcast_url,
            ctx.workdir,
            workers=plan_.workers,
            log_level=ctx.settings.server_log_level,
        )


def run_backend(
    plan_: BackendPlan, settings: BenchSettings, scenarios: list[str], workdir: Path
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "database": _redact(plan_.database_url),
        "broadcast": _redact(plan_.broadcast_url),
        "workers": plan_.workers,
        "scenarios": {},
    }
    if plan_.name == "postgres":
        reason = probe_services(plan_.database_url, plan_.broadcast_url)
        if reason is not None:
            say(f"postgres: skipped: {reason}")
            return {**out, "skipped": reason}
    say(f"{plan_.name}: preparing a fresh database")
    started = time.monotonic()
    try:
        dataset = prepare(
            plan_.database_url, plan_.broadcast_url, settings.seed_orders, settings.read_orders
        )
    except PrepareError as exc:
        return {**out, "error": str(exc)}
    out["prepare_seconds"] = round(time.monotonic() - started, 1)
    out["dataset"] = {
        "products": len(dataset.skus),
        "customers": len(dataset.customer_ids),
        "warehouses": dataset.warehouses,
        "seed_orders": settings.seed_orders,
        "three_line_orders": dataset.read_orders,
    }

    def start(workers: int, label: str) -> Server:
        say(f"{plan_.name}: starting {label} ({workers} process(es))")
        return start_server(
            label,
            plan_.database_url,
            plan_.broadcast_url,
            workdir,
            workers=workers,
            log_level=settings.server_log_level,
        )

    def context(server: Server) -> Context:
        return Context(
            plan_.name, plan_.database_url, plan_.broadcast_url, settings, dataset, server, workdir
        )

    try:
        label = f"{plan_.name}-{plan_.workers}proc"
        ctx = context(start(plan_.workers, label))
        try:
            if plan_.name == "postgres" and "place" in scenarios and plan_.workers > 1:
                # placeOrder on one process too, alternating with these, for the ratio.
                one = context(start(1, f"{plan_.name}-1proc"))
                try:
                    out["scenarios"]["place_scale_out"] = _run_scenario(
                        "place_scale_out", ctx, lambda two: scale_out(one, two)
                    )
                finally:
                    one.server.stop()
            for name in scenarios:
                _ensure_server(ctx, plan_, label)
                out["scenarios"][name] = _run_scenario(name, ctx)
        finally:
            code = ctx.server.stop()
            out["server_exit_code"] = code
    except ServerError as exc:
        out["error"] = str(exc)
    out["server_log_errors"] = scan_logs(workdir, plan_.name)
    return out


def run(
    settings: BenchSettings, backends: list[str], scenarios: list[str], output: Path
) -> dict[str, Any]:
    limit = raise_file_limit()
    workdir = Path(tempfile.mkdtemp(prefix="ordergraph-bench-"))
    say(f"work directory (databases, server logs): {workdir}")
    results: dict[str, Any] = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "git": git_commit(),
        "settings": {
            **{k: v for k, v in asdict(settings).items() if k not in ("postgres_url", "redis_url")},
            "postgres_url": _redact(settings.postgres_url),
            "redis_url": _redact(settings.redis_url),
            "backends": backends,
            "scenarios": scenarios,
            "cost_budget": "off (ORDERGRAPH_COST_BUCKET=0)",
            "debug": "off in timed runs; a separate ORDERGRAPH_DEBUG=1 server counts SQL",
        },
        "file_limit": {"soft": limit.soft, "hard": limit.hard, "was": limit.raised_from},
        "loadavg_at_start": loadavg(),
        "workdir": str(workdir),
        "backends": {},
    }
    for name in backends:
        results["backends"][name] = run_backend(
            plan(name, settings, workdir), settings, scenarios, workdir
        )
    results["loadavg_at_end"] = loadavg()
    results["targets"] = evaluate_targets(results)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, output)
    print(render_table(results))
    say(f"results written to {output}; server logs in {workdir}")
    if os.environ.get("BENCH_KEEP_WORKDIR") is None and not _has_failures(results):
        # Keep only the logs: the databases can be large.
        shutil.rmtree(workdir / "sqlite", ignore_errors=True)
    return results


def _has_failures(results: dict[str, Any]) -> bool:
    text = json.dumps(results["backends"])
    return '"error"' in text or '"ok": false' in text
