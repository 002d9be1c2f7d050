"""Reusable query pieces: keyset (cursor) pagination that runs LIMIT n+1, never OFFSET, and
the columns of a model read as plain rows."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, func, inspect, or_, select
from sqlalchemy.orm import InstrumentedAttribute

from db.database import Database
from domain.errors import DomainError, ErrorCode
from domain.validation import MAX_PAGE_SIZE

T = TypeVar("T")
DEFAULT_PAGE_SIZE = 20


#: A row of ``model_columns(model)``: a named tuple that reads like an instance of ``model``
#: (its mapped attributes only). Typed loosely, as the attributes are the model's.
ModelRow = Any

_MODEL_COLUMNS: dict[type[Any], tuple[Any, ...]] = {}


def model_columns(model: type[Any]) -> tuple[Any, ...]:
    """Every mapped column of ``model``, labelled with its attribute name: selecting these
    gives rows that read like the model's instances (``row.unit_price_minor``), with the
    same type conversions, and none of the ORM's per-instance bookkeeping. For what is only
    read and rendered."""
    columns = _MODEL_COLUMNS.get(model)
    if columns is None:
        columns = _MODEL_COLUMNS[model] = tuple(
            getattr(model, prop.key).label(prop.key) for prop in inspect(model).column_attrs
        )
    return columns


class InvalidCursor(DomainError):
    def __init__(self, field: str) -> None:
        super().__init__(
            ErrorCode.INVALID_INPUT, f"`{field}` is not a valid cursor for this list.", [field]
        )


@dataclass(frozen=True, slots=True)
class SortKey:
    """A keyset: the sort column and direction; the primary key breaks ties the same way."""

    name: str
    column: InstrumentedAttribute[Any]
    id_column: InstrumentedAttribute[Any]
    descending: bool
    kind: str  # "int" | "datetime" | "str"


@dataclass(slots=True)
class PageArgs:
    first: int | None = None
    after: str | None = None
    last: int | None = None
    before: str | None = None


@dataclass(slots=True)
class Page(Generic[T]):
    items: list[T]
    cursors: list[str]
    has_next_page: bool
    has_previous_page: bool
    count: Callable[[], Any]  # awaitable factory: runs COUNT(*) only when totalCount is asked


def _encode_value(value: Any, kind: str) -> Any:
    if kind == "datetime":
        return int(value.timestamp() * 1_000_000)
    return value


_MAX_INT64 = 2**63 - 1


def _is_int64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= _MAX_INT64


def _decode_value(value: Any, kind: str) -> Any:
    # A cursor is client input: out-of-range numbers and NUL characters would reach the
    # database driver and fail there, so they are refused here as invalid cursors.
    if kind in ("int", "datetime") and not _is_int64(value):
        raise ValueError
    if kind == "datetime":
        return datetime.fromtimestamp(value / 1_000_000, UTC)
    if kind == "str" and (not isinstance(value, str) or "\x00" in value):
        raise ValueError
    return value


def encode_cursor(key: SortKey, value: Any, id_: int) -> str:
    raw = json.dumps([key.name, _encode_value(value, key.kind), id_], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(key: SortKey, cursor: str, field: str) -> tuple[Any, int]:
    try:
        if len(cursor) > 200:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, value, id_ = json.loads(raw)
        if name != key.name or not _is_int64(id_):
            raise ValueError
        return _decode_value(value, key.kind), id_
    except (ValueError, TypeError, OverflowError, OSError, binascii.Error) as exc:
        raise InvalidCursor(field) from exc


def _beyond(key: SortKey, value: Any, id_: int, forward: bool) -> Any:
    # Rows strictly after (value, id) in the direction of travel.
    ascending = forward != key.descending
    if ascending:
        return or_(key.column > value, and_(key.column == value, key.id_column > id_))
    return or_(key.column < value, and_(key.column == value, key.id_column < id_))


def check_page_args(args: PageArgs) -> None:
    if args.first is not None and args.last is not None:
        raise DomainError(ErrorCode.INVALID_INPUT, "Pass `first` or `last`, not both.", ["first"])
    for name in ("first", "last"):
        n = getattr(args, name)
        if n is not None and not 0 <= n <= MAX_PAGE_SIZE:
            raise DomainError(
                ErrorCode.INVALID_INPUT, f"`{name}` must be between 0 and {MAX_PAGE_SIZE}.", [name]
            )


async def paginate(
    db: Database,
    stmt: Select[Any],
    key: SortKey,
    args: PageArgs,
    row_value: Callable[[Any], Any],
) -> Page[Any]:
    """One keyset page of ``stmt`` (already filtered) ordered by ``key``; ``totalCount`` runs
    its COUNT(*) only when asked for. Each is one statement outside a transaction
    (``Database.read_core``); ``stmt`` usually selects ``model_columns(...)``."""
    check_page_args(args)
    backward = args.last is not None
    size = args.last if backward else (args.first if args.first is not None else DEFAULT_PAGE_SIZE)
    assert size is not None
    filtered = stmt
    if args.after:
        value, id_ = decode_cursor(key, args.after, "after")
        stmt = stmt.where(_beyond(key, value, id_, forward=True))
    if args.before:
        value, id_ = decode_cursor(key, args.before, "before")
        stmt = stmt.where(_beyond(key, value, id_, forward=False))
    ascending = backward == key.descending
    order = (
        [key.column.asc(), key.id_column.asc()]
        if ascending
        else [key.column.desc(), key.id_column.desc()]
    )
    page_stmt = stmt.order_by(*order).limit(size + 1)
    rows = list(await db.read_core(lambda conn: conn.execute(page_stmt).all()))
    more = len(rows) > size
    rows = rows[:size]
    if backward:
        rows.reverse()

    async def count() -> int:
        return int(await db.read_core(lambda conn: conn.execute(count_of(filtered)).scalar_one()))

    return Page(
        items=rows,
        cursors=[encode_cursor(key, row_value(r), r.id) for r in rows],
        has_next_page=more if not backward else bool(args.before),
        has_previous_page=more if backward else bool(args.after),
        count=count,
    )


def count_of(stmt: Select[Any]) -> Select[Any]:
    return select(func.count()).select_from(stmt.order_by(None).subquery())


def in_chunks(values: Sequence[T], size: int = 500) -> list[Sequence[T]]:
    return [values[i : i + size] for i in range(0, len(values), size)]
