"""Allocation planning: one parcel when possible, else a split by priority; backorder or
shortage for what is missing."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.allocation import (
    AllocationPlan,
    LineDemand,
    Shortage,
    WarehouseRank,
    plan_allocation,
)

UNLISTED_WAREHOUSE = 99  # has stock in the snapshot but is not a known warehouse


@dataclass(frozen=True)
class Scenario:
    demands: list[LineDemand]
    available: dict[tuple[int, int], int]
    warehouses: list[WarehouseRank]

    def rank(self) -> list[int]:
        ordered = sorted(self.warehouses, key=lambda w: (w.priority, w.warehouse_id))
        return [w.warehouse_id for w in ordered]

    def demand_of(self, product_id: int) -> int:
        return sum(d.quantity for d in self.demands if d.product_id == product_id)

    def supply_of(self, product_id: int) -> int:
        """Usable units of a product: listed warehouses only, negative levels count as 0."""
        return sum(
            max(0, self.available.get((product_id, w.warehouse_id), 0)) for w in self.warehouses
        )

    def products(self) -> set[int]:
        return {d.product_id for d in self.demands}


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    product_ids = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3, unique=True))
    # Backorder is a property of the product, so lines of one product agree on it.
    backorder = {p: draw(st.booleans()) for p in product_ids}
    warehouse_ids = draw(st.lists(st.integers(1, 6), min_size=0, max_size=4, unique=True))
    warehouses = [WarehouseRank(w, draw(st.integers(0, 3))) for w in warehouse_ids]
    available: dict[tuple[int, int], int] = {}
    for p in product_ids:
        for w in [*warehouse_ids, UNLISTED_WAREHOUSE]:
            if draw(st.booleans()):
                available[(p, w)] = draw(st.integers(-2, 12))
    lines = draw(
        st.lists(
            st.tuples(st.sampled_from(product_ids), st.integers(1, 12)), min_size=1, max_size=5
        )
    )
    demands = [LineDemand(i, p, q, backorder[p]) for i, (p, q) in enumerate(lines)]
    return Scenario(demands, available, warehouses)


def single_fillers(s: Scenario) -> list[WarehouseRank]:
    """Warehouses that can fill the whole order on their own."""
    return [
        w
        for w in s.warehouses
        if all(s.available.get((p, w.warehouse_id), 0) >= s.demand_of(p) for p in s.products())
    ]


def plan_for(s: Scenario) -> AllocationPlan:
    return plan_allocation(s.demands, s.available, s.warehouses)


def allocated_per_line(plan: AllocationPlan) -> dict[int, int]:
    out: dict[int, int] = defaultdict(int)
    for (index, _), qty in plan.allocations.items():
        out[index] += qty
    return out


domain_settings = settings(max_examples=200, deadline=None)


@domain_settings
@given(s=scenarios())
def test_plan_allocation_never_exceeds_available(s: Scenario) -> None:
    plan = plan_for(s)
    listed = {w.warehouse_id for w in s.warehouses}
    assert all(qty > 0 for qty in plan.allocations.values())
    per_key: dict[tuple[int, int], int] = defaultdict(int)
    product_of = {d.index: d.product_id for d in s.demands}
    for (index, warehouse_id), qty in plan.allocations.items():
        assert warehouse_id in listed
        per_key[(product_of[index], warehouse_id)] += qty
    for key, qty in per_key.items():
        assert qty <= s.available.get(key, 0)
    assert plan.reservations(s.demands) == dict(per_key)


@domain_settings
@given(s=scenarios())
def test_plan_allocation_accounts_for_every_unit_when_ok(s: Scenario) -> None:
    plan = plan_for(s)
    if not plan.ok:
        return
    allocated = allocated_per_line(plan)
    for d in s.demands:
        assert allocated.get(d.index, 0) + plan.backordered.get(d.index, 0) == d.quantity


@domain_settings
@given(s=scenarios())
def test_plan_allocation_backorders_only_allowed_lines(s: Scenario) -> None:
    plan = plan_for(s)
    by_index = {d.index: d for d in s.demands}
    for index, qty in plan.backordered.items():
        assert by_index[index].allow_backorder
        assert 0 < qty <= by_index[index].quantity
    # Nothing is backordered that the stock could have covered.
    if plan.ok:
        for p in s.products():
            backordered = sum(q for i, q in plan.backordered.items() if by_index[i].product_id == p)
            assert backordered == max(0, s.demand_of(p) - s.supply_of(p))


@domain_settings
@given(s=scenarios())
def test_plan_allocation_shortages_only_on_non_backorder_lines(s: Scenario) -> None:
    plan = plan_for(s)
    by_index = {d.index: d for d in s.demands}
    for shortage in plan.shortages:
        line = by_index[shortage.index]
        assert not line.allow_backorder
        assert shortage.requested == line.quantity
        assert 0 <= shortage.available < shortage.requested
    if plan.shortages:
        assert plan.allocations == {}
        assert plan.backordered == {}
    # A shortage happens exactly when some non-backorder product is short overall.
    short_products = {
        p
        for p in s.products()
        if s.demand_of(p) > s.supply_of(p)
        and not next(d for d in s.demands if d.product_id == p).allow_backorder
    }
    assert plan.ok == (not short_products)
    assert {by_index[sh.index].product_id for sh in plan.shortages} == short_products


@domain_settings
@given(s=scenarios())
def test_plan_allocation_shortage_available_is_what_is_left(s: Scenario) -> None:
    """A short line is offered what its product has left once earlier lines took theirs;
    with one line per product, that is the product's whole usable stock."""
    plan = plan_for(s)
    short = {sh.index: sh for sh in plan.shortages}
    taken: dict[int, int] = defaultdict(int)
    for d in s.demands:
        left = max(0, s.supply_of(d.product_id) - taken[d.product_id])
        if d.index in short:
            assert short[d.index] == Shortage(d.index, d.quantity, left)
        taken[d.product_id] += d.quantity
    for sh in plan.shortages:
        product = next(d.product_id for d in s.demands if d.index == sh.index)
        if sum(d.product_id == product for d in s.demands) == 1:
            assert sh.available == s.supply_of(product)


