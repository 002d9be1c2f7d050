"""The GraphQL endpoint: Strawberry's ASGI view with our context, error policy and the
GraphQL-over-HTTP media type ``application/graphql-response+json`` and its status codes."""

from __future__ import annotations

import contextvars
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any, cast

import orjson
from graphql import GraphQLError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, StrawberryGraphQLError
from strawberry.extensions import MaskErrors, SchemaExtension
from strawberry.http import GraphQLHTTPResponse
from strawberry.http.base import HTTPException  # type: ignore[attr-defined]
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from app.auth import Authenticator, AuthError, Session, Sessions
from app.broadcast import EventHub
from app.context import Context
from app.fanout import WsOperation, ws_operation
from app.identity_cache import IdentityCache
from app.loaders import Loaders
from db.database import Database, StatementCounter, statement_counter
from domain.access import ANONYMOUS
from domain.errors import DomainError
from domain.orders import PricingPolicy

log = logging.getLogger("ordergraph.http")

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# The auth sessions a WebSocket connection registered, so they end with the connection.
_ws_sessions: contextvars.ContextVar[list[Session] | None] = contextvars.ContextVar(
    "ws_sessions", default=None
)
# The ASGI send of the WebSocket connection being served, as the view received it (for
# direct delivery; without it, subscribers take the ordinary path).
_ws_send: contextvars.ContextVar[Send | None] = contextvars.ContextVar("ws_send", default=None)
#: WebSocket close code for credentials refused or ended (graphql-transport-ws "Forbidden").
WS_FORBIDDEN = 4403


def _is_expected(error: GraphQLError) -> bool:
    original = error.original_error
    return original is None or isinstance(
        original, (GraphQLError, DomainError, StrawberryGraphQLError)
    )


class MaskUnexpectedErrors(MaskErrors):
    """Syntax, validation and our own input errors stay readable; anything unexpected is
    logged with the request id and answered with a generic message and that id."""

    def __init__(self, expose_details: bool = False) -> None:
        super().__init__(
            should_mask_error=lambda e: not _is_expected(e), error_message="Internal error."
        )
        self.expose_details = expose_details

    def _process_result(self, result: object) -> None:
        # Upstream tests ``isinstance(result, <runtime Protocol>)`` first, about 20 us a call:
        # a fifth of delivering one event to one subscriber. Results without errors (nearly
        # all of them) need no look at all.
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = self._process_errors(errors)  # type: ignore[attr-defined]

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        request_id = request_id_var.get()
        log.error(
            "unexpected error in request %s at %s",
            request_id,
            error.path,
            exc_info=error.original_error,
        )
        extensions: dict[str, Any] = {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}
        if self.expose_details and error.original_error is not None:
            # Development only: production never shows internal messages.
            original = error.original_error
            extensions["detail"] = f"{type(original).__name__}: {original}"
        return GraphQLError(
            message=self.error_message, nodes=error.nodes, path=error.path, extensions=extensions
        )


class SqlStatementCount(SchemaExtension):
    """Debug only: report how many SQL statements the operation ran."""

    def on_operation(self) -> Iterator[None]:
        self._counter = StatementCounter()
        token = statement_counter.set(self._counter)
        try:
            yield
        finally:
            try:
                statement_counter.reset(token)
            except ValueError:  # a stream closed from another task's context
                statement_counter.set(None)

    def get_results(self) -> dict[str, Any]:
        return {"debug": {"sqlStatements": self._counter.count}}


def _json_without_nul(content_type: str | None, body: bytes) -> bool:
    """Whether a body Strawberry decodes as JSON certainly has no NUL in any string: JSON
    can carry one only as the escape ``\\u0000`` (the decoder refuses a raw one), so a body
    without that text has none. (One with it may still have none, ``\\\\u0000``: the
    decoded values are then walked.) About 0.5 µs for a ``placeOrder`` body, where walking
    its decoded variables took 8 µs."""
    # Stricter than Strawberry's test of the media type, and without parsing the header
    # again (3.8 µs with the email package): a body it does not pass is walked.
    media_type = (content_type or "").partition(";")[0].strip().lower()
    return media_type == "application/json" and b"\\u0000" not in body


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _preferred_media_type(accept: str | None) -> str | None:
    """application/json unless the client lists graphql-response+json first; None when it
    accepts neither."""
    if not accept:
        return "application/json"
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media == GRAPHQL_RESPONSE_JSON:
            return GRAPHQL_RESPONSE_JSON
        if media in {"application/json", "application/*", "*/*"}:
            return "application/json"
    return None


