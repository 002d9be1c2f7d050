from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, and_, bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import IdempotencyRecord
from db.prepared import Prepared
from domain.access import Principal
from domain.errors import DomainError, ErrorCode

T = TypeVar("T")


def request_hash(payload: dict[str, Any]) -> str:
    """A stable fingerprint of a request, to tell a retry from a different request."""
    return hashlib.sha256(_CANONICAL.encode(payload).encode()).hexdigest()


#: ``json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)``, the text
#: fingerprints have always hashed, with the encoder made once: ``dumps`` made one for every
#: call, which was 4 of its 10 us for a placeOrder.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


async def get_or_not_found(
    session: AsyncSession,
    model: type[Any],
    id_: int,
    field: list[str],
    label: str,
    *,
    for_update: bool = False,
) -> Any:
    stmt = select(model).where(model.id == id_)
    if for_update:
        stmt = stmt.with_for_update()
    obj = (await session.execute(stmt)).scalar_one_or_none()
    if obj is None:
        raise DomainError(ErrorCode.NOT_FOUND, f"No {label} with this id.", field)
    return obj


def idempotency_scope(operation: str, actor: Principal) -> str:
    """Idempotency keys are per caller: two clients may both use "order-1" as a key, and
    neither may ever receive what the other created."""
    return f"{operation}@{actor.id}"[:64]


async def replay(
    session: AsyncSession, scope: str, key: str | None, fingerprint: str, model: type[Any]
) -> Any | None:
    """The resource an earlier request with this idempotency key created, if any."""
    if key is None:
        return None
    resource_id = await session.run_sync(
        lambda sync: replayed_id(sync.connection(), scope, key, fingerprint)
    )
    return None if resource_id is None else await session.get(model, resource_id)


#: The idempotency record of key ``key`` in scope ``scope`` (parameters of those names).
RECORD_OF_KEY = and_(
    IdempotencyRecord.scope == bindparam("scope"), IdempotencyRecord.key == bindparam("key")
)
_IDEMPOTENCY_RECORD = Prepared(
    select(IdempotencyRecord.request_hash, IdempotencyRecord.resource_id).where(RECORD_OF_KEY)
)
_REMEMBER = Prepared(insert(IdempotencyRecord))


#: An idempotency record as another read found it: (request hash, resource id), both None
#: when there is none.
FoundRecord = tuple[str | None, int | None]


def replayed_id(
    conn: Connection,
    scope: str,
    key: str | None,
    fingerprint: str,
    found: FoundRecord | None = None,
) -> int | None:
    """``replay`` for Core use cases: the id of what an earlier request with this key made.
    ``found``: the record as a read of the caller's already found it (else it is read)."""
    if key is None:
        return None
    if found is None:
        row = _IDEMPOTENCY_RECORD.first(conn, {"scope": scope, "key": key})
        found = (row.request_hash, row.resource_id) if row is not None else (None, None)
    request_hash, resource_id = found
    if request_hash is None or resource_id is None:
        return None
    if request_hash != fingerprint:
        raise DomainError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "This idempotency key was used for a different request.",
            ["input", "idempotencyKey"],
        )
    return int(resource_id)


def remember_id(
    conn: Connection, scope: str, key: str | None, fingerprint: str, resource_id: int
) -> None:
    """``remember`` for Core use cases."""
    if key is not None:
        _REMEMBER.execute(
            conn,
            {"scope": scope, "key": key, "request_hash": fingerprint, "resource_id": resource_id},
        )


def remember(
    session: AsyncSession, scope: str, key: str | None, fingerprint: str, resource_id: int
) -> None:
    if key is not None:
        session.add(
            IdempotencyRecord(
                scope=scope, key=key, request_hash=fingerprint, resource_id=resource_id
            )
        )


async def retry_on_conflict(call: Callable[[], Awaitable[T]], attempts: int = 3) -> T:
    """Run a transaction again when a concurrent one won a unique key: the retry then sees
    the winner's row (an idempotent replay, or a clear ALREADY_EXISTS)."""
    for attempt in range(attempts):
        try:
            return await call()
        except IntegrityError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