@domain_settings
@given(s=scenarios())
def test_plan_allocation_single_warehouse_when_possible(s: Scenario) -> None:
    plan = plan_for(s)
    fillers = single_fillers(s)
    if not fillers:
        return
    best = min(fillers, key=lambda w: (w.priority, w.warehouse_id))
    assert plan.ok
    assert plan.backordered == {}
    assert {w for _, w in plan.allocations} == {best.warehouse_id}
    assert plan.allocations == {(d.index, best.warehouse_id): d.quantity for d in s.demands}


@domain_settings
@given(s=scenarios())
def test_plan_allocation_split_takes_better_ranked_warehouses_first(s: Scenario) -> None:
    plan = plan_for(s)
    if single_fillers(s):
        return
    rank = s.rank()
    reserved = plan.reservations(s.demands)
    for product, warehouse_id in reserved:
        # Every better-ranked warehouse's stock of this product is used up first.
        for better in rank[: rank.index(warehouse_id)]:
            usable = max(0, s.available.get((product, better), 0))
            assert reserved.get((product, better), 0) == usable
    if plan.ok:
        for p in s.products():
            taken = sum(q for (prod, _), q in reserved.items() if prod == p)
            assert taken == min(s.demand_of(p), s.supply_of(p))


# --- The documented rule, by example --------------------------------------------------


def test_plan_allocation_prefers_best_priority_warehouse_that_fills_everything() -> None:
    demands = [LineDemand(0, 1, 2, False), LineDemand(1, 2, 1, False)]
    available = {(1, 10): 5, (2, 10): 5, (1, 20): 5, (2, 20): 5}
    warehouses = [WarehouseRank(10, 2), WarehouseRank(20, 1)]
    plan = plan_allocation(demands, available, warehouses)
    assert plan == AllocationPlan(allocations={(0, 20): 2, (1, 20): 1})


