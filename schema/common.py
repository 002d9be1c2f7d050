"""Shared GraphQL pieces: Node and global IDs, Money, UserError, page info, connections."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any, Generic, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from domain.errors import DomainError, DomainErrors, ErrorCode
from domain.money import amount_of
from resolvers.queries import PageArgs

T = TypeVar("T")

UserErrorCode = strawberry.enum(
    ErrorCode, name="UserErrorCode", description="What kind of business failure a userError is."
)


class InputError(GraphQLError):
    """A malformed argument of a query: a GraphQL error with a clear message and a code."""

    def __init__(self, message: str, code: str = "BAD_USER_INPUT") -> None:
        super().__init__(message, extensions={"code": code})


@strawberry.interface(description="An object with a global ID (Relay).")
class Node:
    id: strawberry.ID


def to_global_id(type_name: str, id_: int) -> strawberry.ID:
    return strawberry.ID(base64.b64encode(f"{type_name}:{id_}".encode()).decode())


def parse_global_id(value: str) -> tuple[str, int]:
    try:
        if len(value) > 100:
            raise ValueError
        type_name, _, raw = base64.b64decode(value, validate=True).decode().partition(":")
        if not type_name or not raw.isdigit() or len(raw) > 18:
            raise ValueError
        return type_name, int(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"{value[:40]!r} is not a valid ID") from exc


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1].upper() in "AEIOU" else f"a {noun}"


def decode_id(value: str, type_name: str, field: Sequence[str]) -> int:
    """The database id inside a global ID of ``type_name``, or an INVALID_INPUT DomainError."""
    try:
        found, id_ = parse_global_id(value)
    except ValueError as exc:
        raise DomainError(ErrorCode.INVALID_INPUT, f"{exc}.", field) from exc
    if found != type_name:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            f"Expected the ID of {_a(type_name)}, got the ID of {_a(found)}.",
            field,
        )
    return id_


def query_id(value: str, type_name: str, argument: str = "id") -> int:
    """Like ``decode_id`` for query arguments, where a malformed ID is a GraphQL error."""
    try:
        return decode_id(value, type_name, [argument])
    except DomainError as exc:
        raise InputError(f"Argument `{argument}`: {exc.message}") from exc


@strawberry.type(description="An exact amount of money. `amount` is a decimal string.")
class Money:
    amount: Decimal
    currency: str

    @classmethod
    def of(cls, minor: int, currency: str) -> Money:
        return _money_of(minor, currency)


@lru_cache(maxsize=4096)
def _money_of(minor: int, currency: str) -> Money:
    """One Money per amount, shared by every result that shows it (a page of orders shows
    the same prices again and again; results are never changed once made)."""
    return Money(amount=amount_of(minor, currency), currency=currency)


@strawberry.type(description="A business failure of a mutation: nothing was changed.")
class UserError:
    field: list[str] | None = strawberry.field(
        description='Path to the input field at fault, e.g. ["input", "lines", "0", "quantity"].'
    )
    message: str
    code: UserErrorCode  # type: ignore[valid-type]


def user_errors(exc: DomainError | DomainErrors) -> list[UserError]:
    errors = exc.errors if isinstance(exc, DomainErrors) else [exc]
    return [
        UserError(field=list(e.field) if e.field else None, message=e.message, code=e.code)
        for e in errors
    ]


async def mutate(
    call: Awaitable[Any], ok: Callable[[Any], T], failed: Callable[[list[UserError]], T]
) -> T:
    """Run a use case; business failures become the payload's ``userErrors``."""
    try:
        result = await call
    except (DomainError, DomainErrors) as exc:
        return failed(user_errors(exc))
    return ok(result)


async def run_query(call: Awaitable[T]) -> T:
    """Run a read; a DomainError (a bad cursor, say) becomes a GraphQL error."""
    try:
        return await call
    except DomainError as exc:
        raise InputError(exc.message) from exc


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo
    _count: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="How many items match the filter, across all pages.")
    async def total_count(self) -> int:
        return await self._count()

    @strawberry.field(description="The nodes of `edges`, for clients that need no cursors.")
    def nodes(self) -> list[T]:
        return [e.node for e in self.edges]

    @classmethod
    def build(cls, page: Any, convert: Callable[[Any], T]) -> Connection[T]:
        edges = [
            Edge(cursor=c, node=convert(item))
            for item, c in zip(page.items, page.cursors, strict=True)
        ]
        return cls(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=page.has_previous_page,
                start_cursor=page.cursors[0] if page.cursors else None,
                end_cursor=page.cursors[-1] if page.cursors else None,
            ),
            _count=page.count,
        )


def page_args(
    first: int | None, after: str | None, last: int | None, before: str | None
) -> PageArgs:
    return PageArgs(first=first, after=after, last=last, before=before)


def context(info: Info[Any, Any]) -> Any:
    return info.context
