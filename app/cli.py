"""The ``ordergraph`` command (also ``python -m app``): serve, migrate, seed, export-schema,
api-key (create, revoke, list) and token."""

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

    from app.wsprotocol import WS_PROTOCOL

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
        ws=WS_PROTOCOL,
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


def cmd_api_key(args: argparse.Namespace) -> int:
    from db.database import Database
    from domain.access import Role, parse_scopes
    from domain.errors import DomainError
    from resolvers import access

    settings = _settings()

    async def run() -> int:
        db = Database(settings.database_url)
        try:
            if args.action == "create":
                try:
                    scopes = parse_scopes(args.scopes or "")
                except ValueError as exc:
                    print(f"ordergraph: {exc}", file=sys.stderr)
                    return 2
                created = await access.create_api_key(
                    db, args.name, Role(args.role), sorted(scopes)
                )
                r = created.record
                print(
                    f"created API key {r.id} ({r.name}, {r.role}"
                    + (f", scopes {r.scopes}" if r.scopes else "")
                    + "). It is shown once; store it now:",
                    file=sys.stderr,
                )
                print(created.key)
            elif args.action == "revoke":
                r = await access.revoke_api_key(db, args.id)
                print(f"revoked API key {r.id} ({r.name}) at {r.revoked_at:%Y-%m-%d %H:%M:%S}Z")
            else:
                rows = await access.list_api_keys(db)
                print(
                    f"{'ID':>4}  {'PREFIX':12}  {'ROLE':11}  {'STATUS':8}  {'LAST USED':19}  NAME"
                )
                for r in rows:
                    used = f"{r.last_used_at:%Y-%m-%d %H:%M:%S}" if r.last_used_at else "never"
                    status = "revoked" if r.revoked_at else "active"
                    scope_list = f"  [{r.scopes}]" if r.scopes else ""
                    print(
                        f"{r.id:>4}  {r.prefix:12}  {r.role:11}  {status:8}  {used:19}  "
                        f"{r.name}{scope_list}"
                    )
            return 0
        except DomainError as exc:
            print(f"ordergraph: {exc.message}", file=sys.stderr)
            return 2
        finally:
            await db.dispose()

    return asyncio.run(run())


def cmd_token(args: argparse.Namespace) -> int:
    from app.auth import mint_customer_token
    from db.database import Database
    from domain.errors import DomainError
    from resolvers.access import find_customer_id

    settings = _settings()

    async def run() -> int:
        db = Database(settings.database_url)
        try:
            customer_id = await find_customer_id(db, args.customer)
        except DomainError as exc:
            print(f"ordergraph: {exc.message}", file=sys.stderr)
            return 2
        finally:
            await db.dispose()
        print(mint_customer_token(settings, customer_id, args.ttl))
        print(
            f"token for customer {customer_id}, valid {args.ttl or settings.token_ttl_seconds} s",
            file=sys.stderr,
        )
        return 0

    return asyncio.run(run())


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

    key = sub.add_parser("api-key", help="create, revoke or list API keys")
    key_sub = key.add_subparsers(dest="action", required=True)
    create = key_sub.add_parser("create", help="create a key; it is printed once")
    create.add_argument("--role", required=True, choices=["ADMIN", "STAFF", "INTEGRATION"])
    create.add_argument("--name", required=True, help="who or what uses it, e.g. 'erp-sync'")
    create.add_argument(
        "--scopes", help="INTEGRATION only, comma-separated, e.g. orders:read,inventory:write"
    )
    revoke = key_sub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("id", type=int, help="the key's id (see `api-key list`)")
    key_sub.add_parser("list", help="list keys (never their secrets)")
    key.set_defaults(func=cmd_api_key)

    token = sub.add_parser("token", help="mint a customer token (JWT) for development")
    token.add_argument("--customer", required=True, help="customer id or email")
    token.add_argument("--ttl", type=int, help="seconds until it expires (default: settings)")
    token.set_defaults(func=cmd_token)

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
