"""The targets of the issue, evaluated on one run's results, and the printed table."""

from __future__ import annotations

from statistics import median
from typing import Any

PLACE_VS_TRIVIAL = 0.4
READ_VS_FLOOR = 0.6
FANOUT_P99_MS = 250.0
FANOUT_KIB_PER_SUBSCRIBER = 30.0
SCALE_OUT = 1.5
FANOUT_TARGET_SIZE = 5_000
#: Cores used by unrelated work during a measurement above which it is flagged (kernel
#: networking for loopback traffic alone accounts for up to about 0.1).
NOISE_CORES = 0.25


def _scenario(results: dict[str, Any], backend: str, name: str) -> dict[str, Any] | None:
    found = results["backends"].get(backend, {}).get("scenarios", {}).get(name)
    return found if isinstance(found, dict) and "error" not in found else None


def _target(
    name: str, measured: Any, threshold: str, met: bool | None, **extra: Any
) -> dict[str, Any]:
    return {"name": name, "measured": measured, "threshold": threshold, "met": met, **extra}


def _missing(name: str, threshold: str, why: str) -> dict[str, Any]:
    return _target(name, None, threshold, None, note=f"not measured: {why}")


def _place_rounds(place: dict[str, Any]) -> str:
    """How the place ratio was taken, when from alternating rounds."""
    rounds = place.get("ratio_rounds") or []
    if not rounds:
        return ""
    ratios = ", ".join(_num(r["ratio"], 3) for r in rounds)
    text = (
        f"; ratio: median of {len(rounds)} alternating rounds ({ratios}), "
        f"one window {_num(place.get('ratio_one_window'), 3)}"
    )
    cpu = place.get("cpu_ratio_to_trivial")
    if cpu is not None:
        per_order = median(
            r["server_cpu_us_per_order"] for r in rounds if r.get("server_cpu_us_per_order")
        )
        per_trivial = median(
            r["server_cpu_us_per_trivial"] for r in rounds if r.get("server_cpu_us_per_trivial")
        )
        text += (
            f"; by server CPU per request, {_num(cpu, 3)} "
            f"({_num(per_trivial, 0)} us per trivial request, {_num(per_order, 0)} us per order)"
        )
    return text


