"""API keys: create (shown once), look up by hash, record use, revoke, list."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update

from db.database import Database
from db.models import ApiKey, Customer, utcnow
from db.prepared import Prepared
from db.uow import UnitOfWork
from domain.access import API_KEY_ROLES, Principal, Role, Scope, parse_scopes
from domain.errors import DomainError, ErrorCode

KEY_PREFIX = "og_"
#: How stale ``last_used_at`` may get: recording every request would make each read a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
SYSTEM = Principal.system("access")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    """The public part of a key (``og_3f9a1c2b``): safe to log, enough to tell keys apart."""
    return key[: len(KEY_PREFIX) + 8]


@dataclass(frozen=True)
class NewApiKey:
    key: str  # the only time the secret exists outside the caller's hands
    record: ApiKey


async def create_api_key(
    db: Database, name: str, role: Role, scopes: Sequence[Scope] = ()
) -> NewApiKey:
    """Create a key; the returned ``key`` is never stored and cannot be shown again."""
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise DomainError(ErrorCode.INVALID_INPUT, "The name must have 1 to 100 characters.")
    if role not in API_KEY_ROLES:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            f"API keys are for {', '.join(API_KEY_ROLES)}; customers use signed tokens.",
        )
    if scopes and role is not Role.INTEGRATION:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            "Scopes apply to INTEGRATION keys only; other roles have all the rights of their role.",
        )
    if role is Role.INTEGRATION and not scopes:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            "An INTEGRATION key needs at least one scope, e.g. orders:read.",
        )
    key = KEY_PREFIX + secrets.token_hex(4) + "_" + secrets.token_urlsafe(32)
    record = ApiKey(
        name=name,
        role=role.value,
        scopes=",".join(sorted(s.value for s in scopes)),
        prefix=key_prefix(key),
        key_hash=hash_key(key),
    )
    async with UnitOfWork(db, SYSTEM) as uow:
        uow.session.add(record)
        await uow.commit()
    return NewApiKey(key=key, record=record)


def principal_of(record: ApiKey | LiveKey) -> Principal:
    return Principal.for_api_key(
        record.id, record.name, Role(record.role), parse_scopes(record.scopes)
    )


@dataclass(frozen=True, slots=True)
class LiveKey:
    """What authentication needs of a key row."""

    id: int
    name: str
    role: str
    scopes: str
    last_used_at: datetime | None


# Built once: this runs on every request that carries a key.
_KEY_BY_HASH = Prepared(
    select(
        ApiKey.id, ApiKey.name, ApiKey.role, ApiKey.scopes, ApiKey.last_used_at, ApiKey.revoked_at
    ).where(ApiKey.key_hash == bindparam("key_hash"))
)


async def find_api_key(db: Database, key: str) -> LiveKey | None:
    """The live (not revoked) key with this secret, or None. One indexed read per request,
    never cached, so a revocation takes effect with the next request."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    key_hash = hash_key(key)
    row = await db.read_core(lambda conn: _KEY_BY_HASH.first(conn, {"key_hash": key_hash}))
    if row is None or row.revoked_at is not None:
        return None
    return LiveKey(row.id, row.name, row.role, row.scopes, row.last_used_at)


def needs_touch(record: LiveKey, now: datetime) -> bool:
    return record.last_used_at is None or now - record.last_used_at >= LAST_USED_RESOLUTION


async def touch_api_key(db: Database, key_id: int, now: datetime) -> None:
    """Record a use, at most once per LAST_USED_RESOLUTION."""
    async with UnitOfWork(db, SYSTEM) as uow:
        await uow.session.execute(
            update(ApiKey)
            .where(
                ApiKey.id == key_id,
                (ApiKey.last_used_at.is_(None))
                | (ApiKey.last_used_at < now - LAST_USED_RESOLUTION),
            )
            .values(last_used_at=now)
        )
        await uow.commit()


async def revoke_api_key(db: Database, key_id: int) -> ApiKey:
    """Revoke a key at once. Revoking twice keeps the first time."""
    async with UnitOfWork(db, SYSTEM) as uow:
        record = await uow.session.get(ApiKey, key_id)
        if record is None:
            raise DomainError(ErrorCode.NOT_FOUND, f"No API key with id {key_id}.")
        if record.revoked_at is None:
            record.revoked_at = utcnow()
        await uow.commit()
    return record


async def list_api_keys(db: Database) -> list[ApiKey]:
    async with db.reader() as s:
        return list((await s.execute(select(ApiKey).order_by(ApiKey.id))).scalars())


async def revoked_since(db: Database, since: datetime) -> list[ApiKey]:
    """Keys revoked at or after ``since``: how running servers learn of a revocation."""
    async with db.reader() as s:
        return list(
            (
                await s.execute(
                    select(ApiKey).where(ApiKey.revoked_at >= since).order_by(ApiKey.revoked_at)
                )
            ).scalars()
        )


async def find_customer_id(db: Database, ref: str) -> int:
    """A customer by numeric id or email, for the ``token`` command."""
    async with db.reader() as s:
        stmt = (
            select(Customer.id).where(Customer.id == int(ref))
            if ref.isdigit()
            else select(Customer.id).where(Customer.email == ref.strip().lower())
        )
        found = (await s.execute(stmt)).scalar_one_or_none()
    if found is None:
        raise DomainError(ErrorCode.NOT_FOUND, f"No customer {ref!r} (give an id or an email).")
    return int(found)
