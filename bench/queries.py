"""The GraphQL documents the benchmark sends, and how a result is measured."""

from __future__ import annotations

from typing import Any

#: The ceiling: the cheapest operation the server can run (still authenticated).
TRIVIAL = "{ __typename }"

PLACE_ORDER = """
mutation Place($input: PlaceOrderInput!) {
  placeOrder(input: $input) {
    order { id number status }
    userErrors { field message code }
  }
}"""

CONFIRM_ORDER = """
mutation Confirm($id: ID!) {
  confirmOrder(input: {orderId: $id}) {
    order { number status }
    userErrors { field message code }
  }
}"""

#: A page of orders with lines, products, customer and allocations: about 62 response
#: fields per order with 3 lines, so about 3,100 for ``first: 50``.
READ_ORDERS = """
query Read($first: Int!) {
  orders(first: $first) {
    pageInfo { hasNextPage endCursor }
    edges {
      cursor
      node {
        id number status
        total { amount currency }
        customer { name email }
        lines {
          id sku quantity
          unitPrice { amount currency }
          product { sku name price { amount currency } }
          allocations { quantity warehouse { id code } }
        }
      }
    }
  }
}"""

ORDER_EVENTS = "subscription { orderEvents { sequence type order { number status } } }"

SHIPPING_ADDRESS = {
    "name": "Bench Mark",
    "line1": "1 Load Street",
    "city": "Springfield",
    "postalCode": "10001",
    "country": "US",
}


def count_fields(value: Any) -> int:
    """Response fields in a result: every key of every object (leaves and objects alike);
    list items are not fields themselves."""
    if isinstance(value, dict):
        return len(value) + sum(count_fields(v) for v in value.values())
    if isinstance(value, list):
        return sum(count_fields(v) for v in value)
    return 0
