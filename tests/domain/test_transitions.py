"""Order lifecycle: the one transition table, as a state machine, and order numbers."""

from __future__ import annotations

import re
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from domain.errors import DomainError, ErrorCode
from domain.orders import (
    EVENT_FOR_TARGET,
    HOLDS_RESERVATION,
    TRANSITIONS,
    OrderEventType,
    OrderStatus,
    can_transition,
    check_transition,
    format_order_number,
    is_final,
    parse_order_number,
)

S = OrderStatus
STATUSES = list(OrderStatus)
INITIAL = (S.PENDING, S.BACKORDERED)
FINAL = {S.DELIVERED, S.CANCELLED}
PRE_SHIPPING = {S.PENDING, S.BACKORDERED, S.CONFIRMED, S.PROCESSING}
SHIPPING = frozenset({S.PARTIALLY_SHIPPED, S.SHIPPED, S.DELIVERED})


def reachable(
    starts: set[OrderStatus], *, avoiding: frozenset[OrderStatus] = frozenset()
) -> set[OrderStatus]:
    seen = set(starts)
    queue = deque(starts)
    while queue:
        for nxt in TRANSITIONS[queue.popleft()]:
            if nxt not in seen and nxt not in avoiding:
                seen.add(nxt)
                queue.append(nxt)
    return seen


class OrderLifecycle(RuleBasedStateMachine):
    """Random sequences of requested status changes, legal and illegal."""

    def __init__(self) -> None:
        super().__init__()
        self.status = S.PENDING
        self.history: list[OrderStatus] = []

    @initialize(start=st.sampled_from(INITIAL))
    def start(self, start: OrderStatus) -> None:
        self.status = start
        self.history = [start]

    # ``target`` is reserved by hypothesis for bundles, hence ``wanted``.
    @rule(wanted=st.sampled_from(STATUSES))
    def request(self, wanted: OrderStatus) -> None:
        current, target = self.status, wanted
        if target in TRANSITIONS[current]:
            assert check_transition(current, target) == EVENT_FOR_TARGET[target]
            self.status = target
            self.history.append(target)
            return
        with pytest.raises(DomainError) as info:
            check_transition(current, target)
        assert info.value.code == ErrorCode.INVALID_TRANSITION
        assert info.value.field == ("input", "orderId")
        assert str(current) in info.value.message
        for allowed in TRANSITIONS[current]:
            assert str(allowed) in info.value.message
        # Statuses neither current nor allowed are not offered as a way out.
        message_tail = info.value.message.split("allowed next:", 1)[1]
        for other in set(STATUSES) - TRANSITIONS[current]:
            assert re.search(rf"\b{other}\b", message_tail) is None

    @precondition(lambda self: not is_final(self.status))
    @rule()
    def cancel_if_not_shipped(self) -> None:
        if self.status in PRE_SHIPPING:
            assert check_transition(self.status, S.CANCELLED) == OrderEventType.CANCELLED
            self.status = S.CANCELLED
            self.history.append(S.CANCELLED)
        else:
            with pytest.raises(DomainError):
                check_transition(self.status, S.CANCELLED)

    @invariant()
    def final_statuses_accept_nothing(self) -> None:
        if self.status in FINAL:
            assert is_final(self.status)
            for target in STATUSES:
                assert not can_transition(self.status, target)

    @invariant()
    def history_only_moves_forward(self) -> None:
        # No status is visited twice: the lifecycle has no cycles.
        assert len(self.history) == len(set(self.history))
        # Once shipping started, the order can no longer be cancelled.
        if any(s in SHIPPING for s in self.history):
            assert S.CANCELLED not in self.history


TestOrderLifecycle = OrderLifecycle.TestCase
TestOrderLifecycle.settings = settings(max_examples=60, stateful_step_count=15, deadline=None)


@pytest.mark.parametrize("current", STATUSES)
@pytest.mark.parametrize("target", STATUSES)
def test_check_transition_succeeds_only_for_table_pairs(
    current: OrderStatus, target: OrderStatus
) -> None:
    if target in TRANSITIONS[current]:
        assert check_transition(current, target) is EVENT_FOR_TARGET[target]
    else:
        with pytest.raises(DomainError) as info:
            check_transition(current, target)
        assert info.value.code is ErrorCode.INVALID_TRANSITION


