"""``python -m bench [--quick] [--backends sqlite,postgres] [--scenarios …] [--output …]``"""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import replace
from pathlib import Path
from types import FrameType

from app.settings import SettingsError, normalize_database_url
from bench.config import BACKENDS, FULL, QUICK, SCENARIOS
from bench.runner import run
from bench.system import ROOT


def _names(raw: str, allowed: tuple[str, ...], what: str) -> list[str]:
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none)'}; choose from {', '.join(allowed)}"
        )
    # Run in the canonical order whatever the order given.
    return [n for n in allowed if n in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N, short durations")
    parser.add_argument(
        "--backends",
        type=lambda raw: _names(raw, BACKENDS, "backend"),
        default=list(BACKENDS),
        help="comma-separated: sqlite,postgres",
    )
    parser.add_argument(
        "--scenarios",
        type=lambda raw: _names(raw, SCENARIOS, "scenario"),
        default=list(SCENARIOS),
        help="comma-separated: " + ",".join(SCENARIOS),
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--postgres-url", help=f"default {FULL.postgres_url}")
    parser.add_argument("--redis-url", help=f"default {FULL.redis_url}")
    args = parser.parse_args(argv)

    settings = QUICK if args.quick else FULL
    if args.postgres_url:
        try:
            url = normalize_database_url(args.postgres_url)
        except SettingsError as exc:
            parser.error(str(exc))
        if not url.startswith("postgresql"):
            parser.error("--postgres-url must be a PostgreSQL URL")
        settings = replace(settings, postgres_url=url)
    if args.redis_url:
        settings = replace(settings, redis_url=args.redis_url)

    def stop(signum: int, _frame: FrameType | None) -> None:
        # Unwind normally, so every server started is stopped.
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    run(settings, args.backends, args.scenarios, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
