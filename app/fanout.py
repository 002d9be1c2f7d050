"""Execute a subscription's selection once per event, not once per subscriber.

When an order event reaches 5,000 subscribers of the same subscription document, graphql-core
would run the selection (``orderEvents { sequence type order { number status } }``) 5,000
times over the same event: about 400 microseconds each here, most of a fan-out's time. The
result of that execution depends only on the event, the document and the variables: which
events a subscriber receives, and which fields it may select, are settled before (by its
filter and by the guard), and every field reads the same shared per-event loaders. So the
first subscriber to reach an event executes it and the others await the same result.

The payload must be the same object for every subscriber (``schema/root.py`` converts each
event row once); results are kept on the payload, so they go away with it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from graphql import ExecutionResult
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

_RESULTS = "_ordergraph_results"


class SharedEventExecution(StrawberryGraphQLCoreExecutionContext):
    """A graphql-core executor whose per-event executions are shared between subscribers
    of the same operation and variables."""

    _key: tuple[int, str] | None = None

    def _share_key(self) -> tuple[int, str]:
        if self._key is None:
            coerced = getattr(self.variable_values, "coerced", self.variable_values)
            variables = json.dumps(coerced, sort_keys=True, default=str)
            # ParserCache hands the same document object to every request with the same
            # text; the cache entry holds the operation, so its id cannot be reused.
            self._key = (id(self.operation), variables)
        return self._key

    def build_per_event_executor(self, payload: Any) -> Any:
        try:
            results: dict[tuple[int, str], tuple[Any, Any]] = payload.__dict__.setdefault(
                _RESULTS, {}
            )
        except AttributeError:  # a payload we cannot annotate: execute as usual
            return super().build_per_event_executor(payload)
        key = self._share_key()
        found = results.get(key)
        if found is not None:
            # No executor at all: graphql-core only calls execute_operation() on it, and
            # copying an executor (what the base class does) costs more than the rest.
            return _SharedResult(found[1])
        executor = super().build_per_event_executor(payload)
        run = executor.execute_operation
        operation = self.operation

        def execute(serially: bool | None = None) -> Any:
            # Called right after this build, with no await in between, so the next
            # subscriber's build already finds the entry.
            outcome = run(serially)
            if not executor.is_awaitable(outcome):
                results[key] = (operation, outcome)
                return outcome
            # Its own task: a subscriber that leaves must not cancel the others' result.
            task = asyncio.ensure_future(outcome)
            results[key] = (operation, task)
            return _shared(task)

        executor.execute_operation = execute  # type: ignore[method-assign]
        return executor


class _SharedResult:
    """Stands in for a per-event executor whose result another subscriber computed."""

    __slots__ = ("_shared",)

    def __init__(self, shared: Any) -> None:
        self._shared = shared

    def execute_operation(self, serially: bool | None = None) -> Any:
        shared = self._shared
        if isinstance(shared, asyncio.Future):
            if shared.done() and not shared.cancelled() and shared.exception() is None:
                return shared.result()
            return _shared(shared)
        return shared


async def _shared(shared: Any) -> ExecutionResult:
    if isinstance(shared, asyncio.Future):
        result: ExecutionResult = await asyncio.shield(shared)
        return result
    return shared  # type: ignore[no-any-return]
