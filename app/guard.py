"""Before any resolver runs: may this caller use every field of the operation, and can they
afford it? After: what it really cost, reported in ``extensions.cost``.

Parse, the token limit and validation (depth, aliases, introspection in production) have run
by now; this is the last check, and the first that knows who is calling.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError, OperationType
from starlette.responses import Response
from strawberry.extensions import SchemaExtension

from app.cost import CostBudget, Throttle, ThrottleStatus, actual_cost, analyze
from domain.access import Principal, Role
from schema.access import denial_message, permits


class Forbidden(GraphQLError):
    def __init__(self, principal: Principal, coordinate: str) -> None:
        code = "UNAUTHENTICATED" if principal.role is Role.ANONYMOUS else "FORBIDDEN"
        super().__init__(
            denial_message(principal, coordinate),
            extensions={"code": code, "field": coordinate},
        )


class Throttled(GraphQLError):
    pass


class RequestGuard(SchemaExtension):
    """Authorization by field (``schema/access.py``) and the per-principal cost budget.

    Built per operation by a factory that passes the process-wide budget."""

    def __init__(self, *, budget: CostBudget) -> None:
        self.budget = budget
        self._reserved: int | None = None
        self._requested: int | None = None
        self._actual: int | None = None
        self._status: ThrottleStatus | None = None

    def on_execute(self) -> Iterator[None]:
        ec = self.execution_context
        document = ec.graphql_document
        principal: Principal = ec.context.principal
        schema = ec.schema._schema
        if document is not None:
            analysis = analyze(schema, document, ec.operation_name, ec.variables)
            for coordinate in sorted(analysis.coordinates):
                if not permits(principal, coordinate):
                    raise Forbidden(principal, coordinate)
            self._requested = analysis.requested_cost
            throttle = self.budget.check(principal.id, analysis.requested_cost)
            self._status = throttle.status
            if not throttle.accepted:
                raise self._refusal(analysis.requested_cost, throttle)
            self._reserved = analysis.requested_cost
            if analysis.operation_type is OperationType.SUBSCRIPTION:
                # A subscription pays once, when it starts; its events are not charged, and
                # they do not repeat the cost report (fan-out payloads stay lean).
                self._reserved = None
                self._status = None
        yield
        if self._reserved is not None and document is not None:
            result = ec.result
            data = getattr(result, "data", None) if result is not None else None
            self._actual = actual_cost(schema, document, ec.operation_name, ec.variables, data)
            self._status = self.budget.settle(principal.id, self._reserved, self._actual)

    def _refusal(self, requested: int, throttle: Throttle) -> GraphQLError:
        status = throttle.status.as_dict()
        if throttle.reason == "MAX_COST_EXCEEDED":
            most = min(self.budget.max_query_cost, self.budget.capacity)
            return Throttled(
                f"Query cost {requested} is above the maximum of {most} "
                "for one operation: ask for fewer items (`first`/`last`) or fewer fields.",
                extensions={
                    "code": "MAX_COST_EXCEEDED",
                    "cost": {"requestedQueryCost": requested, "throttleStatus": status},
                },
            )
        retry = throttle.retry_after_seconds
        response = getattr(self.execution_context.context, "response", None)
        if isinstance(response, Response) and retry is not None:
            response.status_code = 429
            response.headers["Retry-After"] = str(max(1, math.ceil(retry)))
        return Throttled(
            f"Throttled: this query costs {requested} and {status['currentlyAvailable']} points "
            f"are available; the budget refills at {status['restoreRate']} points per second. "
            f"Retry in {retry} s.",
            extensions={
                "code": "THROTTLED",
                "retryAfterSeconds": retry,
                "cost": {"requestedQueryCost": requested, "throttleStatus": status},
            },
        )

    def get_results(self) -> dict[str, Any]:
        if self._status is None:
            return {}
        cost: dict[str, Any] = {"requestedQueryCost": self._requested}
        if self._reserved is not None:
            cost["actualQueryCost"] = self._actual
        cost["throttleStatus"] = self._status.as_dict()
        return {"cost": cost}