def test_plan_allocation_breaks_priority_ties_by_lower_id() -> None:
    demands = [LineDemand(0, 1, 2, False)]
    available = {(1, 7): 5, (1, 3): 5}
    plan = plan_allocation(demands, available, [WarehouseRank(7, 1), WarehouseRank(3, 1)])
    assert plan.allocations == {(0, 3): 2}


def test_plan_allocation_one_parcel_beats_priority() -> None:
    # The top-priority warehouse has only one of the two products; the second has both.
    demands = [LineDemand(0, 1, 1, False), LineDemand(1, 2, 1, False)]
    available = {(1, 1): 9, (1, 2): 1, (2, 2): 1}
    plan = plan_allocation(demands, available, [WarehouseRank(1, 0), WarehouseRank(2, 5)])
    assert plan.allocations == {(0, 2): 1, (1, 2): 1}


def test_plan_allocation_splits_by_priority() -> None:
    demands = [LineDemand(0, 1, 6, False)]
    available = {(1, 1): 2, (1, 2): 3, (1, 3): 5}
    warehouses = [WarehouseRank(3, 3), WarehouseRank(1, 1), WarehouseRank(2, 2)]
    plan = plan_allocation(demands, available, warehouses)
    assert plan == AllocationPlan(allocations={(0, 1): 2, (0, 2): 3, (0, 3): 1})


def test_plan_allocation_same_product_lines_share_stock() -> None:
    # 4 + 4 > 6 in either warehouse alone, so the order is split; together it fits.
    demands = [LineDemand(0, 1, 4, False), LineDemand(1, 1, 4, False)]
    available = {(1, 1): 6, (1, 2): 6}
    plan = plan_allocation(demands, available, [WarehouseRank(1, 1), WarehouseRank(2, 2)])
    assert plan.allocations == {(0, 1): 4, (1, 1): 2, (1, 2): 2}
    assert plan.reservations(demands) == {(1, 1): 6, (1, 2): 2}


def test_plan_allocation_backorders_the_rest() -> None:
    demands = [LineDemand(0, 1, 5, True)]
    plan = plan_allocation(demands, {(1, 1): 2}, [WarehouseRank(1, 1)])
    assert plan == AllocationPlan(allocations={(0, 1): 2}, backordered={0: 3})


def test_plan_allocation_shortage_clears_the_whole_plan() -> None:
    demands = [
        LineDemand(0, 1, 1, False),  # could be filled
        LineDemand(1, 2, 5, True),  # could be partly backordered
        LineDemand(2, 3, 5, False),  # short: 2 of 5
    ]
    available = {(1, 1): 5, (2, 1): 1, (3, 1): 1, (3, 2): 1, (3, 3): -4}
    warehouses = [WarehouseRank(1, 1), WarehouseRank(2, 2), WarehouseRank(3, 3)]
    plan = plan_allocation(demands, available, warehouses)
    assert not plan.ok
    assert plan == AllocationPlan(shortages=[Shortage(2, 5, 2)])


def test_plan_allocation_without_warehouses() -> None:
    demands = [LineDemand(0, 1, 3, True), LineDemand(1, 2, 2, False)]
    plan = plan_allocation(demands, {(1, 1): 9}, [])
    assert plan.shortages == [Shortage(1, 2, 0)]
    assert plan.allocations == {}
    only_backorder = plan_allocation(demands[:1], {}, [])
    assert only_backorder == AllocationPlan(backordered={0: 3})


def test_plan_allocation_empty_order_is_an_empty_plan() -> None:
    plan = plan_allocation([], {(1, 1): 1}, [WarehouseRank(1, 1)])
    assert plan.ok
    assert plan == AllocationPlan()