def test_final_statuses_are_delivered_and_cancelled() -> None:
    assert {s for s in STATUSES if is_final(s)} == FINAL
    for status in FINAL:
        assert TRANSITIONS[status] == frozenset()


@pytest.mark.parametrize("status", sorted(FINAL))
def test_check_transition_from_final_says_so(status: OrderStatus) -> None:
    with pytest.raises(DomainError, match=r"allowed next: none \(final status\)") as info:
        check_transition(status, S.PENDING)
    assert info.value.code == ErrorCode.INVALID_TRANSITION


def test_check_transition_error_names_allowed_statuses() -> None:
    with pytest.raises(DomainError) as info:
        check_transition(S.PROCESSING, S.DELIVERED)
    assert info.value.message == (
        "An order in status PROCESSING cannot become DELIVERED; "
        "allowed next: CANCELLED, PARTIALLY_SHIPPED, SHIPPED."
    )


def test_every_status_reachable_from_initial_statuses() -> None:
    assert reachable(set(INITIAL)) == set(STATUSES)
    # Nothing leads back into BACKORDERED: it is only ever a starting status.
    assert all(S.BACKORDERED not in targets for targets in TRANSITIONS.values())


@pytest.mark.parametrize("status", sorted(PRE_SHIPPING))
def test_cancelled_reachable_from_every_pre_shipping_status(status: OrderStatus) -> None:
    assert not is_final(status)
    assert S.CANCELLED in reachable({status}, avoiding=SHIPPING)
    assert status in HOLDS_RESERVATION


@pytest.mark.parametrize("status", sorted(SHIPPING))
def test_cancelled_unreachable_once_shipping_started(status: OrderStatus) -> None:
    assert S.CANCELLED not in reachable({status})


def test_every_target_has_an_event() -> None:
    targets = set().union(*TRANSITIONS.values())
    assert targets <= set(EVENT_FOR_TARGET)
    assert EVENT_FOR_TARGET[S.PENDING] is OrderEventType.BACKORDER_FILLED


@settings(max_examples=200, deadline=None)
@given(order_id=st.integers(min_value=1, max_value=10**12 - 1))
def test_order_number_round_trips(order_id: int) -> None:
    number = format_order_number(order_id)
    assert re.fullmatch(r"ORD-\d{6,12}", number)
    assert parse_order_number(number) == order_id
    assert parse_order_number(f"  {number.lower()} ") == order_id


def test_order_number_examples() -> None:
    assert format_order_number(1) == "ORD-000001"
    assert format_order_number(1234567) == "ORD-1234567"
    assert parse_order_number("ORD-000042") == 42


@pytest.mark.parametrize(
    "number",
    [
        "",
        "ORD",
        "ORD-",
        "ORD-12a",
        "ORD--1",
        "ORD-+1",
        "ORD-1.5",
        "ORD-1 2",
        "ORD 000001",
        "ORD_000001",
        "000001",
        "XYZ-000001",
        "ORDER-000001",
        "ORD-" + "1" * 13,
        "ORD-\u00b2",  # superscript two: str.isdigit() but not int()-able
        "ORD-\u0663",  # Arabic-Indic three
        "ORD-\uff11\uff12",  # full-width digits
    ],
)
def test_malformed_order_numbers_parse_to_none(number: str) -> None:
    assert parse_order_number(number) is None


WELL_FORMED = re.compile(r"ORD-([0-9]{1,12})")


@settings(max_examples=300, deadline=None)
@given(
    number=st.one_of(
        st.text(max_size=20),
        st.text(alphabet="ORDord-0123456789 \t\u00b2\u0663\uff11", max_size=20),
        st.builds(
            lambda d, pre, post: f"{pre}ORD-{d}{post}",
            st.text(alphabet="0123456789\u00b2\u0663\uff11x-", max_size=14),
            st.sampled_from(["", " ", "x", "-"]),
            st.sampled_from(["", " ", "x", "-"]),
        ),
    )
)
def test_parse_order_number_accepts_exactly_well_formed(number: str) -> None:
    match = WELL_FORMED.fullmatch(number.strip().upper())
    expected = int(match.group(1)) if match else None
    assert parse_order_number(number) == expected
