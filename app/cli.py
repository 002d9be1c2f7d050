"""The ``ordergraph`` command (also ``python -m app``): serve, migrate, seed, export-schema."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from app.settings import Settings, SettingsError


def schema_sdl() -> str:
    """The schema in SDL, as committed in ``schema.graphql``."""
    from app.main import make_schema

    return make_schema().as_str() + "\n"


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        print(f"ordergraph: bad setting: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings()
    if args.workers > 1 and not settings.crosses_processes:
        print(
            "ordergraph: --workers > 1 needs a broadcast that crosses processes: set "
            "ORDERGRAPH_BROADCAST_URL=redis://host:6379 (or postgres://…); memory:// only "
            "reaches subscribers of the same process.",
            file=sys.stderr,
        )
        return 2
    if args.workers > 1 and settings.database_url.startswith("sqlite"):
        print(
            "ordergraph: note: several workers on SQLite share one writer; use PostgreSQL "
            "for write throughput.",
            file=sys.stderr,
        )
    uvicorn.run(
        "app.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        ws_per_message_deflate=False,
        ws_max_size=1 << 20,
        log_level=args.log_level,
        proxy_headers=False,
    )
    return 0


def cmd_migrate(_: argparse.Namespace) -> int:
    from db.migrate import upgrade

    settings = _settings()
    asyncio.run(upgrade(settings.database_url))
    print("database is up to date", file=sys.stderr)
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from app.seed import seed

    settings = _settings()
    created = asyncio.run(
        seed(settings, orders=args.orders, if_empty=args.if_empty, seed=args.random_seed)
    )
    print(
        "demo data already present; nothing seeded" if created is None else f"seeded: {created}",
        file=sys.stderr,
    )
    return 0


def cmd_export_schema(args: argparse.Namespace) -> int:
    sdl = schema_sdl()
    if args.output:
        Path(args.output).write_text(sdl)
    else:
        sys.stdout.write(sdl)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ordergraph", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the GraphQL API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    seed = sub.add_parser("seed", help="load demo data")
    seed.add_argument("--orders", type=int, default=25, help="how many orders to place")
    seed.add_argument(
        "--if-empty", action="store_true", help="do nothing when the catalogue already has products"
    )
    seed.add_argument("--random-seed", type=int, default=42)
    seed.set_defaults(func=cmd_seed)

    export = sub.add_parser("export-schema", help="print the GraphQL schema (SDL)")
    export.add_argument("--output", "-o", help="write to this file instead of stdout")
    export.set_defaults(func=cmd_export_schema)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    if getattr(args, "workers", 1) < 1 or getattr(args, "orders", 0) < 0:
        print("ordergraph: --workers must be at least 1 and --orders not negative", file=sys.stderr)
        return 2
    return int(args.func(args))
