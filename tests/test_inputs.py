"""schema.inputs: the fast input conversion builds exactly what Strawberry's own would."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from strawberry.types.arguments import InputContext, convert_argument

from app.main import make_schema
from domain.orders import PaymentMethod, SalesChannel
from schema.addresses import AddressInput
from schema.customers import CreateCustomerInput
from schema.orders import CancelOrderInput, OrderLineInput, PlaceOrderInput

SCHEMA = make_schema()
FAST_TYPES = [PlaceOrderInput, OrderLineInput, AddressInput, CreateCustomerInput]


def convert(value: dict[str, Any], type_: type, *, fast: bool) -> Any:
    registry = SCHEMA.schema_converter.scalar_registry
    if fast:
        return convert_argument(value, type_, registry, SCHEMA.config)
    # Strawberry's own conversion: the same call with every fast hook taken away.
    saved = {t: t.__strawberry_definition__.from_input for t in FAST_TYPES}  # type: ignore[attr-defined]
    try:
        for t in FAST_TYPES:
            t.__strawberry_definition__.from_input = None  # type: ignore[attr-defined]
        return convert_argument(value, type_, registry, SCHEMA.config)
    finally:
        for t, hook in saved.items():
            t.__strawberry_definition__.from_input = hook  # type: ignore[attr-defined]


text = st.text(max_size=6)
optional_text = st.none() | text


def omittable(fields: dict[str, st.SearchStrategy[Any]], required: set[str]) -> Any:
    """Dicts keyed by GraphQL names: required keys always, optional ones sometimes."""
    return st.fixed_dictionaries(
        {k: v for k, v in fields.items() if k in required},
        optional={k: v for k, v in fields.items() if k not in required},
    )


addresses = omittable(
    {
        "name": text,
        "line1": text,
        "city": text,
        "postalCode": text,
        "country": text,
        "line2": optional_text,
        "region": optional_text,
        "phone": optional_text,
    },
    {"name", "line1", "city", "postalCode", "country"},
)
customers = omittable(
    {"name": text, "email": text, "phone": optional_text, "addresses": st.lists(addresses)},
    {"name", "email"},
)
place_order_inputs = omittable(
    {
        "channel": st.sampled_from(SalesChannel),
        "paymentMethod": st.sampled_from(PaymentMethod),
        "lines": st.lists(st.fixed_dictionaries({"sku": text, "quantity": st.integers()})),
        "shippingAddress": addresses,
        "customerId": optional_text,
        "customer": st.none() | customers,
        "externalId": optional_text,
        "note": optional_text,
        "idempotencyKey": optional_text,
    },
    {"channel", "paymentMethod", "lines", "shippingAddress"},
)


@settings(max_examples=200)
@given(place_order_inputs)
def test_place_order_input_converts_as_strawberry_would(value: dict[str, Any]) -> None:
    fast = convert(value, PlaceOrderInput, fast=True)
    assert fast == convert(value, PlaceOrderInput, fast=False)
    assert all(isinstance(line, OrderLineInput) for line in fast.lines)
    assert isinstance(fast.shipping_address, AddressInput)


def test_lists_are_copies_and_defaults_apply() -> None:
    lines = [{"sku": "TEE", "quantity": 1}]
    value = {
        "channel": SalesChannel.WEB,
        "paymentMethod": PaymentMethod.CARD,
        "lines": lines,
        "shippingAddress": {
            "name": "A",
            "line1": "B",
            "city": "C",
            "postalCode": "D",
            "country": "US",
        },
        "customer": {"name": "N", "email": "e@example.com"},
    }
    fast = convert(value, PlaceOrderInput, fast=True)
    assert fast.customer.addresses == []  # the Python default, as Strawberry gives it
    assert fast.note is None and fast.customer_id is None
    fast.lines.append(OrderLineInput(sku="X", quantity=1))
    assert len(lines) == 1


def test_input_context_is_what_strawberry_passes() -> None:
    # The hook's signature is Strawberry's public integration point: fail loudly if it moves.
    assert {"info", "config", "scalar_registry", "path"} <= set(InputContext.__dataclass_fields__)
    assert CancelOrderInput.__strawberry_definition__.from_input is not None  # type: ignore[attr-defined]
