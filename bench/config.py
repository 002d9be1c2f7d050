"""Benchmark settings: the full run (``make bench``) and ``--quick`` for development."""

from __future__ import annotations

from dataclasses import dataclass, replace

SCENARIOS = ("trivial", "place", "read", "fanout", "mixed")
BACKENDS = ("sqlite", "postgres")


@dataclass(frozen=True)
class BenchSettings:
    quick: bool = False
    # Closed-loop HTTP measurements: warm-up, then a fixed measurement window.
    warmup_s: float = 2.0
    duration_s: float = 10.0
    # The trivial-query ceiling measured again inside every scenario.
    ceiling_warmup_s: float = 1.0
    ceiling_duration_s: float = 5.0
    trivial_concurrency: int = 32
    place_concurrency: int = 32
    # A page of 50 orders costs tens of milliseconds of CPU: a few requests in flight per
    # server process saturate it; more would only queue (and inflate latency).
    read_concurrency: int = 8
    read_first: int = 50
    mixed_concurrency: int = 32
    mixed_read_first: int = 10
    mixed_subscribers: int = 1_000
    fanout_sizes: tuple[int, ...] = (1_000, 5_000)
    fanout_rounds: int = 3  # timed rounds, after one warm-up round
    connect_parallel: int = 64
    floor_warmup_s: float = 2.0
    floor_duration_s: float = 10.0
    sql_samples: int = 3
    seed_orders: int = 200
    read_orders: int = 60  # orders of exactly 3 lines, placed before the servers start
    postgres_workers: int = 2
    # placeOrder's ratio to { __typename }: alternating windows of each on the same servers
    # (see bench.scenarios.place_ratio_rounds). Five: with three, one round in three of the
    # same code could land 0.05 below the other two on this VM.
    place_ratio_rounds: int = 5
    place_ratio_warmup_s: float = 1.0
    place_ratio_window_s: float = 3.0
    # placeOrder on 1 and on 2 PostgreSQL processes, in alternating windows (see
    # bench.scenarios.scale_out).
    scale_out_rounds: int = 3
    scale_out_warmup_s: float = 1.0
    scale_out_window_s: float = 6.0
    postgres_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/ordergraph_bench"
    redis_url: str = "redis://127.0.0.1:6379/5"
    server_log_level: str = "warning"  # uvicorn's access log (INFO) would be timed too


FULL = BenchSettings()
QUICK = replace(
    FULL,
    quick=True,
    warmup_s=0.5,
    duration_s=2.0,
    ceiling_warmup_s=0.5,
    ceiling_duration_s=1.5,
    mixed_subscribers=100,
    fanout_sizes=(100, 500),
    fanout_rounds=1,
    floor_warmup_s=0.5,
    floor_duration_s=2.0,
    sql_samples=1,
    seed_orders=30,
    place_ratio_rounds=1,
    place_ratio_warmup_s=0.5,
    place_ratio_window_s=1.5,
    scale_out_rounds=1,
    scale_out_warmup_s=0.5,
    scale_out_window_s=2.0,
)
