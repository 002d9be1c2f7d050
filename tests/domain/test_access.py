"""Principals, scopes and the customer cancellation rule (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.access import (
    ANONYMOUS,
    CUSTOMER_CANCELLABLE,
    Principal,
    Role,
    Scope,
    check_customer_may_cancel,
    parse_scopes,
)
from domain.errors import DomainError, ErrorCode
from domain.orders import OrderStatus


def test_parse_scopes_accepts_a_comma_list_and_ignores_blanks() -> None:
    assert parse_scopes("orders:read, inventory:write,,") == {
        Scope.ORDERS_READ,
        Scope.INVENTORY_WRITE,
    }
    assert parse_scopes(["catalog:read"]) == {Scope.CATALOG_READ}
    assert parse_scopes("") == frozenset()


def test_parse_scopes_names_the_unknown_scope() -> None:
    with pytest.raises(ValueError, match="'orders:delete'"):
        parse_scopes("orders:read,orders:delete")


@given(st.sets(st.sampled_from(list(Scope))))
def test_parse_scopes_round_trips(scopes: set[Scope]) -> None:
    assert parse_scopes(",".join(s.value for s in scopes)) == scopes


def test_api_key_principal_keeps_scopes_only_for_integrations() -> None:
    staff = Principal.for_api_key(3, "desk", Role.STAFF, frozenset({Scope.ORDERS_READ}))
    assert staff.id == "api-key:3" and staff.scopes == frozenset()
    erp = Principal.for_api_key(4, "erp", Role.INTEGRATION, frozenset({Scope.ORDERS_READ}))
    assert erp.scopes == {Scope.ORDERS_READ} and erp.api_key_id == 4


@pytest.mark.parametrize("role", [Role.CUSTOMER, Role.ANONYMOUS])
def test_api_keys_cannot_carry_customer_or_anonymous_roles(role: Role) -> None:
    with pytest.raises(ValueError):
        Principal.for_api_key(1, "x", role)


def test_customer_owns_only_their_own_data() -> None:
    alice = Principal.for_customer(7)
    assert alice.id == "customer:7" and alice.owns(7)
    assert not alice.owns(8) and not alice.owns(None)
    # Staff are not "owners": ownership is a customer notion; staff rights come from rules.
    assert not Principal.system("x").owns(7)
    assert not ANONYMOUS.owns(None)


@pytest.mark.parametrize("status", list(OrderStatus))
def test_customer_may_cancel_only_pending_or_confirmed(status: OrderStatus) -> None:
    if status in {OrderStatus.PENDING, OrderStatus.CONFIRMED}:
        check_customer_may_cancel(status)
        assert status in CUSTOMER_CANCELLABLE
    else:
        with pytest.raises(DomainError) as info:
            check_customer_may_cancel(status)
        assert info.value.code is ErrorCode.FORBIDDEN
        assert status.value in info.value.message
