"""Expected business failures, carried as data up to the API's ``userErrors``."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    INSUFFICIENT_STOCK = "INSUFFICIENT_STOCK"
    INVALID_TRANSITION = "INVALID_TRANSITION"
    PRODUCT_INACTIVE = "PRODUCT_INACTIVE"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    DUPLICATE_EXTERNAL_ID = "DUPLICATE_EXTERNAL_ID"
    NO_WAREHOUSE = "NO_WAREHOUSE"
    FORBIDDEN = "FORBIDDEN"


class DomainError(Exception):
    """One expected failure: a code clients can branch on, a message people can read,
    and the path of the input field at fault (``["input", "lines", "0", "quantity"]``)."""

    def __init__(self, code: ErrorCode, message: str, field: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field: tuple[str, ...] | None = tuple(field) if field is not None else None

    def __repr__(self) -> str:
        return f"DomainError({self.code}, {self.message!r}, {self.field!r})"


class DomainErrors(Exception):
    """Several failures found together (one per bad input line, say)."""

    def __init__(self, errors: Sequence[DomainError]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = list(errors)


def raise_if_any(errors: Sequence[DomainError]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise DomainErrors(errors)
