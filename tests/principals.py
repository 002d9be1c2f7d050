"""Callers for access-control tests: customers with tokens, keys per role."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.applications import Starlette

from app.auth import mint_customer_token
from app.context import Context
from app.loaders import Loaders
from app.settings import Settings
from db.database import Database
from domain.access import Principal
from resolvers.customers import NewCustomer, create_customer

SYSTEM = Principal.system("test")


async def customer(db: Database, email: str, name: str = "Test Customer") -> Any:
    return await create_customer(db, NewCustomer(name=name, email=email), SYSTEM)


async def customer_token(
    db: Database, settings: Settings, email: str, ttl: int | None = None
) -> tuple[Any, str]:
    """A new customer and a token for them."""
    c = await customer(db, email)
    return c, mint_customer_token(settings, c.id, ttl)


def context_for(app: Starlette, principal: Principal) -> Context:
    """The request context a subscription would get, for calling the schema directly."""
    services = app.state.services
    return Context(
        request=None,
        response=None,
        db=services.db,
        loaders=Loaders(services.db),
        pricing=services.settings.pricing,
        stream=services.hub,
        principal=principal,
        request_id="test",
    )


async def first_result(
    app: Starlette,
    principal: Principal,
    query: str,
    variables: dict[str, Any] | None = None,
    within: float = 5.0,
) -> Any:
    """Subscribe as ``principal``; the first result, or None if nothing came ``within``
    seconds (the subscription was accepted and waits for events)."""
    stream = await app.state.schema.subscribe(
        query, variable_values=variables, context_value=context_for(app, principal)
    )
    try:
        async with asyncio.timeout(within):
            return await anext(stream)
    except TimeoutError:
        return None
    finally:
        await stream.aclose()


async def hub_caught_up(app: Starlette, sequence: int) -> None:
    """Wait until the app's event hub has handed out ``sequence``: a live subscription made
    after this starts after it."""
    for _ in range(1000):
        if app.state.services.hub.position >= sequence:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the event hub never reached sequence {sequence}")
