"""Authentication over HTTP: API keys (hashed, revocable at once, last use recorded),
customer tokens (signature, audience, expiry), anonymous callers, the audit trail, and the
``api-key`` and ``token`` commands."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select
from starlette.applications import Starlette

from app.auth import mint_customer_token
from app.cli import main as cli
from app.main import Services
from app.settings import Settings
from db.models import ApiKey, OrderEvent
from domain.access import Role, Scope
from resolvers.access import revoke_api_key
from schema.common import to_global_id
from tests import factories, principals

VIEWER = "{ viewer { id role name scopes expiresAt customer { email } } }"


def services(app: Starlette) -> Services:
    s: Services = app.state.services
    return s


async def post(
    client: httpx.AsyncClient, query: str, authorization: str | None, **kw: Any
) -> httpx.Response:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return await client.post("/graphql", json={"query": query, **kw}, headers=headers)


async def test_no_credentials_is_anonymous(anonymous_client: httpx.AsyncClient) -> None:
    r = await post(anonymous_client, VIEWER, None)
    assert r.status_code == 200
    assert r.json()["data"]["viewer"] == {
        "id": "anonymous",
        "role": "ANONYMOUS",
        "name": None,
        "scopes": [],
        "expiresAt": None,
        "customer": None,
    }
    r = await post(anonymous_client, "{ orders(first: 1) { totalCount } }", None)
    error = r.json()["errors"][0]
    assert error["extensions"] == {"code": "UNAUTHENTICATED", "field": "Query.orders"}
    assert "Authorization: Bearer" in error["message"]


async def test_api_key_resolves_to_its_role_and_scopes(
    app: Starlette, anonymous_client: httpx.AsyncClient
) -> None:
    key = await factories.api_key(
        services(app).db, Role.INTEGRATION, (Scope.ORDERS_READ, Scope.INVENTORY_WRITE), "erp"
    )
    r = await post(anonymous_client, VIEWER, f"Bearer {key}")
    viewer = r.json()["data"]["viewer"]
    assert viewer["role"] == "INTEGRATION" and viewer["name"] == "erp"
    assert viewer["scopes"] == ["inventory:write", "orders:read"]
    assert viewer["id"].startswith("api-key:")


async def test_api_key_is_stored_only_as_a_hash(app: Starlette) -> None:
    key = await factories.api_key(services(app).db, Role.STAFF)
    async with services(app).db.reader() as s:
        row = (await s.execute(select(ApiKey))).scalars().one()
    stored = [str(getattr(row, c.key)) for c in ApiKey.__table__.columns]
    assert not any(key in value or key[12:] in value for value in stored)
    assert key.startswith(row.prefix) and len(row.prefix) == 11


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        ("Basic dXNlcjpwYXNz", "Malformed Authorization header"),
        ("Bearer", "Malformed Authorization header"),
        ("Bearer og_00000000_notarealkeynotarealkeynotarealkeyxxxx", "Invalid or revoked API key."),
        ("Bearer not.a.jwt", "Invalid token."),
    ],
)
async def test_bad_credentials_are_refused_with_401(
    anonymous_client: httpx.AsyncClient, authorization: str, message: str
) -> None:
    r = await post(anonymous_client, VIEWER, authorization)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    [error] = r.json()["errors"]
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}
    assert error["message"].startswith(message)


async def test_failed_authentication_is_logged_without_the_secret(
    anonymous_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "og_deadbeef_" + "s3cr3t" * 7
    with caplog.at_level(logging.WARNING, logger="ordergraph.auth"):
        r = await post(anonymous_client, VIEWER, f"Bearer {secret}")
    assert r.status_code == 401
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "authentication failed" in logged and "og_deadbeef" in logged
    assert "s3cr3t" not in logged


async def test_revoked_key_stops_working_at_once(
    app: Starlette, anonymous_client: httpx.AsyncClient
) -> None:
    db = services(app).db
    key = await factories.api_key(db, Role.STAFF)
    assert (await post(anonymous_client, VIEWER, f"Bearer {key}")).status_code == 200
    async with db.reader() as s:
        key_id = (await s.execute(select(ApiKey.id))).scalar_one()
    await revoke_api_key(db, key_id)
    r = await post(anonymous_client, VIEWER, f"Bearer {key}")
    assert r.status_code == 401
    assert r.json()["errors"][0]["message"] == "Invalid or revoked API key."


async def test_last_use_is_recorded(app: Starlette, anonymous_client: httpx.AsyncClient) -> None:
    db = services(app).db
    key = await factories.api_key(db, Role.STAFF)
    async with db.reader() as s:
        assert (await s.execute(select(ApiKey.last_used_at))).scalar_one() is None
    await post(anonymous_client, VIEWER, f"Bearer {key}")
    await services(app).authenticator.drain()
    async with db.reader() as s:
        used = (await s.execute(select(ApiKey.last_used_at))).scalar_one()
    assert used is not None and abs(used.timestamp() - time.time()) < 60


async def test_customer_token_resolves_to_the_customer(
    app: Starlette, anonymous_client: httpx.AsyncClient
) -> None:
    c, token = await principals.customer_token(
        services(app).db, services(app).settings, "ada@example.com"
    )
    r = await post(anonymous_client, VIEWER, f"Bearer {token}")
    viewer = r.json()["data"]["viewer"]
    assert viewer["id"] == f"customer:{c.id}" and viewer["role"] == "CUSTOMER"
    assert viewer["customer"] == {"email": "ada@example.com"}
    assert viewer["expiresAt"] is not None


def _token(settings: Settings, claims: dict[str, Any], secret: str | None = None) -> str:
    now = int(time.time())
    base = {"sub": str(to_global_id("Customer", 1)), "aud": "ordergraph", "iat": now}
    return jwt.encode({**base, **claims}, secret or settings.jwt_secret, algorithm="HS256")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("expired", "The token has expired."),
        ("other-secret", "Invalid token."),
        ("other-audience", "Invalid token."),
        ("no-expiry", "Invalid token."),
        ("not-a-customer", "Invalid token: `sub` must be a customer's global ID."),
        ("alg-none", "Invalid token."),
    ],
)
async def test_bad_tokens_are_refused(
    app: Starlette, anonymous_client: httpx.AsyncClient, case: str, message: str
) -> None:
    settings = services(app).settings
    later = int(time.time()) + 600
    token = {
        "expired": lambda: _token(settings, {"exp": int(time.time()) - 60}),
        "other-secret": lambda: _token(settings, {"exp": later}, "x" * 40),
        "other-audience": lambda: _token(settings, {"exp": later, "aud": "someone-else"}),
        "no-expiry": lambda: _token(settings, {}),
        "not-a-customer": lambda: _token(
            settings, {"exp": later, "sub": str(to_global_id("Order", 1))}
        ),
        "alg-none": lambda: jwt.encode(
            {"sub": str(to_global_id("Customer", 1)), "aud": "ordergraph", "exp": later},
            None,
            algorithm="none",
        ),
    }[case]()
    r = await post(anonymous_client, VIEWER, f"Bearer {token}")
    assert r.status_code == 401, r.text
    assert r.json()["errors"][0]["message"] == message


async def test_a_token_minted_by_an_identity_provider_is_accepted(
    app: Starlette, anonymous_client: httpx.AsyncClient
) -> None:
    """What the README documents: HS256 over the shared secret, sub, aud, exp."""
    settings = services(app).settings
    c = await principals.customer(services(app).db, "idp@example.com")
    token = jwt.encode(
        {
            "sub": str(to_global_id("Customer", c.id)),
            "aud": settings.jwt_audience,
            "exp": int(time.time()) + 300,
        },
        settings.jwt_secret,
        algorithm="HS256",
    )
    r = await post(anonymous_client, VIEWER, f"Bearer {token}")
    assert r.json()["data"]["viewer"]["customer"] == {"email": "idp@example.com"}


async def test_events_record_the_principal_and_role(
    app: Starlette, anonymous_client: httpx.AsyncClient
) -> None:
    db = services(app).db
    await factories.warehouse(db)
    await factories.product(db, "TEE")
    await factories.stock(db, "TEE", "MAIN", 5)
    order = await factories.order(db, [("TEE", 1)])
    key = await factories.api_key(db, Role.STAFF, name="desk")
    r = await post(
        anonymous_client,
        "mutation ($id: ID!) { confirmOrder(input: {orderId: $id}) { "
        "order { events(first: 5) { nodes { actor actorRole } } } } }",
        f"Bearer {key}",
        variables={"id": str(to_global_id("Order", order.id))},
    )
    nodes = r.json()["data"]["confirmOrder"]["order"]["events"]["nodes"]
    async with db.reader() as s:
        key_id = (await s.execute(select(ApiKey.id).where(ApiKey.name == "desk"))).scalar_one()
        roles = list((await s.execute(select(OrderEvent.actor_role))).scalars())
    assert nodes == [
        {"actor": "system:test", "actorRole": "ADMIN"},
        {"actor": f"api-key:{key_id}", "actorRole": "STAFF"},
    ]
    assert roles == ["ADMIN", "STAFF"]


# -- the command line -------------------------------------------------------------------


@pytest.fixture
def cli_db(tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cli.db"
    shutil.copy(sqlite_template, path)
    monkeypatch.setenv("ORDERGRAPH_DATABASE_URL", f"sqlite+aiosqlite:///{path}")
    return path


def test_api_key_commands(cli_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["api-key", "create", "--role", "INTEGRATION", "--name", "erp",
                "--scopes", "orders:read,inventory:write"]) == 0  # fmt: skip
    out = capsys.readouterr()
    key = out.out.strip()
    assert key.startswith("og_") and "shown once" in out.err
    assert cli(["api-key", "list"]) == 0
    listing = capsys.readouterr().out
    assert "erp" in listing and "inventory:write,orders:read" in listing and "active" in listing
    assert key not in listing and key[12:] not in listing
    assert cli(["api-key", "revoke", "1"]) == 0
    capsys.readouterr()
    assert cli(["api-key", "list"]) == 0
    assert "revoked" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["api-key", "create", "--role", "INTEGRATION", "--name", "x"], "at least one scope"),
        (
            ["api-key", "create", "--role", "STAFF", "--name", "x", "--scopes", "orders:read"],
            "Scopes apply to INTEGRATION keys only",
        ),
        (
            ["api-key", "create", "--role", "INTEGRATION", "--name", "x", "--scopes", "all"],
            "unknown scope 'all'",
        ),
        (["api-key", "revoke", "42"], "No API key with id 42."),
        (["token", "--customer", "nobody@example.com"], "No customer 'nobody@example.com'"),
    ],
)
def test_api_key_and_token_commands_refuse_bad_input(
    cli_db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert cli(argv) == 2
    assert message in capsys.readouterr().err


def test_token_command_mints_a_verifiable_token(
    cli_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from db.database import Database

    async def make() -> int:
        db = Database(f"sqlite+aiosqlite:///{cli_db}")
        try:
            return int((await principals.customer(db, "cli@example.com")).id)
        finally:
            await db.dispose()

    customer_id = asyncio.run(make())
    assert cli(["token", "--customer", "cli@example.com", "--ttl", "120"]) == 0
    token = capsys.readouterr().out.strip()
    settings = Settings()
    claims = jwt.decode(token, settings.jwt_secret, algorithms=["HS256"], audience="ordergraph")
    assert claims["sub"] == to_global_id("Customer", customer_id)
    assert 110 <= claims["exp"] - claims["iat"] <= 120
    assert mint_customer_token(settings, customer_id).count(".") == 2
