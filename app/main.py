"""The ASGI application: ``app.main:create_app(settings)``; ``app.main:app`` for uvicorn."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

from graphql import DocumentNode, GraphQLError, GraphQLSchema, StringValueNode, ValidationRule
from graphql.validation import NoSchemaIntrospectionCustomRule
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.extensions import ParserCache, SchemaExtension
from strawberry.extensions.max_aliases import create_validator as max_aliases
from strawberry.extensions.query_depth_limiter import create_validator as max_depth
from strawberry.schema import Schema
from strawberry.schema.schema import validate_document

from app.auth import Authenticator, Sessions
from app.broadcast import EventHub
from app.cost import CostBudget
from app.fanout import SharedEventExecution
from app.guard import RequestGuard
from app.hooks import LeanSchema
from app.http import GraphQLView, MaskUnexpectedErrors, SqlStatementCount
from app.outbox import OutboxRelay
from app.settings import Settings
from app.variables import install as install_variable_coercion
from db.database import Database
from schema import build_schema

log = logging.getLogger("ordergraph")

MAX_DEPTH = 12
MAX_ALIASES = 30
MAX_TOKENS = 5_000


class NoNulInStrings(ValidationRule):
    """No database stores U+0000: refuse it in string literals before anything runs
    (variables are checked in app.http)."""

    def enter_string_value(self, node: StringValueNode, *_args: Any) -> None:
        if "\x00" in node.value:
            self.report_error(
                GraphQLError("Strings must not contain NUL (\\u0000) characters.", node)
            )


# Built once: rule classes made per request would defeat the validation cache.
VALIDATION_RULES = [max_depth(MAX_DEPTH, None, None), max_aliases(MAX_ALIASES), NoNulInStrings]
PRODUCTION_RULES = [*VALIDATION_RULES, NoSchemaIntrospectionCustomRule]


# Strawberry's MaxTokensLimiter and AddValidationRules set their options in the operation
# hook, which stays open (a generator and its context manager) for as long as an operation
# runs: for a subscription, its whole life. These set the same options in the parse and
# validate hooks, which close before anything executes; each is listed before the cache
# that parses or validates with them.


class TokenLimit(SchemaExtension):
    """Refuse documents of more than ``MAX_TOKENS`` tokens while parsing them."""

    def on_parse(self) -> Iterator[None]:
        self.execution_context.parse_options["max_tokens"] = MAX_TOKENS
        yield


class ExtraValidationRules(SchemaExtension):
    """Validate with these rules besides the specification's."""

    def __init__(self, rules: list[type[ValidationRule]]) -> None:
        self.rules = tuple(rules)

    def on_validate(self) -> Iterator[None]:
        self.execution_context.validation_rules = (
            *self.execution_context.validation_rules,
            *self.rules,
        )
        yield


