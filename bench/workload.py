"""The requests the load process sends: how each body is built and how each response is
judged. A response counts as successful only with HTTP 200, a JSON body without
``errors``, and the data the operation must return."""

from __future__ import annotations

import json
import random
from typing import Any

from bench.queries import CONFIRM_ORDER, PLACE_ORDER, READ_ORDERS, SHIPPING_ADDRESS, TRIVIAL


def _body(query: str, variables: dict[str, Any] | None = None) -> bytes:
    payload: dict[str, Any] = {"query": query}
    if variables is not None:
        payload["variables"] = variables
    return json.dumps(payload, separators=(",", ":")).encode()


class RequestKind:
    name = "?"

    def body(self, rng: random.Random) -> bytes:
        raise NotImplementedError

    def check(self, data: dict[str, Any]) -> str | None:
        """None when ``data`` is what the operation must return, else why not."""
        return None


class Trivial(RequestKind):
    name = "trivial"
    _payload = _body(TRIVIAL)

    def body(self, rng: random.Random) -> bytes:
        return self._payload

    def check(self, data: dict[str, Any]) -> str | None:
        return None if data.get("__typename") == "Query" else "unexpected data"


class PlaceOrder(RequestKind):
    """placeOrder with 3 lines of distinct random products for a random known customer."""

    name = "place"

    def __init__(self, skus: list[str], customer_ids: list[str]) -> None:
        self.skus = skus
        self.customer_ids = customer_ids
        self.numbers: set[str] = set()

    def body(self, rng: random.Random) -> bytes:
        lines = [{"sku": sku, "quantity": rng.randint(1, 3)} for sku in rng.sample(self.skus, 3)]
        return _body(
            PLACE_ORDER,
            {
                "input": {
                    "channel": "WEB",
                    "paymentMethod": "CARD",
                    "customerId": rng.choice(self.customer_ids),
                    "lines": lines,
                    "shippingAddress": SHIPPING_ADDRESS,
                }
            },
        )

    def check(self, data: dict[str, Any]) -> str | None:
        payload = data.get("placeOrder") or {}
        if payload.get("userErrors"):
            return "userErrors: " + ", ".join(e.get("code", "?") for e in payload["userErrors"])
        order = payload.get("order")
        if not order or not order.get("number"):
            return "no order in the payload"
        self.numbers.add(order["number"])
        return None


class ReadOrders(RequestKind):
    """``orders(first: N)`` with lines, products, customer and allocations."""

    name = "read"

    def __init__(self, first: int) -> None:
        self.first = first
        self._payload = _body(READ_ORDERS, {"first": first})
        self.sample: dict[str, Any] | None = None

    def body(self, rng: random.Random) -> bytes:
        return self._payload

    def check(self, data: dict[str, Any]) -> str | None:
        edges = (data.get("orders") or {}).get("edges")
        if not isinstance(edges, list) or len(edges) != self.first:
            return f"expected {self.first} orders"
        if self.sample is None:
            self.sample = data
        return None


def confirm_body(order_id: str) -> bytes:
    return _body(CONFIRM_ORDER, {"id": order_id})


def place_body(skus: list[str], customer_id: str) -> bytes:
    return _body(
        PLACE_ORDER,
        {
            "input": {
                "channel": "WEB",
                "paymentMethod": "CARD",
                "customerId": customer_id,
                "lines": [{"sku": sku, "quantity": 1} for sku in skus],
                "shippingAddress": SHIPPING_ADDRESS,
            }
        },
    )


def make_kind(name: str, config: dict[str, Any]) -> RequestKind:
    if name == "trivial":
        return Trivial()
    if name == "place":
        return PlaceOrder(config["skus"], config["customer_ids"])
    if name == "read":
        return ReadOrders(int(config.get("read_first", 50)))
    raise ValueError(f"unknown request kind {name!r}")
