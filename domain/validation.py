"""Input rules shared by every use case: documented limits, one clear message each."""

from __future__ import annotations

import re
from collections.abc import Sequence

from domain.errors import DomainError, ErrorCode

MAX_ORDER_LINES = 100
MAX_LINE_QUANTITY = 10_000
MAX_STOCK_DELTA = 1_000_000
MAX_NAME_LENGTH = 200
MAX_NOTE_LENGTH = 1_000
MAX_EXTERNAL_ID_LENGTH = 100
MAX_IDEMPOTENCY_KEY_LENGTH = 100
MAX_ADDRESS_FIELD_LENGTH = 200
MAX_PRIORITY = 1_000_000
MAX_PAGE_SIZE = 100

SKU_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
WAREHOUSE_CODE_RE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,31}$")
EMAIL_RE = re.compile(
    r"^[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+$"
)
PHONE_RE = re.compile(r"^\+?[0-9 ()./-]{4,30}$")
COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
# C0 control characters but tab and newline (a regex: a loop over the characters in Python
# cost a few percent of a whole placeOrder).
CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f]")

Field = Sequence[str]


def _err(field: Field, message: str) -> DomainError:
    return DomainError(ErrorCode.INVALID_INPUT, message, field)


def text(
    value: str | None, field: Field, *, max_length: int, required: bool = True
) -> list[DomainError]:
    if value is None or not value.strip():
        return [_err(field, f"{field[-1]} must not be empty.")] if required else []
    if len(value) > max_length:
        return [_err(field, f"{field[-1]} must be at most {max_length} characters.")]
    if CONTROL_RE.search(value):
        return [_err(field, f"{field[-1]} must not contain control characters.")]
    return []


def sku(value: str, field: Field) -> list[DomainError]:
    if not SKU_RE.fullmatch(value):
        return [
            _err(
                field,
                "SKU must be 1-64 characters: letters, digits, '.', '_' or '-', "
                "starting with a letter or digit.",
            )
        ]
    return []


def warehouse_code(value: str, field: Field) -> list[DomainError]:
    if not WAREHOUSE_CODE_RE.fullmatch(value):
        return [
            _err(
                field,
                "Warehouse code must be 1-32 characters: upper-case letters, digits, '_' or '-'.",
            )
        ]
    return []


def email(value: str, field: Field) -> list[DomainError]:
    if len(value) > 254 or not EMAIL_RE.fullmatch(value):
        return [_err(field, f"{value[:60]!r} is not a valid email address.")]
    return []


def phone(value: str | None, field: Field) -> list[DomainError]:
    if value is not None and not PHONE_RE.fullmatch(value):
        return [_err(field, "Phone must be 4-30 characters of digits, spaces and + ( ) . / -.")]
    return []


def quantity(value: int, field: Field, *, maximum: int = MAX_LINE_QUANTITY) -> list[DomainError]:
    if value < 1:
        return [_err(field, "Quantity must be at least 1.")]
    if value > maximum:
        return [_err(field, f"Quantity must be at most {maximum}.")]
    return []


def stock_delta(value: int, field: Field) -> list[DomainError]:
    if value == 0:
        return [_err(field, "Delta must not be zero.")]
    if abs(value) > MAX_STOCK_DELTA:
        return [_err(field, f"Delta must be between -{MAX_STOCK_DELTA} and {MAX_STOCK_DELTA}.")]
    return []


def non_negative(value: int, field: Field, *, maximum: int) -> list[DomainError]:
    if value < 0 or value > maximum:
        return [_err(field, f"{field[-1]} must be between 0 and {maximum}.")]
    return []


ADDRESS_FIELDS = ("name", "line1", "line2", "city", "region", "postalCode", "country", "phone")
REQUIRED_ADDRESS_FIELDS = ("name", "line1", "city", "postalCode", "country")


def address(values: dict[str, str | None], field: Field) -> list[DomainError]:
    """An address: name, line1, city, postalCode and an ISO 3166 alpha-2 country required."""
    errors: list[DomainError] = []
    for key in ADDRESS_FIELDS:
        errors += text(
            values.get(key),
            [*field, key],
            max_length=MAX_ADDRESS_FIELD_LENGTH,
            required=key in REQUIRED_ADDRESS_FIELDS,
        )
    errors += phone(values.get("phone") or None, [*field, "phone"])
    country = values.get("country")
    if country and not COUNTRY_RE.fullmatch(country):
        errors.append(
            _err(
                [*field, "country"],
                "Country must be an ISO 3166-1 alpha-2 code such as 'US' or 'DE'.",
            )
        )
    return errors