def _unauthenticated(message: str) -> Response:
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": "UNAUTHENTICATED"}}]},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="ordergraph"'},
    )


class BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> None:
    """Read the body up to ``limit`` bytes, whatever Content-Length claims; Strawberry then
    reads it from the request's cache."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    request._body = b"".join(chunks)


def json_text(value: object) -> str:
    """Compact JSON: orjson, about 7 times faster than the standard library's encoder on a
    page of 50 orders (0.55 -> 0.08 ms for 52 kB); what orjson refuses (an integer beyond
    64 bits) goes to the standard library, which encodes it or raises as before."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"))


class SharedJson(IdentityCache):
    """JSON text of recently serialized objects, by identity; an object is assumed not to
    change once serialized (subscription results are not)."""

    def __init__(self, size: int = 64) -> None:
        super().__init__(size)

    def dumps(self, value: object) -> str:
        text: str | None = self.get(id(value))
        if text is None:
            text = json_text(value)
            self.put(id(value), value, text)
        return text


class TransportWsHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws, with each operation's destination made known to the event hub
    (``app/fanout.py``) so that live events can be written to it directly."""

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        # This runs as the operation's own task: what is set here stays with it.
        view = cast("GraphQLView", self.view)
        send = _ws_send.get()
        if view.direct_delivery and send is not None:
            ws_operation.set(WsOperation(send, self.operations, operation, view._shared_json.dumps))
        await super().run_operation(operation)

    async def handle_connection_init(self, message: Any) -> None:
        await super().handle_connection_init(message)
        # The timeout is cancelled; its finished task would stay referenced for as long as
        # the connection lives.
        self.connection_init_timeout_task = None


class GraphQLView(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWsHandler

    def __init__(
        self,
        schema: Any,
        *,
        db: Database,
        hub: EventHub,
        pricing: PricingPolicy,
        authenticator: Authenticator,
        sessions: Sessions,
        max_body_bytes: int,
        direct_delivery: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(schema, **kwargs)
        self.db = db
        self.hub = hub
        self.pricing = pricing
        self.authenticator = authenticator
        self.sessions = sessions
        self.max_body_bytes = max_body_bytes
        # Off when results carry per-result extensions (debug's SQL count).
        self.direct_delivery = direct_delivery
        self._shared_json = SharedJson()

    def encode_json(self, data: object) -> str:
        """A subscription event's ``next`` message reuses the JSON of its data: every
        subscriber of the same operation gets the same data object (app/fanout.py), so it
        is serialized once per event instead of once per subscriber."""
        if type(data) is dict and data.get("type") == "next":
            payload = data.get("payload")
            if type(payload) is dict and len(payload) == 1 and "data" in payload:
                return (
                    f'{{"id":{json_text(data.get("id"))},"type":"next","payload":'
                    f'{{"data":{self._shared_json.dumps(payload["data"])}}}}}'
                )
        return json_text(data)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id_var.set(uuid.uuid4().hex[:16])
        if scope["type"] == "websocket":
            # This is the connection's own task: what is set here stays with it.
            _ws_send.set(send)
            sessions: list[Session] = []
            _ws_sessions.set(sessions)
            try:
                # What Strawberry's ``__call__`` does for a WebSocket, one frame less: every
                # frame here is held for as long as the connection lives.
                await self.run(WebSocket(scope, receive=receive, send=send))
            finally:
                for session in sessions:
                    self.sessions.unregister(session)
            return
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await self._respond(request)
        except BodyTooLarge:
            response = PlainTextResponse(
                f"Request body larger than {self.max_body_bytes} bytes.", status_code=413
            )
        except ClientDisconnect:
            return
        response.headers["X-Request-Id"] = request_id_var.get()
        await response(scope, receive, send)

    async def _respond(self, request: Request) -> Response:
        if request.method == "POST":
            await _read_body(request, self.max_body_bytes)
        try:
            request.state.principal = await self.authenticator.authenticate(
                request.headers.get("authorization")
            )
        except AuthError as exc:
            return _unauthenticated(str(exc))
        try:
            response: Response = await self._run_http(request)
        except HTTPException as e:
            response = PlainTextResponse(e.reason, status_code=e.status_code)
            if request.method == "GET" and "not allowed when using GET" in e.reason:
                # GraphQL over HTTP: mutations only by POST.
                response = PlainTextResponse(e.reason, status_code=405, headers={"Allow": "POST"})
        return response

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        # WebSockets authenticate in on_ws_connect, once the connection_init payload is in.
        principal = getattr(request.state, "principal", ANONYMOUS)
        return Context(
            request=request,
            response=response,
            db=self.db,
            loaders=Loaders(self.db),
            pricing=self.pricing,
            stream=self.hub,
            principal=principal,
            request_id=request_id_var.get(),
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Credentials from the connection_init payload (``authorization``), else from the
        upgrade request's Authorization header. Refused: closed with 4403."""
        params = context.connection_params if isinstance(context.connection_params, dict) else {}
        raw = params.get("authorization", params.get("Authorization"))
        if raw is not None and not isinstance(raw, str):
            raise ConnectionRejectionError({"message": "`authorization` must be a string."})
        websocket: WebSocket = context.request
        if raw is None:
            raw = websocket.headers.get("authorization")
        try:
            principal = await self.authenticator.authenticate(raw)
        except AuthError as exc:
            raise ConnectionRejectionError(
                {"message": str(exc), "extensions": {"code": "UNAUTHENTICATED"}}
            ) from None
        context.principal = principal
        # Checked: the credential is not kept for the life of the connection.
        context.connection_params = None
        if principal.api_key_id is not None or principal.expires_at is not None:

            async def close(reason: str) -> None:
                await websocket.close(code=WS_FORBIDDEN, reason=f"Forbidden: {reason}")

            session = self.sessions.register(principal, close)
            holder = _ws_sessions.get()
            if holder is not None:
                holder.append(session)
        return cast("UnsetType", UNSET)

    async def _run_http(self, request: Request) -> Any:
        """Strawberry's ``run`` for an HTTP request, with GraphQL over HTTP's media types."""
        media = _preferred_media_type(request.headers.get("accept"))
        if (
            request.method in {"GET", "POST"}
            and media is None
            and "text/html" not in (request.headers.get("accept") or "")
        ):
            raise HTTPException(406, f"Accept application/json or {GRAPHQL_RESPONSE_JSON}.")
        result = await self.run(request)
        if (
            media == GRAPHQL_RESPONSE_JSON
            and isinstance(result, Response)
            and result.media_type == "application/json"
        ):
            result.headers["content-type"] = f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8"
            if getattr(request.state, "graphql_request_error", False) and result.status_code == 200:
                result.status_code = 400
        return result

    async def parse_http_body(self, request: Any) -> Any:
        data = await super().parse_http_body(request)
        if request.method == "POST" and _json_without_nul(
            request.content_type, await request.get_body()
        ):
            return data
        for item in data if isinstance(data, list) else [data]:
            if _has_nul(item.query) or _has_nul(item.variables):
                # Valid JSON, but no database stores it: refuse it as a malformed request.
                raise HTTPException(400, "Strings must not contain NUL (\\u0000) characters.")
        return data

    async def process_result(self, request: Any, result: ExecutionResult) -> GraphQLHTTPResponse:
        processed = await super().process_result(request, result)
        if result.data is None and result.errors and all(e.path is None for e in result.errors):
            # Parse or validation failure: nothing was executed.
            request.state.graphql_request_error = True
            if _preferred_media_type(request.headers.get("accept")) == GRAPHQL_RESPONSE_JSON:
                processed.pop("data", None)
        return processed
