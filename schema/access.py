"""Who may use which field: one table, deny by default.

Every root field (query, mutation, subscription) must have a rule here, or nobody but ADMIN
may call it (and ``tests/api/test_access_matrix.py`` fails). Fields below the root inherit
the access of the root field that reached them, except the sensitive ones listed here
(cost prices, internal notes, warehouse stock), which need their own rule.

A rule names the roles that may use the field; INTEGRATION keys need the rule's scope;
CUSTOMER means "their own data only", which the root field and the use case enforce (another
customer's order looks like one that does not exist). ADMIN may use everything.

The check runs on the whole operation before any resolver runs (``app/guard.py``): an
operation that touches a field its caller may not use is refused, as a whole, with FORBIDDEN.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.access import Principal, Role, Scope


@dataclass(frozen=True)
class Rule:
    staff: bool = False
    scope: Scope | None = None  # INTEGRATION keys holding this scope
    customer: bool = False  # their own data only
    anonymous: bool = False
    integration: bool = False  # every INTEGRATION key, whatever its scopes

    def permits(self, p: Principal) -> bool:
        match p.role:
            case Role.ADMIN:
                return True
            case Role.STAFF:
                return self.staff
            case Role.INTEGRATION:
                return self.integration or (self.scope is not None and self.scope in p.scopes)
            case Role.CUSTOMER:
                return self.customer
            case Role.ANONYMOUS:
                return self.anonymous
        return False  # pragma: no cover


ADMIN_ONLY = Rule()
#: Fields about the caller itself.
EVERYONE = Rule(staff=True, customer=True, anonymous=True, integration=True)


def _staff(scope: Scope | None, *, customer: bool = False) -> Rule:
    return Rule(staff=True, scope=scope, customer=customer)


RULES: dict[str, Rule] = {
    # Queries
    "Query.viewer": EVERYONE,
    # node(id:) checks the type it finds at run time, see NODE_RULES.
    "Query.node": Rule(staff=True, customer=True, integration=True),
    "Query.order": _staff(Scope.ORDERS_READ, customer=True),
    "Query.orders": _staff(Scope.ORDERS_READ, customer=True),
    "Query.product": _staff(Scope.CATALOG_READ, customer=True),
    "Query.products": _staff(Scope.CATALOG_READ, customer=True),
    "Query.warehouses": _staff(Scope.INVENTORY_READ),
    "Query.inventoryLevels": _staff(Scope.INVENTORY_READ),
    "Query.customer": _staff(Scope.CUSTOMERS_READ, customer=True),
    "Query.customers": _staff(Scope.CUSTOMERS_READ),
    # Mutations
    "Mutation.placeOrder": _staff(Scope.ORDERS_WRITE, customer=True),
    "Mutation.confirmOrder": _staff(Scope.ORDERS_WRITE),
    "Mutation.startProcessing": _staff(Scope.ORDERS_WRITE),
    "Mutation.cancelOrder": _staff(Scope.ORDERS_WRITE, customer=True),
    "Mutation.createCustomer": _staff(Scope.CUSTOMERS_WRITE),
    "Mutation.adjustInventory": _staff(Scope.INVENTORY_WRITE),
    "Mutation.createProduct": Rule(scope=Scope.CATALOG_WRITE),
    "Mutation.updateProduct": Rule(scope=Scope.CATALOG_WRITE),
    "Mutation.createWarehouse": ADMIN_ONLY,
    # Subscriptions
    "Subscription.orderStatusChanged": _staff(Scope.ORDERS_READ, customer=True),
    "Subscription.orderEvents": _staff(Scope.ORDERS_READ, customer=True),
    # Sensitive fields, wherever they are reached from
    "Order.customer": _staff(Scope.CUSTOMERS_READ, customer=True),  # personal data
    "Product.costPrice": Rule(scope=Scope.COSTS_READ),
    "Product.inventory": _staff(Scope.INVENTORY_READ),
    "OrderLine.allocations": _staff(Scope.ORDERS_READ),
    "OrderEvent.actor": _staff(Scope.ORDERS_READ),
    "OrderEvent.note": _staff(Scope.ORDERS_READ),
}

ROOT_TYPES = ("Query", "Mutation", "Subscription")

#: ``node(id:)`` of each type is allowed exactly like the root field that reads that type.
NODE_RULES: dict[str, str] = {
    "Order": "Query.order",
    "Product": "Query.product",
    "Customer": "Query.customer",
    "Warehouse": "Query.warehouses",
}


def permits(p: Principal, coordinate: str) -> bool:
    """May ``p`` use the field ``Type.field``? Root fields without a rule: ADMIN only."""
    rule = RULES.get(coordinate)
    if rule is not None:
        return rule.permits(p)
    type_name, _, field = coordinate.partition(".")
    if field.startswith("__"):
        return True  # introspection: governed by ORDERGRAPH_ENV, not by role
    return type_name not in ROOT_TYPES or p.role is Role.ADMIN


def permits_node(p: Principal, type_name: str) -> bool:
    coordinate = NODE_RULES.get(type_name)
    return coordinate is not None and permits(p, coordinate)


def denial_message(p: Principal, coordinate: str) -> str:
    if p.role is Role.ANONYMOUS:
        return (
            f"Authentication required for `{coordinate}`: send `Authorization: Bearer <API key "
            "or customer token>`."
        )
    rule = RULES.get(coordinate)
    if p.role is Role.INTEGRATION and rule is not None and rule.scope is not None:
        return f"This API key lacks the scope `{rule.scope.value}` needed for `{coordinate}`."
    return f"The {p.role.value} role may not use `{coordinate}`."