def _raw_writes(place: dict[str, Any]) -> str:
    """The target's premise as measured (bench.scenarios.raw_sqlite_writes), when it was."""
    raw = place.get("raw_sqlite")
    if not raw:
        return ""
    return (
        f"; raw sqlite3 doing its writes: {_num(raw['orders_per_s'])} orders/s "
        f"({_num(raw['cpu_us_per_order'], 0)} us CPU each) = "
        f"{_num(raw['ratio_to_trivial'], 2)} x trivial (the issue expects about 2), "
        f"so at most {_num(raw['place_ratio_bound'], 2)} x trivial for placeOrder"
    )


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []

    threshold = f">= {PLACE_VS_TRIVIAL} x trivial"
    place = _scenario(results, "sqlite", "place")
    if place and place.get("ratio_to_trivial") is not None:
        ratio = place["ratio_to_trivial"]
        targets.append(
            _target(
                "place vs trivial (SQLite, 1 process)",
                ratio,
                threshold,
                ratio >= PLACE_VS_TRIVIAL,
                detail=f"{place['orders_per_s']} orders/s vs {place['trivial_rps']} trivial/s"
                + _place_rounds(place)
                + _raw_writes(place),
            )
        )
    else:
        targets.append(_missing("place vs trivial (SQLite, 1 process)", threshold, "no result"))

    for backend in ("sqlite", "postgres"):
        if backend not in results["backends"]:
            continue
        read = _scenario(results, backend, "read")
        label = f"read vs floor ({backend})"
        threshold = f">= {READ_VS_FLOOR} x floor"
        if read and read.get("ratio_to_floor") is not None:
            processes = read.get("server_processes", 1)
            # The floor is what one process does in-process: n server processes are held
            # to n floors (the ratio of the totals is in the detail).
            ratio = read.get("ratio_to_floor_per_process", read["ratio_to_floor"])
            detail = (
                f"{read['pages_per_s']} pages/s served vs {read['floor']['pages_per_s']} in-process"
            )
            if processes > 1:
                label = f"read vs floor per process ({backend}, {processes} processes)"
                detail += f"; {processes} processes vs 1 floor: {read['ratio_to_floor']}"
            targets.append(_target(label, ratio, threshold, ratio >= READ_VS_FLOOR, detail=detail))
            counts = read["sql_statements"]
            first = read["first"]
            targets.append(
                _target(
                    f"read SQL statements constant ({backend})",
                    f"first:1 -> {counts.get('read_first_1')}, "
                    f"first:{first} -> {counts.get(f'read_first_{first}')}",
                    "same count for first: 1 and first: 50",
                    read["sql_statements_constant"],
                )
            )
        else:
            targets.append(_missing(label, threshold, "no read result"))

        fanout = _scenario(results, backend, "fanout")
        runs = {int(k): v for k, v in (fanout or {}).get("runs", {}).items() if "error" not in v}
        if runs:
            size = FANOUT_TARGET_SIZE if FANOUT_TARGET_SIZE in runs else max(runs)
            run = runs[size]
            note = {} if size == FANOUT_TARGET_SIZE else {"note": f"measured with N={size}"}
            p99 = run.get("latency_ms", {}).get("p99")
            targets.append(
                _target(
                    f"fanout {size} p99 ({backend})",
                    p99,
                    f"<= {FANOUT_P99_MS:.0f} ms",
                    p99 is not None and p99 <= FANOUT_P99_MS and not run.get("problems"),
                    **note,
                )
            )
            kib = run.get("kib_per_idle_subscriber")
            targets.append(
                _target(
                    f"fanout {size} memory per idle subscriber ({backend})",
                    kib,
                    f"<= {FANOUT_KIB_PER_SUBSCRIBER:.0f} KiB",
                    kib is not None and kib <= FANOUT_KIB_PER_SUBSCRIBER,
                    **note,
                )
            )
        else:
            targets.append(
                _missing(
                    f"fanout {FANOUT_TARGET_SIZE} ({backend})",
                    f"p99 <= {FANOUT_P99_MS:.0f} ms, "
                    f"<= {FANOUT_KIB_PER_SUBSCRIBER:.0f} KiB/subscriber",
                    "no fanout result",
                )
            )

    threshold = f">= {SCALE_OUT} x 1 process"
    scale = _scenario(results, "postgres", "place_scale_out")
    if scale and scale.get("ratio") is not None:
        ratio = scale["ratio"]
        rounds = ", ".join(_num(r["ratio"], 2) for r in scale["rounds"])
        detail = (
            f"median of {len(scale['rounds'])} alternating rounds ({rounds}): "
            f"{scale['two_processes_orders_per_s']} vs {scale['one_process_orders_per_s']} "
            "orders/s"
        )
        if scale.get("machine_bound_ratio") is not None:
            detail += (
                "; at the CPU per order measured with 2 processes (servers, PostgreSQL, load "
                "and other processes together), this machine's cores allow at most "
                f"{scale['machine_bound_ratio']} x 1 process"
            )
        targets.append(
            _target(
                "place scale-out, PostgreSQL+Redis, 2 processes vs 1",
                ratio,
                threshold,
                ratio >= SCALE_OUT,
                detail=detail,
            )
        )
    else:
        reason = results["backends"].get("postgres", {}).get("skipped", "no result")
        targets.append(_missing("place scale-out, PostgreSQL+Redis", threshold, reason))
    return targets


# The table --------------------------------------------------------------------------------


def _ms(latency: dict[str, Any] | None, key: str) -> str:
    value = (latency or {}).get(key)
    return "-" if value is None else f"{value:.1f}"


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _noise(result: dict[str, Any]) -> str:
    other = result.get("other_processes_cpu_cores") or 0.0
    return f" (OTHER PROCESSES {other:.2f} cores)" if other >= NOISE_CORES else ""


def _cpu(result: dict[str, Any]) -> str:
    return (
        f", cores busy: servers {_num(result.get('server_cpu_cores'), 2)}, "
        f"machine {_num(result.get('machine_cpu_cores'), 2)}{_noise(result)}"
    )


def _split(result: dict[str, Any]) -> str:
    """With several server processes: how the connections and the CPU were shared."""
    cpu = result.get("server_cpu_cores_per_worker") or {}
    if len(cpu) < 2:
        return ""
    conns = result.get("connections_per_worker") or {}
    shares = [f"{conns.get(pid, '?')}/{cores}" for pid, cores in cpu.items()]
    # Flag it when one process did much less work than another (closed-loop connections
    # stay on the worker that accepted them).
    unbalanced = min(cpu.values()) < 0.6 * max(cpu.values())
    return ", per worker conns/cores " + " ".join(shares) + (" UNBALANCED" if unbalanced else "")


