"""Which warehouse ships which units of an order: a pure plan over a snapshot of stock.

The rule, in order:
1. Warehouses are ranked by ``priority`` (lower first), then by id.
2. If one warehouse can fill every line in full, the whole order comes from the best-ranked
   such warehouse (one parcel).
3. Otherwise each line takes what it needs from the warehouses in rank order (a split).
4. What is still missing is backordered when the product allows backorder; otherwise it is a
   shortage, and the order cannot be placed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class LineDemand:
    index: int
    product_id: int
    quantity: int
    allow_backorder: bool


class WarehouseRank(NamedTuple):
    """Built for every stock row an order reads: a named tuple costs a third of what a
    frozen dataclass does to make."""

    warehouse_id: int
    priority: int


@dataclass(frozen=True, slots=True)
class Shortage:
    index: int
    requested: int
    available: int


@dataclass(slots=True)
class AllocationPlan:
    # (line index, warehouse id) -> units reserved there
    allocations: dict[tuple[int, int], int] = field(default_factory=dict)
    backordered: dict[int, int] = field(default_factory=dict)
    shortages: list[Shortage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.shortages

    def reservations(self, demands: Sequence[LineDemand]) -> dict[tuple[int, int], int]:
        """Units to reserve per (product id, warehouse id)."""
        product_of = {d.index: d.product_id for d in demands}
        out: dict[tuple[int, int], int] = defaultdict(int)
        for (index, warehouse_id), qty in self.allocations.items():
            out[(product_of[index], warehouse_id)] += qty
        return dict(out)


def plan_allocation(
    demands: Sequence[LineDemand],
    available: Mapping[tuple[int, int], int],
    warehouses: Sequence[WarehouseRank],
) -> AllocationPlan:
    """Plan reservations for ``demands`` given ``available[(product_id, warehouse_id)]``."""
    ranked = [
        w.warehouse_id for w in sorted(warehouses, key=lambda w: (w.priority, w.warehouse_id))
    ]
    plan = AllocationPlan()

    need: dict[int, int] = defaultdict(int)
    for d in demands:
        need[d.product_id] += d.quantity
    for warehouse_id in ranked:
        if all(available.get((p, warehouse_id), 0) >= q for p, q in need.items()):
            for d in demands:
                plan.allocations[(d.index, warehouse_id)] = d.quantity
            return plan

    left = {key: max(0, qty) for key, qty in available.items()}
    for d in demands:
        missing = d.quantity
        for warehouse_id in ranked:
            if missing == 0:
                break
            take = min(missing, left.get((d.product_id, warehouse_id), 0))
            if take > 0:
                plan.allocations[(d.index, warehouse_id)] = take
                left[(d.product_id, warehouse_id)] -= take
                missing -= take
        if missing == 0:
            continue
        if d.allow_backorder:
            plan.backordered[d.index] = missing
        else:
            plan.shortages.append(Shortage(d.index, d.quantity, d.quantity - missing))
    if plan.shortages:
        plan.allocations.clear()
        plan.backordered.clear()
    return plan
