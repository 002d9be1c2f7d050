"""A finished request leaves nothing for the cyclic garbage collector: its executor, context
and loaders are freed by reference counting when it ends, not by a collection that would
hold up every other request (tens of milliseconds under load)."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from starlette.requests import Request

from app.context import Context
from app.fanout import SharedEventExecution, weak_async_helpers
from app.loaders import Loaders
from domain.access import Principal
from tests import factories
from tests.conftest import GraphQLClient

PLACE = factories.PLACE_ORDER
READ = """query { orders(first: 5) { edges { node { number status customer { name }
  lines { sku allocations { quantity warehouse { code } } } } } } }"""


async def test_queries_and_mutations_leave_no_cycles(gql: GraphQLClient, app: Any) -> None:
    db = app.state.services.db
    await factories.warehouse(db)
    await factories.product(db, "TEE")
    await factories.stock(db, "TEE", "MAIN", 10)
    gc.collect()  # the setup's own leftovers are not the requests'
    gc.disable()
    try:
        for _ in range(3):
            placed = await gql(PLACE, {"input": factories.place_order_input([("TEE", 1)])})
            assert placed["data"]["placeOrder"]["userErrors"] == []
            read = await gql(READ)
            assert "errors" not in read, read
            assert (await gql("{ __typename }"))["data"] == {"__typename": "Query"}
        left = {type(o) for o in _collect()}
    finally:
        gc.enable()
    # (What may be left is not the requests': validating a new document, compiling a new
    # statement, and the test's own HTTP client.)
    assert not {SharedEventExecution, Context, Loaders, Request, Principal} & left


def _collect() -> list[Any]:
    """What a collection now frees (kept for inspection instead)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


class _Executor:
    def __init__(self) -> None:
        self.tracked: list[Any] = []

    def gather_async_work(self, values: Any) -> str:
        return f"gathered {values}"

    def track_async_work(self, values: Any) -> None:
        self.tracked.append(values)


def test_the_helpers_call_the_executor_without_keeping_it() -> None:
    executor = _Executor()
    helpers = weak_async_helpers(executor)
    gathered: Any = helpers.gather([])
    assert gathered == "gathered []"
    helpers.track([3])
    assert executor.tracked == [[3]]
    del executor  # nothing else holds it: freed at once
    with pytest.raises(RuntimeError, match="executor is gone"):
        helpers.gather([])


def test_only_subscriptions_keep_graphql_cores_helpers() -> None:
    """A subscription's executor lives as long as the subscription: there graphql-core's
    own (smaller) helpers stay, and its per-event copies share them."""
    from graphql import parse

    from app.main import make_schema

    schema = make_schema()._schema
    query = SharedEventExecution.build(schema, parse("{ __typename }"))
    subscription = SharedEventExecution.build(
        schema, parse("subscription { orderEvents { sequence } }")
    )
    assert isinstance(query, SharedEventExecution)
    assert isinstance(subscription, SharedEventExecution)
    assert getattr(subscription.async_helpers.track, "__self__", None) is subscription
    assert getattr(query.async_helpers.track, "__self__", None) is None
    helpers = query.async_helpers
    del query  # nothing holds the executor of a finished query
    with pytest.raises(RuntimeError, match="executor is gone"):
        helpers.track([])
