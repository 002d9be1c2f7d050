"""Authentication: an ``Authorization: Bearer …`` credential → a Principal.

Two kinds of credential:

- API keys (``og_…``) for staff tools and integrations, created with
  ``ordergraph api-key create``. Only their SHA-256 hash is stored; every request looks the
  key up, so a revoked key stops working with the next request.
- Signed tokens (JWT, HS256) for customer apps: ``sub`` is the customer's global ID,
  ``aud`` is ``ORDERGRAPH_JWT_AUDIENCE`` (default ``ordergraph``), ``exp`` is required and
  ``iss`` must equal ``ORDERGRAPH_JWT_ISSUER`` when that is set. Anything holding
  ``ORDERGRAPH_JWT_SECRET`` can mint them: ``ordergraph token`` for development, or an
  existing identity provider.

Open WebSocket connections are tracked (``Sessions``) so that a connection ends when its key
is revoked or its token expires.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from sqlalchemy import select

from app.settings import Settings
from db.database import Database
from db.models import ApiKey, utcnow
from domain.access import ANONYMOUS, Principal
from resolvers.access import (
    KEY_PREFIX,
    LAST_USED_RESOLUTION,
    find_api_key,
    key_prefix,
    needs_touch,
    principal_of,
    touch_api_key,
)
from schema.common import parse_global_id, to_global_id

log = logging.getLogger("ordergraph.auth")

JWT_ALGORITHM = "HS256"
#: Clock skew tolerated between the token's issuer and this server.
JWT_LEEWAY_SECONDS = 10


class AuthError(Exception):
    """Credentials were sent but are not valid. The message is safe to show the client."""


def mint_customer_token(
    settings: Settings, customer_id: int, ttl_seconds: int | None = None
) -> str:
    """A customer token, as an identity provider would mint it."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(to_global_id("Customer", customer_id)),
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + (ttl_seconds or settings.token_ttl_seconds),
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, settings.jwt_secret, algorithm=JWT_ALGORITHM)


def _fingerprint(credential: str) -> str:
    """What a log may say about a credential: never the secret part."""
    if credential.startswith(KEY_PREFIX):
        return f"API key {key_prefix(credential)}…"
    return f"token of {len(credential)} characters"


class Authenticator:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._touches: set[asyncio.Task[None]] = set()
        self._touched: dict[int, datetime] = {}  # key id → last use recorded by this process

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller behind an Authorization header value; ANONYMOUS when there is none.
        Raises AuthError for malformed, unknown, revoked or expired credentials."""
        if authorization is None or not authorization.strip():
            return ANONYMOUS
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            log.warning("authentication failed: Authorization header is not `Bearer <credential>`")
            raise AuthError(
                "Malformed Authorization header: expected `Bearer <API key or customer token>`."
            )
        if credential.startswith(KEY_PREFIX):
            return await self._api_key(credential)
        return self._token(credential)

    async def _api_key(self, key: str) -> Principal:
        record = await find_api_key(self.db, key)
        if record is None:
            log.warning("authentication failed: unknown or revoked %s", _fingerprint(key))
            raise AuthError("Invalid or revoked API key.")
        now = utcnow()
        seen = self._touched.get(record.id)
        if needs_touch(record, now) and (seen is None or now - seen >= LAST_USED_RESOLUTION):
            # One write per key per interval, however many requests arrive at once.
            self._touched[record.id] = now
            task = asyncio.create_task(self._touch(record.id, now))
            self._touches.add(task)
            task.add_done_callback(self._touches.discard)
        return principal_of(record)

    async def _touch(self, key_id: int, now: datetime) -> None:
        try:
            await touch_api_key(self.db, key_id, now)
        except Exception:  # recording last use must never fail a request
            log.exception("could not record the use of API key %s", key_id)

    async def drain(self) -> None:
        """Wait for pending last-use updates (at shutdown, and in tests)."""
        while self._touches:
            await asyncio.gather(*list(self._touches), return_exceptions=True)

    def _token(self, token: str) -> Principal:
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                s.jwt_secret,
                algorithms=[JWT_ALGORITHM],
                audience=s.jwt_audience,
                issuer=s.jwt_issuer or None,
                leeway=JWT_LEEWAY_SECONDS,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            log.warning("authentication failed: expired %s", _fingerprint(token))
            raise AuthError("The token has expired.") from None
        except jwt.InvalidTokenError as exc:
            log.warning("authentication failed: %s (%s)", _fingerprint(token), type(exc).__name__)
            raise AuthError("Invalid token.") from None
        try:
            type_name, customer_id = parse_global_id(str(claims["sub"]))
            if type_name != "Customer":
                raise ValueError
        except ValueError:
            log.warning("authentication failed: token whose sub is not a customer ID")
            raise AuthError("Invalid token: `sub` must be a customer's global ID.") from None
        return Principal.for_customer(
            customer_id, expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC)
        )


Close = Callable[[str], Awaitable[None]]


@dataclass(eq=False)
class Session:
    principal: Principal
    close: Close
    expiry: asyncio.TimerHandle | None = field(default=None, repr=False)


class Sessions:
    """Open WebSocket connections and the credentials they run on.

    Every ``recheck_seconds`` one query asks whether any of their API keys was revoked
    (revocation may come from another process, such as the command line); a token's
    connection is closed when the token expires."""

    def __init__(self, db: Database, recheck_seconds: float) -> None:
        self.db = db
        self.recheck_seconds = recheck_seconds
        self._sessions: set[Session] = set()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def register(self, principal: Principal, close: Close) -> Session:
        session = Session(principal, close)
        self._sessions.add(session)
        if principal.expires_at is not None:
            delay = max(0.0, (principal.expires_at - utcnow()).total_seconds())
            session.expiry = asyncio.get_running_loop().call_later(
                delay, self._end_soon, session, "token expired"
            )
        return session

    def unregister(self, session: Session) -> None:
        self._sessions.discard(session)
        if session.expiry is not None:
            session.expiry.cancel()

    def _end_soon(self, session: Session, reason: str) -> None:
        asyncio.get_running_loop().create_task(self._end(session, reason))

    async def _end(self, session: Session, reason: str) -> None:
        if session not in self._sessions:
            return
        self.unregister(session)
        log.info("ending WebSocket connection of %s: %s", session.principal.id, reason)
        try:
            await session.close(reason)
        except Exception:  # already closing or closed
            log.debug("closing a WebSocket failed", exc_info=True)

    async def check_revocations(self) -> None:
        by_key: dict[int, list[Session]] = {}
        for s in self._sessions:
            if s.principal.api_key_id is not None:
                by_key.setdefault(s.principal.api_key_id, []).append(s)
        if not by_key:
            return
        async with self.db.reader() as db:
            revoked = set(
                (
                    await db.execute(
                        select(ApiKey.id).where(
                            ApiKey.id.in_(by_key), ApiKey.revoked_at.is_not(None)
                        )
                    )
                ).scalars()
            )
        for key_id in revoked:
            for s in by_key[key_id]:
                await self._end(s, "API key revoked")

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="ordergraph-sessions")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for s in list(self._sessions):
            self.unregister(s)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.recheck_seconds)
            try:
                await self.check_revocations()
            except Exception:
                log.exception("checking for revoked API keys failed; retrying")
