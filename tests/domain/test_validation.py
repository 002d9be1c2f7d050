"""Input rules: each returns a list of INVALID_INPUT errors carrying the field path."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import validation as v
from domain.errors import DomainError, ErrorCode

FIELD = ("input", "lines", "3", "sku")


def assert_one_error(errors: list[DomainError], field: tuple[str, ...]) -> DomainError:
    assert len(errors) == 1, errors
    (error,) = errors
    assert error.code is ErrorCode.INVALID_INPUT
    assert error.field == field
    assert error.message
    return error


@pytest.mark.parametrize("value", ["A", "TEE-1", "tee_shirt.red", "0abc", "X" * 64, "a-b_c.d", "9"])
def test_sku_valid(value: str) -> None:
    assert v.sku(value, list(FIELD)) == []


@pytest.mark.parametrize(
    "value",
    ["", "-TEE", ".tee", "_x", "TEE SHIRT", "TEE/1", "X" * 65, "tée", "TEE\n", "TEE\x00"],
)
def test_sku_invalid(value: str) -> None:
    error = assert_one_error(v.sku(value, list(FIELD)), FIELD)
    assert "SKU" in error.message


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True))
def test_sku_accepts_documented_alphabet(value: str) -> None:
    assert v.sku(value, ["sku"]) == []


@pytest.mark.parametrize("value", ["MAIN", "EU-1", "W_2", "0", "A" * 32])
def test_warehouse_code_valid(value: str) -> None:
    assert v.warehouse_code(value, ["input", "code"]) == []


@pytest.mark.parametrize("value", ["", "main", "-A", "A B", "A" * 33, "A.B"])
def test_warehouse_code_invalid(value: str) -> None:
    assert_one_error(v.warehouse_code(value, ["input", "code"]), ("input", "code"))


@pytest.mark.parametrize(
    "value",
    [
        "a@example.com",
        "first.last+tag@sub.example.co.uk",
        "x@a-b.io",
        "USER@EXAMPLE.ORG",
        "o'brien@example.ie",
    ],
)
def test_email_valid(value: str) -> None:
    assert v.email(value, ["input", "email"]) == []


@pytest.mark.parametrize(
    "value",
    [
        "",
        "plain",
        "@example.com",
        "a@",
        "a@example",  # no dot in the domain
        "a@@example.com",
        "a b@example.com",
        "a@-example.com",
        "a@example-.com",
        "a@exa_mple.com",
        "a@example..com",
        "a" * 65 + "@example.com",
        "a@" + "b" * 65 + ".com",  # a 65-character domain label
        "a@" + ".".join(["b" * 60] * 5) + ".com",  # over 254 characters
    ],
)
def test_email_invalid(value: str) -> None:
    error = assert_one_error(v.email(value, ["input", "email"]), ("input", "email"))
    assert "email" in error.message


@pytest.mark.parametrize(
    "value", [None, "+1 (555) 123-4567", "0123", "+44 20 7946 0958", "1.2/3-4"]
)
def test_phone_valid(value: str | None) -> None:
    assert v.phone(value, ["input", "phone"]) == []


@pytest.mark.parametrize(
    "value", ["", "123", "call me", "+1 555 CALL", "1" * 31, "++1234", "12#45"]
)
def test_phone_invalid(value: str) -> None:
    error = assert_one_error(v.phone(value, ["input", "phone"]), ("input", "phone"))
    assert "Phone" in error.message


@pytest.mark.parametrize("value", [1, 2, v.MAX_LINE_QUANTITY])
def test_quantity_valid(value: int) -> None:
    assert v.quantity(value, ["input", "lines", "0", "quantity"]) == []


@pytest.mark.parametrize(
    ("value", "needle"),
    [(0, "at least 1"), (-5, "at least 1"), (v.MAX_LINE_QUANTITY + 1, "at most 10000")],
)
def test_quantity_invalid(value: int, needle: str) -> None:
    field = ("input", "lines", "7", "quantity")
    error = assert_one_error(v.quantity(value, list(field)), field)
    assert needle in error.message


def test_quantity_custom_maximum() -> None:
    assert v.quantity(50, ["q"], maximum=50) == []
    assert_one_error(v.quantity(51, ["q"], maximum=50), ("q",))


@pytest.mark.parametrize("value", [1, -1, v.MAX_STOCK_DELTA, -v.MAX_STOCK_DELTA])
def test_stock_delta_valid(value: int) -> None:
    assert v.stock_delta(value, ["input", "delta"]) == []


@pytest.mark.parametrize("value", [0, v.MAX_STOCK_DELTA + 1, -v.MAX_STOCK_DELTA - 1])
def test_stock_delta_invalid(value: int) -> None:
    assert_one_error(v.stock_delta(value, ["input", "delta"]), ("input", "delta"))


def test_non_negative_bounds() -> None:
    assert v.non_negative(0, ["input", "priority"], maximum=v.MAX_PRIORITY) == []
    assert v.non_negative(v.MAX_PRIORITY, ["input", "priority"], maximum=v.MAX_PRIORITY) == []
    for bad in (-1, v.MAX_PRIORITY + 1):
        error = assert_one_error(
            v.non_negative(bad, ["input", "priority"], maximum=v.MAX_PRIORITY),
            ("input", "priority"),
        )
        assert error.message.startswith("priority ")


def test_text_length_limit_is_inclusive() -> None:
    field = ["input", "note"]
    assert v.text("x" * v.MAX_NOTE_LENGTH, field, max_length=v.MAX_NOTE_LENGTH) == []
    error = assert_one_error(
        v.text("x" * (v.MAX_NOTE_LENGTH + 1), field, max_length=v.MAX_NOTE_LENGTH),
        ("input", "note"),
    )
    assert "at most 1000 characters" in error.message


@pytest.mark.parametrize("value", [None, "", "   ", "\t\n"])
def test_text_required_and_optional(value: str | None) -> None:
    error = assert_one_error(v.text(value, ["input", "name"], max_length=10), ("input", "name"))
    assert error.message == "name must not be empty."
    assert v.text(value, ["input", "name"], max_length=10, required=False) == []


@pytest.mark.parametrize("value", ["a\x00b", "bell\x07", "cr\rlf", "esc\x1b[0m"])
def test_text_rejects_control_characters(value: str) -> None:
    error = assert_one_error(v.text(value, ["input", "note"], max_length=100), ("input", "note"))
    assert "control characters" in error.message


@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=30))
def test_text_refuses_exactly_the_control_characters_but_tab_and_newline(value: str) -> None:
    controls = any(ord(c) < 32 and c not in "\t\n" for c in value)
    errors = v.text("x" + value, ["input", "note"], max_length=100)
    assert bool(errors) == controls
    if controls:
        assert "control characters" in errors[0].message


@pytest.mark.parametrize("value", ["tab\there", "two\nlines", "naïve café ☕"])
def test_text_allows_tabs_newlines_and_unicode(value: str) -> None:
    assert v.text(value, ["input", "note"], max_length=100) == []


GOOD_ADDRESS: dict[str, str | None] = {
    "name": "Ada Lovelace",
    "line1": "1 Main St",
    "line2": None,
    "city": "London",
    "region": None,
    "postalCode": "N1 9GU",
    "country": "GB",
    "phone": None,
}
ADDRESS_FIELD = ["input", "shippingAddress"]


def test_address_valid() -> None:
    assert v.address(GOOD_ADDRESS, ADDRESS_FIELD) == []
    full = {**GOOD_ADDRESS, "line2": "Flat 2", "region": "Greater London", "phone": "+44 1"}
    assert v.address(full, ADDRESS_FIELD) == []


@pytest.mark.parametrize("key", v.REQUIRED_ADDRESS_FIELDS)
def test_address_required_field_missing(key: str) -> None:
    for missing in (None, "", "  "):
        errors = v.address({**GOOD_ADDRESS, key: missing}, ADDRESS_FIELD)
        assert errors, (key, missing)
        assert all(e.field == (*ADDRESS_FIELD, key) for e in errors)
        assert any(e.message == f"{key} must not be empty." for e in errors)


@pytest.mark.parametrize("country", ["gb", "GBR", "G", "1A", "U.S."])
def test_address_country_must_be_alpha2(country: str) -> None:
    error = assert_one_error(
        v.address({**GOOD_ADDRESS, "country": country}, ADDRESS_FIELD),
        ("input", "shippingAddress", "country"),
    )
    assert "ISO 3166-1 alpha-2" in error.message


@pytest.mark.parametrize("key", v.ADDRESS_FIELDS)
def test_address_field_length_limit(key: str) -> None:
    too_long = "A" * (v.MAX_ADDRESS_FIELD_LENGTH + 1)
    errors = v.address({**GOOD_ADDRESS, key: too_long}, ADDRESS_FIELD)
    fields = {e.field for e in errors}
    assert fields == {(*ADDRESS_FIELD, key)}
    assert any("at most 200 characters" in e.message for e in errors)


def test_address_reports_every_bad_field() -> None:
    bad = {**GOOD_ADDRESS, "name": "", "city": None, "line2": "x\x00", "country": "usa"}
    errors = v.address(bad, ADDRESS_FIELD)
    assert [e.field[-1] for e in errors if e.field] == ["name", "line2", "city", "country"]
    assert all(e.code is ErrorCode.INVALID_INPUT for e in errors)
