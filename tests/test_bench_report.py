"""bench.report: the scale-out target says how much the machine itself allows."""

from __future__ import annotations

from bench.report import evaluate_targets, machine_bound


def test_machine_bound_is_the_rate_with_every_core_busy_at_the_measured_cost() -> None:
    # 180 orders/s kept 1.8 of 2 cores busy: 10 ms of CPU per order, so 200 orders/s at most,
    # which is 1.25 x the 160 orders/s of one process.
    two = {"orders_per_s": 180.0, "machine_cpu_cores": 1.8}
    one = {"orders_per_s": 160.0}
    assert machine_bound(two, one, 2) == {"cores": 2, "orders_per_s": 200.0, "ratio": 1.25}
    assert machine_bound({"orders_per_s": 180.0}, one, 2) is None
    assert machine_bound(two, one, None) is None


def test_scale_out_target_reports_the_machine_bound() -> None:
    results = {
        "machine": {"cores": 2},
        "backends": {
            "postgres": {
                "scenarios": {
                    "place": {"orders_per_s": 180.0, "machine_cpu_cores": 1.8},
                    "place_1_process": {"orders_per_s": 160.0},
                }
            }
        },
    }
    [target] = [t for t in evaluate_targets(results) if "scale-out" in t["name"]]
    assert target["measured"] == 1.125
    assert not target["met"]
    assert "allow at most 200.0 orders/s = 1.25 x 1 process" in target["detail"]