class ValidatedDocuments:
    """Validation results by parsed document, least recently used dropped beyond
    ``maxsize``: Strawberry's ``ValidationCache`` without hashing the document. Its LRU
    cache is keyed by the document's value, and a document's hash walks its whole syntax
    tree on every request (12 µs for ``placeOrder``'s, 2 for ``{ __typename }``).
    ``ParserCache`` hands the same document object to every request with the same text, so
    this cache is keyed by the schema's and document's ids and the rules; each entry keeps
    its schema and document, so no id in it is reused while it is there."""

    __slots__ = ("_entries", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[
            tuple[int, int, tuple[Any, ...]],
            tuple[GraphQLSchema, DocumentNode, list[GraphQLError]],
        ] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def errors(
        self, schema: GraphQLSchema, document: DocumentNode, rules: tuple[Any, ...]
    ) -> list[GraphQLError]:
        key = (id(schema), id(document), rules)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry[2]
        errors = validate_document(schema, document, rules)
        self._entries[key] = (schema, document, errors)
        if len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        return errors


class ValidationCache(SchemaExtension):
    """Validate each parsed document once (``ValidatedDocuments``)."""

    def __init__(self, validated: ValidatedDocuments) -> None:
        self.validated = validated

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is not None:
            context.pre_execution_errors = self.validated.errors(
                context.schema._schema, context.graphql_document, context.validation_rules
            )
        yield


def make_schema(
    debug: bool = False, *, production: bool = False, budget: CostBudget | None = None
) -> Schema:
    """The schema with its limits. In order: parse (cached) under a token limit, validate
    (cached) with depth, alias and, in production, introspection rules, then the guard
    (authorization and cost) before anything executes."""
    rules = PRODUCTION_RULES if production else VALIDATION_RULES
    guard_budget = (
        budget
        if budget is not None
        else CostBudget(capacity=0, restore_rate=1, max_query_cost=10**9)
    )
    validated = ValidatedDocuments(maxsize=1024)
    extensions: list[Any] = [
        TokenLimit,
        lambda: ParserCache(maxsize=1024),
        lambda: ExtraValidationRules(rules),
        lambda: ValidationCache(validated),
        lambda: RequestGuard(budget=guard_budget),
        lambda: MaskUnexpectedErrors(expose_details=not production),
    ]
    if debug:
        extensions.append(SqlStatementCount)
    install_variable_coercion()
    return build_schema(
        extensions, execution_context_class=SharedEventExecution, schema_class=LeanSchema
    )


class OrdergraphApp(Starlette):
    """Starlette, except that a WebSocket to the GraphQL endpoint goes straight to its view.

    A subscriber's connection lives for hours, and every coroutine between the server and
    the view stays suspended for as long as it does. Starlette's error, CORS and exception
    middleware, its router and the route are nine of them, with a WebSocket object and a
    closure: about 2.8 KB per connection, measured with thousands of idle subscribers. None
    of them does anything for this connection: the error and CORS middleware pass WebSockets
    through, the exception middleware only handles exceptions the view never raises (it
    checks origins and closes refused connections itself), and there is one route to find.
    Everything else (HTTP, other paths) takes the whole stack."""

    def __init__(self, *, websocket_path: str, websocket_app: ASGIApp, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.websocket_path = websocket_path
        self.websocket_app = websocket_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "websocket"
            and scope["path"] == scope.get("root_path", "") + self.websocket_path
        ):
            scope["app"] = self
            await self.websocket_app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class Services:
    """The long-lived parts, started and stopped by the app's lifespan."""

    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        self.settings = settings
        self.db = db or Database(
            settings.database_url,
            pool_size=settings.db_pool_size,
            background_checkpoints=True,
        )
        self.hub = EventHub(
            self.db, settings.broadcast_url, queue_size=settings.subscriber_queue_size
        )
        self.relay = OutboxRelay(self.db, self.hub, settings.outbox_sweep_seconds)
        self.db.after_commit = self.relay.on_commit
        self.authenticator = Authenticator(self.db, settings)
        self.sessions = Sessions(self.db, settings.auth_recheck_seconds)
        self.budget = CostBudget(
            capacity=settings.cost_bucket,
            restore_rate=settings.cost_restore_rate,
            max_query_cost=settings.cost_max_query,
        )

    async def start(self) -> None:
        self.db.start()
        if await self.db.autovacuum_is_off():
            log.warning(
                "PostgreSQL runs with autovacuum off: the planner's statistics go stale as "
                "orders grow, and reads of order lines fall back to sequential scans. Turn "
                "autovacuum on, or run ANALYZE regularly."
            )
        await self.hub.start()
        await self.relay.start()
        await self.sessions.start()

    async def stop(self) -> None:
        await self.sessions.stop()
        await self.authenticator.drain()
        await self.relay.stop()
        await self.hub.stop()
        await self.db.dispose()


def create_app(settings: Settings, *, db: Database | None = None) -> OrdergraphApp:
    services = Services(settings, db)
    schema = make_schema(settings.debug, production=settings.production, budget=services.budget)
    view = GraphQLView(
        schema,
        db=services.db,
        hub=services.hub,
        pricing=settings.pricing,
        authenticator=services.authenticator,
        sessions=services.sessions,
        max_body_bytes=settings.max_body_bytes,
        direct_delivery=not settings.debug,
        connection_init_wait_timeout=timedelta(seconds=10),
        max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
        allowed_origins=settings.allowed_origins,
        graphql_ide=None if settings.production else "graphiql",
    )

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> JSONResponse:
        checks: dict[str, Any] = {}
        try:
            async with services.db.reader() as s:
                await s.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        hub = services.hub.describe()
        checks["broadcast"] = "ok" if hub.connected else f"unreachable: {hub.last_error}"
        checks["broadcastReconnects"] = hub.reconnects
        ok = checks["database"] == "ok" and checks["broadcast"] == "ok"
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": checks},
            status_code=200 if ok else 503,
        )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    app = OrdergraphApp(
        websocket_path="/graphql",
        websocket_app=view,
        routes=[
            Route("/graphql", view, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", view),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        lifespan=lifespan,
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.allowed_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "Accept"],
                expose_headers=["X-Request-Id", "Retry-After"],
                max_age=600,
            ),
        ],
    )
    app.state.services = services
    app.state.schema = schema
    return app


#: Collect the youngest generation once 200,000 more container objects are alive than at
#: the last collection (CPython's default: 700), and the oldest rarely. A server holding
#: thousands of WebSockets has millions of long-lived objects, and each full collection
#: scanned them all (5,000 subscribers got an event in 1.4 s at p99 with the defaults, 0.57 s
#: with (50,000, 50, 1,000)); eight 50-order pages in flight keep hundreds of thousands of
#: objects alive, which a young collection every 50,000 walked and promoted for nothing
#: (requests make no cyclic garbage: tests/api/test_no_cycles.py). Alternating runs:
#: 33.6-36.3 -> 31.0-34.0 ms of CPU per page (no collections at all: 31.5-32.6); fan-out
#: latency and memory per subscriber unchanged beyond the noise.
GC_THRESHOLDS = (200_000, 50, 1_000)


def tune_gc_for_serving() -> None:
    """For server processes only: move everything built so far (modules, the schema) out of
    the collector's way and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def __getattr__(name: str) -> Any:
    # ``app.main:app`` is built on first access, so importing this module reads no settings.
    # This is how uvicorn (``ordergraph serve``) loads the app in each worker process.
    if name == "app":
        application = create_app(Settings.from_env())
        tune_gc_for_serving()
        return application
    raise AttributeError(name)
