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


def test_a_per_event_copy_has_helpers_of_its_own() -> None:
    from graphql import parse

    from app.main import make_schema

    schema = make_schema()
    executor = SharedEventExecution.build(
        schema._schema, parse("subscription { orderEvents { sequence } }")
    )
    assert isinstance(executor, SharedEventExecution)
    copy = executor.build_per_event_executor(object())  # a payload it cannot annotate
    assert copy.async_helpers is not executor.async_helpers
    del executor  # the subscription's executor gone: the copy's helpers still work
    copy.async_helpers.track([1])