def _consistency(result: dict[str, Any]) -> str:
    c = result.get("consistency")
    if not c:
        return ""
    return "consistent" if c["ok"] else "INCONSISTENT: " + "; ".join(c["problems"])


def _rows(backend: str, name: str, r: dict[str, Any]) -> list[list[str]]:
    if "error" in r:
        return [[backend, name, "ERROR", "-", "-", "-", "-", r["error"].splitlines()[0][:90]]]
    fails = r.get("failed")
    failed = f"{fails} failed" if fails else ""
    if name == "trivial":
        return [
            [
                backend,
                name,
                f"{_num(r['requests_per_s'])} req/s",
                _ms(r["latency_ms"], "p50"),
                _ms(r["latency_ms"], "p99"),
                _num(r["requests_per_s"]),
                "1.00",
                f"c={r['concurrency']}{_cpu(r)}{_split(r)} {failed}".strip(),
            ]
        ]
    if name == "place_scale_out":
        rows: list[list[str]] = []
        for i, rnd in enumerate(r["rounds"], 1):
            for key, label in (("one", "1 process"), ("two", "2 processes")):
                w = rnd[key]
                rows.append(
                    [
                        backend,
                        f"  place {label}" if rows else f"place {label}",
                        f"{_num(w['orders_per_s'])} orders/s",
                        _ms(w["latency_ms"], "p50"),
                        _ms(w["latency_ms"], "p99"),
                        "",
                        _num(rnd["ratio"], 2) if key == "two" else "",
                        f"round {i}{_cpu(w)}{_split(w)}"
                        + (f", {w['failed']} failed" if w["failed"] else ""),
                    ]
                )
        rows.append(
            [
                backend,
                "  scale-out",
                f"{_num(r['two_processes_orders_per_s'])} vs "
                f"{_num(r['one_process_orders_per_s'])} orders/s",
                "",
                "",
                "",
                _num(r["ratio"], 2),
                f"median of {len(r['rounds'])} alternating rounds of {r['window_s']} s, "
                f"c={r['concurrency']}, {_consistency(r)}; machine allows "
                f"{_num(r.get('machine_bound_ratio'), 2)} x 1 process",
            ]
        )
        return rows
    if name.startswith("place"):
        label = "place"
        sessions = r.get("postgres_sessions") or {}
        waits = (
            f", PG sessions waiting on locks {sessions['waiting_on_locks']}"
            if "waiting_on_locks" in sessions
            else ""
        )
        return [
            [
                backend,
                label,
                f"{_num(r['orders_per_s'])} orders/s",
                _ms(r["latency_ms"], "p50"),
                _ms(r["latency_ms"], "p99"),
                _num(r["trivial_rps"]),
                _num(r["ratio_to_trivial"], 3),
                f"c={r['concurrency']}, {_consistency(r)}{_cpu(r)}{waits}{_split(r)}"
                f"{_place_rounds(r)}{_raw_writes(r)} {failed}".strip(),
            ]
        ]
    if name == "read":
        floor = r["floor"]
        sql = r["sql_statements"]
        return [
            [
                backend,
                f"read first:{r['first']}",
                f"{_num(r['pages_per_s'])} pages/s",
                _ms(r["latency_ms"], "p50"),
                _ms(r["latency_ms"], "p99"),
                _num(r["trivial_rps"]),
                _num(r["ratio_to_trivial"], 3),
                f"c={r['concurrency']}, {r['response_fields']} fields, "
                f"{_num(r['served_us_per_field'], 2)} us/field served{_cpu(r)}{_split(r)} "
                f"{failed}".strip(),
            ],
            [
                backend,
                "  read floor",
                f"{_num(floor['pages_per_s'])} pages/s",
                _ms(floor["latency_ms"], "p50"),
                _ms(floor["latency_ms"], "p99"),
                "",
                f"{_num(r['ratio_to_floor'], 3)}",
                "served/floor"
                + (
                    f" (per process {_num(r.get('ratio_to_floor_per_process'), 3)})"
                    if r.get("server_processes", 1) > 1
                    else ""
                )
                + f"; {floor['us_per_field']} us/field in-process; SQL/request "
                f"first:1 {sql.get('read_first_1')}, first:{r['first']} "
                f"{sql.get('read_first_' + str(r['first']))}",
            ],
        ]
    if name == "fanout":
        rows = []
        for size, run in r["runs"].items():
            if "error" in run:
                rows.append(
                    [backend, f"fanout {size}", "ERROR", "-", "-", "-", "-", run["error"][:90]]
                )
                continue
            lat = run.get("latency_ms")
            problems = "; ".join(run.get("problems", []))
            rows.append(
                [
                    backend,
                    f"fanout {size}",
                    f"max {_ms(lat, 'max')} ms",
                    _ms(lat, "p50"),
                    _ms(lat, "p99"),
                    _num(r["trivial_rps"]),
                    _num(run.get("ratio_to_trivial"), 3),
                    f"{_num(run.get('kib_per_idle_subscriber'))} KiB/idle sub, "
                    f"{_num(run.get('deliveries_per_s'), 0)} deliveries/s, connect "
                    f"{run.get('connect_seconds')} s{_noise(run)} {problems}".strip(),
                ]
            )
        return rows
    if name == "mixed":
        subs = r["subscriptions"]
        sub_note = f"{subs['complete']}/{subs['subscribed']} subs got all {subs['events_expected']}"
        reads, writes = r["reads"], r["writes"]
        return [
            [
                backend,
                "mixed",
                f"{_num(r['requests_per_s'])} req/s",
                "",
                "",
                _num(r["trivial_rps"]),
                _num(r["ratio_to_trivial"], 3),
                f"c={r['concurrency']}, {sub_note}; {_consistency(r)}{_cpu(r)}{_split(r)}",
            ],
            [
                backend,
                "  mixed reads",
                f"{_num(reads['rate'])} req/s",
                _ms(reads["latency_ms"], "p50"),
                _ms(reads["latency_ms"], "p99"),
                "",
                "",
                f"{r['read_query']}, {r['read_response_fields']} fields"
                + (f", {reads['failed_total']} failed" if reads["failed_total"] else ""),
            ],
            [
                backend,
                "  mixed writes",
                f"{_num(writes['rate'])} req/s",
                _ms(writes["latency_ms"], "p50"),
                _ms(writes["latency_ms"], "p99"),
                "",
                "",
                "placeOrder"
                + (f", {writes['failed_total']} failed" if writes["failed_total"] else ""),
            ],
        ]
    return []


def render_table(results: dict[str, Any]) -> str:
    m = results["machine"]
    git = results["git"]
    head = [
        f"Ordergraph benchmark {results['timestamp']}  commit {str(git.get('commit'))[:12]}"
        + (" (uncommitted changes)" if git.get("dirty") else ""),
        f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB, Python {m['python']}, "
        f"kernel {m['kernel']}; load average {results['loadavg_at_start']} -> "
        f"{results.get('loadavg_at_end')}",
        "",
    ]
    header = ["backend", "scenario", "result", "p50 ms", "p99 ms", "trivial/s", "ratio", "notes"]
    rows: list[list[str]] = []
    for backend, b in results["backends"].items():
        if "skipped" in b:
            rows.append([backend, "-", "SKIPPED", "", "", "", "", b["skipped"][:100]])
            continue
        if "error" in b and not b.get("scenarios"):
            rows.append([backend, "-", "ERROR", "", "", "", "", b["error"].splitlines()[0][:100]])
            continue
        for name, r in b["scenarios"].items():
            rows.extend(_rows(backend, name, r))
        logs = b.get("server_log_errors")
        if logs:
            total = sum(v["count"] for v in logs.values())
            rows.append(
                [backend, "server logs", f"{total} errors", "", "", "", "", next(iter(logs))]
            )
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = [*head]
    for row in [header, *rows]:
        cells = [
            str(c).ljust(w) if i < 2 or i == 2 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join(cells) + "  " + row[-1])
    logged = [
        f"  {backend} {name}: {n} x {line}"
        for backend, b in results["backends"].items()
        for name, r in b.get("scenarios", {}).items()
        for line, n in (r.get("server_log") or {}).items()
    ]
    if logged:
        lines += ["", "Server warnings and errors logged during the scenarios:", *logged]
    lines += ["", "Targets:"]
    for t in results["targets"]:
        met = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
        extra = t.get("detail") or t.get("note") or ""
        lines.append(
            f"  [{met:>7}] {t['name']}: {_num(t['measured'], 3)} (target {t['threshold']})"
            + (f"  {extra}" if extra else "")
        )
    return "\n".join(lines)
