"""app.cost: requested cost, coordinates, actual cost and the per-principal budget.

Every expected cost is worked out by hand in a comment, from the model in app/cost.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    build_schema,
    get_named_type,
    is_abstract_type,
    is_composite_type,
    parse,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import app.cost as cost_module
from app.cost import (
    Analysis,
    CostBudget,
    CostError,
    actual_cost,
    analyze,
    cost_variables,
)
from app.main import make_schema

SCHEMA = make_schema()._schema


def run(
    query: str, variables: dict[str, Any] | None = None, operation: str | None = None
) -> Analysis:
    return analyze(SCHEMA, parse(query), operation, variables)


def cost(query: str, variables: dict[str, Any] | None = None) -> int:
    return run(query, variables).requested_cost


def actual(query: str, data: dict[str, Any] | None, variables: dict[str, Any] | None = None) -> int:
    return actual_cost(SCHEMA, parse(query), None, variables, data)


def cost_error(query: str, variables: dict[str, Any] | None = None) -> CostError:
    with pytest.raises(CostError) as caught:
        run(query, variables)
    assert caught.value.extensions == {"code": "QUERY_COST"}
    return caught.value


# --- requested cost ---------------------------------------------------------------------------


def test_cost_variables_are_page_sizes_and_conditions_only() -> None:
    document = parse(
        """query Q($input: PlaceOrderInput!, $n: Int, $m: Int, $show: Boolean!, $hide: Boolean!)
        { orders(first: $n) { nodes { id ...F } } c: customers(last: $m) { nodes { id } }
          placeOrder: order(number: "x") @skip(if: $hide) { id } }
        fragment F on Order { customer @include(if: $show) { name } }"""
    )
    # $input is only passed through to a resolver: the cost never depends on it.
    assert cost_variables(document) == {"n", "m", "show", "hide"}


def test_cached_analysis_follows_the_variables_of_one_document() -> None:
    # One parsed document, as the parser cache hands it out for every request with this text.
    document = parse(
        "query Q($n: Int!, $all: Boolean!) "
        "{ orders(first: $n) { nodes { id customer @include(if: $all) { name } } } }"
    )

    def requested(n: int, everything: bool) -> int:
        return analyze(SCHEMA, document, None, {"n": n, "all": everything}).requested_cost

    # 2 + n x (1 + customer 1 if included)
    assert requested(1, True) == 4
    assert requested(50, True) == 102
    assert requested(50, False) == 52
    assert requested(1, True) == 4


def test_cached_analysis_tells_true_from_one() -> None:
    # True == 1 as dictionary keys; as `$n: Int!` the first is invalid (estimated at the
    # largest page), the second a page of one.
    document = parse("query Q($n: Int!) { orders(first: $n) { nodes { id } } }")
    invalid = analyze(SCHEMA, document, None, {"n": True}).requested_cost
    assert analyze(SCHEMA, document, None, {"n": 1}).requested_cost == 3
    assert invalid > 3


def test_invalid_mutation_input_does_not_change_the_cost() -> None:
    # placeOrder 1 + 10 (mutation) + order 1 = 12, whatever $input holds: execution reports a
    # bad input, the cost analysis does not need to coerce it.
    query = "mutation M($input: PlaceOrderInput!) { placeOrder(input: $input) { order { id } } }"
    assert cost(query, {"input": {"lines": "not a list"}}) == 12
    assert cost(query, {"input": {}}) == 12


def test_scalar_fields_cost_nothing_but_their_object() -> None:
    # order: 1; id, number, status: 0
    result = run('{ order(number: "ORD-000001") { id number status __typename } }')
    assert result.requested_cost == 1
    assert result.operation_type is OperationType.QUERY
    assert result.coordinates == {"Query.order", "Order.id", "Order.number", "Order.status"}


def test_nested_objects() -> None:
    # order 1 + total 1 + customer 1 = 3
    assert cost('{ order(number: "x") { total { amount currency } customer { id name } } }') == 3


def test_connection_with_first() -> None:
    # 2 + 10 x (1 + customer 1); cursor and pageInfo free: 2 + 20 = 22
    query = """{ orders(first: 10) {
        edges { cursor node { number customer { name } } }
        pageInfo { hasNextPage endCursor }
    } }"""
    result = run(query)
    assert result.requested_cost == 22
    assert {"OrderConnection.pageInfo", "PageInfo.hasNextPage", "OrderEdge.cursor"} <= set(
        result.coordinates
    )


def test_connection_with_last() -> None:
    # 2 + 4 x 1 = 6
    assert cost("{ orders(last: 4) { nodes { id } } }") == 6


def test_connection_with_a_variable() -> None:
    query = "query Q($n: Int!) { orders(first: $n) { nodes { id customer { id } } } }"
    # 2 + 7 x (1 + 1) = 16
    assert cost(query, {"n": 7}) == 16


def test_connection_with_a_variable_default() -> None:
    query = "query Q($n: Int = 3) { orders(first: $n) { nodes { id customer { id } } } }"
    # 2 + 3 x 2 = 8, and 2 + 9 x 2 = 20 when given
    assert cost(query) == 8
    assert cost(query, {"n": 9}) == 20


def test_connection_with_first_and_last_takes_the_larger() -> None:
    # 2 + 20 x 1 = 22
    assert cost("{ orders(first: 5, last: 20) { nodes { id } } }") == 22


def test_connection_with_first_zero() -> None:
    # 2 + 0 x 1 = 2
    assert cost("{ orders(first: 0) { nodes { id } } }") == 2


def test_connection_without_first_or_last_is_refused() -> None:
    error = cost_error("{ orders { nodes { id } } }")
    assert error.message == "`orders` is a connection: pass `first` or `last` (at most 100)."
    assert error.locations is not None and error.locations[0].line == 1


def test_connection_error_names_the_path_with_aliases() -> None:
    error = cost_error('{ o: order(number: "x") { events(first: null) { nodes { id } } } }')
    assert error.message.startswith("`o.events` is a connection")
    error = cost_error("{ recent: orders { totalCount } }")
    assert error.message.startswith("`recent` is a connection")


@pytest.mark.parametrize(
    ("query", "variables", "name", "value"),
    [
        ("{ orders(first: 101) { nodes { id } } }", None, "first", "101"),
        ("{ orders(last: -1) { nodes { id } } }", None, "last", "-1"),
        ("query Q($n: Int) { orders(first: $n) { nodes { id } } }", {"n": 500}, "first", "500"),
    ],
)
def test_page_size_out_of_range_is_refused(
    query: str, variables: dict[str, Any] | None, name: str, value: str
) -> None:
    error = cost_error(query, variables)
    assert error.message == f"`orders`: `{name}` must be from 0 to 100, not {value}."


def test_schema_default_first_counts_as_given() -> None:
    # Order.events(first: Int = 50): order 1 + (2 + 50 x 1) = 53
    assert cost('{ order(number: "x") { events { nodes { type } } } }') == 53
    # order 1 + (2 + 5 x 1 + totalCount 1) = 9
    query = '{ order(number: "x") { events(first: 5) { edges { node { id } } totalCount } } }'
    assert cost(query) == 9


def test_plain_lists_count_five_items() -> None:
    # warehouses: 5 x (1 + 0) = 5
    assert cost("{ warehouses { code name } }") == 5
    # lines: 5 x (1 + product (1 + price 1) + allocations 5 x (1 + warehouse 1))
    #      = 5 x (1 + 2 + 10) = 65; order 1 + 65 = 66
    query = """{ order(number: "x") { lines {
        sku product { name price { amount } } allocations { quantity warehouse { code } }
    } } }"""
    assert cost(query) == 66


def test_total_count_costs_one_and_page_info_nothing() -> None:
    # 2 + 10 x 1 + totalCount 1 = 13, with or without pageInfo
    assert cost("{ orders(first: 10) { totalCount } }") == 13
    assert cost("{ orders(first: 10) { totalCount pageInfo { hasNextPage } } }") == 13


def test_aliased_connections_add_up() -> None:
    # a: 2 + 10 x 1 = 12; b: 2 + 5 x (1 + customer 1) = 12; total 24
    query = """{ a: orders(first: 10) { nodes { id } }
                 b: orders(first: 5) { nodes { customer { id } } } }"""
    assert cost(query) == 24


def test_same_response_key_is_merged_as_execution_does() -> None:
    # One field for the executor: 2 + 10 x (1 + customer 1) = 22, not 12 + 22
    query = """{ orders(first: 10) { nodes { id } }
                 orders(first: 10) { nodes { customer { id } } } }"""
    assert cost(query) == 22


def test_named_fragments() -> None:
    # per order: 1 + customer 1 + lines 5 x 1 = 7; 2 + 10 x 7 = 72
    query = """
    query { orders(first: 10) { nodes { ...OrderBits } } }
    fragment OrderBits on Order { number customer { ...CustomerBits } lines { sku } }
    fragment CustomerBits on Customer { name email }
    """
    result = run(query)
    assert result.requested_cost == 72
    assert {"Order.number", "Order.customer", "Customer.name", "OrderLine.sku"} <= set(
        result.coordinates
    )


def test_inline_fragments_on_an_interface_add_every_branch() -> None:
    # node 1 + (Order: customer 1) + (Customer: addresses 5 x 1) = 7
    query = """{ node(id: "x") {
        id __typename
        ... on Order { number customer { name } }
        ... on Customer { email addresses { city } }
    } }"""
    result = run(query)
    assert result.requested_cost == 7
    assert result.coordinates == {
        "Query.node",
        "Node.id",
        "Order.number",
        "Order.customer",
        "Customer.name",
        "Customer.email",
        "Customer.addresses",
        "Address.city",
    }


def test_coordinates_use_the_type_each_field_is_selected_on() -> None:
    result = run('{ node(id: "x") { id ... on Order { number } } }')
    assert result.coordinates == {"Query.node", "Node.id", "Order.number"}
    assert result.requested_cost == 1


@pytest.mark.timeout(10)
def test_fragment_cycles_terminate() -> None:
    # A -> B -> A: order 1, scalars only
    query = """
    { order(number: "x") { ...A } }
    fragment A on Order { number ...B }
    fragment B on Order { status ...A }
    """
    assert cost(query) == 1
    # C nests in itself through fields; the inner spread is dropped:
    # order 1 + customer 1 + events (2 + 2 x (1 + order 1)) = 1 + 1 + 6 = 8
    query = """
    { order(number: "x") { ...C } }
    fragment C on Order { customer { id } events(first: 2) { nodes { order { ...C } } } }
    """
    assert cost(query) == 8


@pytest.mark.timeout(10)
@pytest.mark.parametrize("depth", [60, 2000])
def test_deep_fragment_chains_are_refused_not_a_recursion_error(depth: int) -> None:
    # Each fragment nests two fields; the parser's depth limit does not see through fragments.
    fragments = "\n".join(
        f"fragment F{i} on Product {{ inventory {{ product {{ ...F{i + 1} }} }} }}"
        for i in range(depth)
    )
    query = f'{{ product(sku: "x") {{ ...F0 }} }} {fragments} fragment F{depth} on Product {{ id }}'
    error = cost_error(query)
    assert error.message == "`product` is nested more than 100 fields deep."


@pytest.mark.timeout(10)
def test_deep_chains_of_spreads_are_refused_not_a_recursion_error() -> None:
    fragments = "\n".join(f"fragment F{i} on Product {{ ...F{i + 1} }}" for i in range(2000))
    query = f'{{ product(sku: "x") {{ ...F0 }} }} {fragments} fragment F2000 on Product {{ id }}'
    error = cost_error(query)
    assert error.message == "`...F100` is nested in more than 100 fragments."
    # 50 deep is fine: product 1
    fragments = "\n".join(f"fragment F{i} on Product {{ ...F{i + 1} }}" for i in range(50))
    query = f'{{ product(sku: "x") {{ ...F0 }} }} {fragments} fragment F50 on Product {{ id }}'
    assert cost(query) == 1


def test_skip_and_include() -> None:
    query = """query Q($with: Boolean!) { order(number: "x") {
        customer @include(if: $with) { name }
        lines @skip(if: true) { sku }
        ... on Order @skip(if: $with) { total { amount } }
    } }"""
    # with: order 1 + customer 1 = 2; without: order 1 + total 1 = 2 but other coordinates
    with_customer = run(query, {"with": True})
    without = run(query, {"with": False})
    assert with_customer.requested_cost == 2
    assert without.requested_cost == 2
    assert "Order.customer" in with_customer.coordinates
    assert "Order.total" not in with_customer.coordinates
    assert "Order.customer" not in without.coordinates
    assert "Order.lines" not in with_customer.coordinates | without.coordinates
    # @include(if: false) on a literal: order 1 only
    assert cost('{ order(number: "x") { customer @include(if: false) { id } } }') == 1


def test_mutations_cost_ten_more_per_root_field() -> None:
    query = """mutation M($input: PlaceOrderInput!) {
        placeOrder(input: $input) { order { number } userErrors { message } }
    }"""
    # 10 + payload 1 + order 1 + userErrors 5 x 1 = 17
    result = run(query)
    assert result.requested_cost == 17
    assert result.operation_type is OperationType.MUTATION
    assert "Mutation.placeOrder" in result.coordinates
    query = """mutation {
        a: cancelOrder(input: {orderId: "1", reason: "x"}) { order { id } }
        b: cancelOrder(input: {orderId: "2", reason: "y"}) { order { id } }
    }"""
    # 2 x (10 + 1 + 1) = 24
    assert cost(query) == 24


def test_subscription() -> None:
    result = run("subscription { orderEvents { type order { number } } }")
    # orderEvents 1 + order 1 = 2
    assert result.requested_cost == 2
    assert result.operation_type is OperationType.SUBSCRIPTION
    assert result.coordinates == {
        "Subscription.orderEvents",
        "OrderEvent.type",
        "OrderEvent.order",
        "Order.number",
    }


def test_introspection_is_free_and_not_descended() -> None:
    result = run('{ __schema { types { name fields { name } } } __type(name: "Order") { name } }')
    assert result.requested_cost == 0
    assert result.coordinates == {"Query.__schema", "Query.__type"}


def test_operation_by_name_and_unknown_operation() -> None:
    query = 'query A { warehouses { code } } query B { order(number: "x") { id } }'
    assert run(query, operation="A").requested_cost == 5
    assert run(query, operation="B").requested_cost == 1
    assert run(query, operation="C") == Analysis(OperationType.QUERY, frozenset(), 0)
    assert run(query) == Analysis(OperationType.QUERY, frozenset(), 0)  # ambiguous


# --- actual cost ------------------------------------------------------------------------------

ORDERS_QUERY = """{
  recent: orders(first: 10) {
    totalCount
    edges { cursor node { number buyer: customer { name } lines { sku product { name } } } }
    pageInfo { hasNextPage }
  }
}"""


def order(number: str, buyer: dict[str, Any] | None) -> dict[str, Any]:
    lines = [{"sku": f"{number}-{i}", "product": {"name": "P"}} for i in range(2)]
    return {"number": number, "buyer": buyer, "lines": lines}


ORDERS_DATA: dict[str, Any] = {
    "recent": {
        "totalCount": 3,
        "edges": [
            {"cursor": "a", "node": order("1", {"name": "Ann"})},
            {"cursor": "b", "node": order("2", None)},
            {"cursor": "c", "node": order("3", {"name": "Cy"})},
        ],
        "pageInfo": {"hasNextPage": False},
    }
}


def test_actual_cost_counts_what_was_returned() -> None:
    # requested: per item 1 + customer 1 + lines 5 x (1 + product 1) = 12;
    # 2 + 10 x 12 + totalCount 1 = 123
    assert cost(ORDERS_QUERY) == 123
    # actual: 3 items; per node customer 1 (null too) + 2 lines x (1 + product 1) = 5;
    # 2 + 3 + 3 x 5 + totalCount 1 = 21
    assert actual(ORDERS_QUERY, ORDERS_DATA) == 21


def test_actual_cost_reads_response_keys() -> None:
    # Under the field name instead of the alias, nothing matches.
    assert actual(ORDERS_QUERY, {"orders": ORDERS_DATA["recent"]}) == 0
    renamed = [
        {**edge["node"], "customer": edge["node"]["buyer"]}
        for edge in ORDERS_DATA["recent"]["edges"]
    ]
    for node in renamed:
        del node["buyer"]
    data = {"recent": {**ORDERS_DATA["recent"], "edges": [{"node": n} for n in renamed]}}
    # customer not under "buyer": 2 + 3 + 3 x 4 + 1 = 18
    assert actual(ORDERS_QUERY, data) == 18


def test_actual_cost_of_empty_and_null_results() -> None:
    query = "{ orders(first: 10) { edges { node { id customer { id } } } } }"
    assert actual(query, {"orders": {"edges": []}}) == 2
    assert actual(query, None) == 0
    assert actual('{ order(number: "x") { customer { id } } }', {"order": None}) == 1
    # The data decides, so no page size is needed: 2 + 1 item = 3
    assert actual("{ orders { nodes { id } } }", {"orders": {"nodes": [{"id": "1"}]}}) == 3


def test_actual_cost_applies_only_the_matching_fragment() -> None:
    query = """{ node(id: "x") {
        __typename
        ... on Order { customer { name } lines { sku } }
        ... on Customer { addresses { city } }
    } }"""
    # requested: 1 + customer 1 + lines 5 + addresses 5 = 12
    assert cost(query) == 12
    data = {"node": {"__typename": "Order", "customer": {"name": "A"}, "lines": [{"sku": "s"}]}}
    # node 1 + customer 1 + 1 line x 1 = 3
    assert actual(query, data) == 3


def test_actual_cost_of_one_fragment_on_results_of_several_types() -> None:
    """The walk reuses what it worked out per selection: here the same fragment applies
    to an Order in one place and to a Customer in another, and to many items in each."""
    query = """{ a: node(id: "x") { ...Both } b: node(id: "y") { ...Both } }
        fragment Both on Node {
            __typename
            ... on Order { lines { sku } }
            ... on Customer { addresses { city } }
        }"""
    order = {"__typename": "Order", "lines": [{"sku": "s"}, {"sku": "t"}]}
    customer = {"__typename": "Customer", "addresses": [{"city": "c"}]}
    # a: 1 + 2 lines; b: 1 + 1 address
    assert actual(query, {"a": order, "b": customer}) == 5
    assert actual(query, {"a": customer, "b": order}) == 5
    assert actual(query, {"a": order, "b": order}) == 6
    assert actual(query, {"a": customer, "b": {"__typename": "Customer", "addresses": []}}) == 3


def test_actual_cost_of_a_mutation_and_nodes() -> None:
    query = "mutation { placeOrder(input: {}) { order { number } userErrors { message } } }"
    data: dict[str, Any] = {"placeOrder": {"order": None, "userErrors": [{"message": "no"}]}}
    # 10 + payload 1 + order (null) 1 + 1 userError x 1 = 13
    assert actual(query, data) == 13
    query = "{ orders(first: 50) { nodes { lines { sku } } } }"
    data = {"orders": {"nodes": [{"lines": [{"sku": "a"}] * 3}, {"lines": []}]}}
    # 2 + 2 items + lines (3 x 1) + (0) = 7
    assert actual(query, data) == 7


def test_actual_cost_does_not_look_into_what_costs_nothing() -> None:
    """Selections of leaves only (scalars, enums, __typename) cost 0 whatever the data: an
    object of them costs 1, null or not, a list 1 per item, a connection 1 per item."""

    class Untouchable(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise AssertionError(f"looked into for {key!r}")

        def __iter__(self) -> Iterator[str]:
            raise AssertionError("looked into")

        def __len__(self) -> int:
            raise AssertionError("looked into")

    u = Untouchable()
    query = """{ order(number: "x") {
        customer { name __typename } lines { sku quantity }
        events(first: 3) { nodes { id } edges { cursor node { type } } totalCount }
    } }"""
    data = {
        "order": {
            "customer": u,
            "lines": [u, u, [u]],
            "events": {"nodes": [u, u], "edges": [u], "totalCount": 3},
        }
    }
    # order 1 + customer 1 + lines 3 (nested lists flattened) + events (2 + 2 items + 1) = 10
    assert actual(query, data) == 10
    query = "mutation { placeOrder(input: {}) { order { id } userErrors { message } } }"
    # 10 + payload 1 + order 1 + 2 userErrors = 14
    assert actual(query, {"placeOrder": {"order": u, "userErrors": [u, u]}}) == 14


def test_actual_cost_of_a_field_aliased_typename() -> None:
    # `__typename` is then whatever the field holds, here a list: no type, no TypeError.
    query = "{ viewer { __typename: scopes customer { id } } }"
    data = {"viewer": {"__typename": ["orders:read"], "customer": {"id": "1"}}}
    # viewer 1 + customer 1 = 2
    assert actual(query, data) == 2


def test_actual_cost_prepares_each_operation_once(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Any] = []
    collected: list[Any] = []

    class Walker(cost_module._Walker):
        def __init__(self, *args: Any) -> None:
            built.append(args)
            super().__init__(*args)

        def collect(self, *args: Any) -> Any:
            collected.append(args)
            return super().collect(*args)

    monkeypatch.setattr(cost_module, "_Walker", Walker)
    document = parse(
        """query Q($hide: Boolean!, $n: Int!, $note: String) {
            order(number: $note) { customer @skip(if: $hide) { name } lines { sku } }
            orders(first: $n) { nodes { id } }
        }"""
    )
    data = {
        "order": {"customer": {"name": "A"}, "lines": [{"sku": "a"}, {"sku": "b"}]},
        "orders": {"nodes": [{"id": "1"}]},
    }

    def run(hide: Any, note: str = "a") -> int:
        return actual_cost(SCHEMA, document, "Q", {"hide": hide, "n": 5, "note": note}, data)

    # order 1 + customer 1 + 2 lines + orders (2 + 1 item) = 7; 6 with the customer skipped
    assert run(False) == 7
    assert len(built) == 1
    collected.clear()
    assert run(False, note="b") == 7  # $note is no cost variable
    assert (len(built), collected) == (1, [])
    assert run(True) == 6
    assert len(built) == 2
    collected.clear()
    assert (run(False), run(True), run(False)) == (7, 6, 7)
    assert (len(built), collected) == (2, [])
    # Unhashable values are not cached: prepared every time.
    run([True])
    run([True])
    assert len(built) == 4


# --- actual cost against a reference ----------------------------------------------------------


class Reference:
    """A naive walk of the actual cost model (app/cost.py's docstring): the fragments are
    expanded again at every object, fields merged by response key, nothing cached, nothing
    short-cut. For documents without fragment cycles (see test_fragment_cycles_terminate)."""

    def __init__(self, schema: GraphQLSchema, document: DocumentNode, variables: Any) -> None:
        self.schema = schema
        self.variables = variables
        (self.operation,) = [
            d for d in document.definitions if isinstance(d, OperationDefinitionNode)
        ]
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }

    def cost(self, data: Mapping[str, Any]) -> int:
        root = self.schema.get_root_type(self.operation.operation)
        assert root is not None
        return self.selections(self.collect(root, [self.operation.selection_set]), data)

    def included(self, selection: Any) -> bool:
        for directive in selection.directives or ():
            value = directive.arguments[0].value
            on = (
                self.variables[value.name.value] if isinstance(value, VariableNode) else value.value
            )
            if (directive.name.value, on) in (("skip", True), ("include", False)):
                return False
        return True

    def collect(self, parent: Any, selection_sets: list[SelectionSetNode]) -> list[Any]:
        """(the type each field is selected on, the field), fragments expanded."""
        out: list[Any] = []
        for selection in (s for set_ in selection_sets for s in set_.selections):
            if not self.included(selection):
                continue
            if isinstance(selection, FieldNode):
                out.append((parent, selection))
                continue
            fragment: Any = selection
            if isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments[selection.name.value]
            condition = fragment.type_condition
            target = self.schema.get_type(condition.name.value) if condition else parent
            if is_composite_type(target):
                out += self.collect(target, [fragment.selection_set])
        return out

    @staticmethod
    def by_key(fields: list[Any]) -> dict[str, list[Any]]:
        groups: dict[str, list[Any]] = {}
        for parent, node in fields:
            key = node.alias.value if node.alias else node.name.value
            groups.setdefault(key, []).append((parent, node))
        return groups

    @staticmethod
    def definition(group: list[Any]) -> Any:
        parent, node = group[0]  # fields merged: the first says which field it is
        return getattr(parent, "fields", {}).get(node.name.value)

    def kids(self, group: list[Any]) -> list[Any]:
        named = get_named_type(self.definition(group).type)
        return self.collect(named, [node.selection_set for _, node in group if node.selection_set])

    def selections(self, fields: list[Any], data: Mapping[str, Any]) -> int:
        """The fields present in the object ``data``; if its ``__typename`` names an object
        type, only those selected on it (or on an interface or union it belongs to)."""
        typename = data.get("__typename")
        runtime = self.schema.get_type(typename) if isinstance(typename, str) else None
        if isinstance(runtime, GraphQLObjectType):
            fields = [
                (parent, node)
                for parent, node in fields
                if parent is runtime
                or (is_abstract_type(parent) and self.schema.is_sub_type(parent, runtime))
            ]
        groups = self.by_key(fields).items()
        return sum(self.field(group, data[key]) for key, group in groups if key in data)

    def field(self, group: list[Any], value: Any) -> int:
        definition = self.definition(group)
        if definition is None:  # __typename, introspection
            return 0
        extra = 10 if group[0][0] is self.schema.mutation_type else 0
        named = get_named_type(definition.type)
        if not is_composite_type(named):
            return extra
        kids = self.kids(group)
        edges = getattr(named, "fields", {}).get("edges")
        if edges is not None and "node" in getattr(get_named_type(edges.type), "fields", {}):
            return extra + (self.connection(kids, value) if isinstance(value, Mapping) else 2)
        type_ = definition.type
        if isinstance(type_.of_type if isinstance(type_, GraphQLNonNull) else type_, GraphQLList):
            items = flatten(value)
            return extra + len(items) + sum(self.objects(kids, items))
        return extra + 1 + sum(self.objects(kids, [value]))

    def objects(self, fields: list[Any], values: list[Any]) -> list[int]:
        return [self.selections(fields, v) for v in values if isinstance(v, Mapping)]

    def connection(self, fields: list[Any], data: Mapping[str, Any]) -> int:
        """2 + n (the more of edges and nodes returned) + what the items cost + totalCount 1,
        pageInfo free; the connection's and the edges' fields merged whatever the
        ``__typename``, an edge's ``node`` counted in n."""
        total, n = 2, 0
        for key, group in self.by_key(fields).items():
            name = group[0][1].name.value
            if key not in data:
                continue
            if name in ("edges", "nodes") and self.definition(group) is not None:
                items = flatten(data[key])
                n = max(n, len(items))
                kids = self.kids(group)
                if name == "nodes":
                    total += sum(self.objects(kids, items))
                    continue
                for edge in (e for e in items if isinstance(e, Mapping)):
                    for edge_key, edge_group in self.by_key(kids).items():
                        field = edge_group[0][1].name.value
                        if field == "node" and self.definition(edge_group) is not None:
                            total += sum(self.objects(self.kids(edge_group), [edge.get(edge_key)]))
                        else:
                            total += self.selections(edge_group, edge)
            elif name == "totalCount":
                total += 1
            elif name != "pageInfo":
                total += self.selections(group, data)
        return total + n


def flatten(value: Any) -> list[Any]:
    if not isinstance(value, list):
        return []
    return [
        leaf for item in value for leaf in (flatten(item) if isinstance(item, list) else [item])
    ]


# Unions, nested lists of objects, scalar mutation fields (also below the root: B.m) and lists
# of connections, which the app's schema has not.
OTHER_SCHEMA = build_schema("""
    interface Named { name: String }
    type A implements Named { name: String a: Int child: A kids: [A] grid: [[B]] }
    type B implements Named { name: String b: Int a: A m: Mutation }
    union AB = A | B
    type ABEdge { cursor: String node: AB }
    type Info { hasNextPage: Boolean }
    type ABConnection { edges: [ABEdge] nodes: [AB] pageInfo: Info totalCount: Int extra: A }
    type Query {
        ab(first: Int): ABConnection named: Named any: AB grid: [[A]] conns: [ABConnection]
    }
    type Mutation { bump: Int make: A names: [String] }
""")

REFERENCE_DOCUMENTS = [
    (
        SCHEMA,
        """query Q($v: Boolean!, $w: Boolean!) {
        recent: orders(first: 10) {
            totalCount
            edges { cursor node { number buyer: customer { name }
                lines { sku product { name price { amount } }
                    allocations { quantity warehouse { code address { city } } } } } }
            nodes @include(if: $v) { id total { amount } }
            pageInfo { hasNextPage }
        }
        orders(last: 2) { nodes { id } }
    }""",
    ),
    (
        SCHEMA,
        """query Q($v: Boolean!, $w: Boolean!) {
        node(id: "x") {
            id __typename ...N
            ... on Order { customer { name } lines @skip(if: $w) { sku } }
            ... on Customer { addresses { city } }
        }
        __typename
    }
    fragment N on Node {
        ... on Order { total { amount } lines { product { sku } } }
        ... on Product @include(if: $v) { price { amount } inventory { onHand } }
    }""",
    ),
    (
        SCHEMA,
        """mutation M($v: Boolean!) {
        placeOrder(input: {}) { order { id number status } userErrors { field message } }
        again: placeOrder(input: {}) @include(if: $v) { order { customer { id } } }
        cancelOrder(input: {orderId: "1", reason: "x"}) { __typename }
    }""",
    ),
    (
        SCHEMA,
        """query Q($w: Boolean!) {
        order(number: "x") {
            events(first: 5) {
                edges { cursor node { type order { customer { name } } } }
                e: edges @skip(if: $w) { node { id } }
                pageInfo { endCursor }
                totalCount
            }
            ...O
        }
        orders(first: 1) { ...C }
        orders(first: 1) { nodes { customer { id } } }
    }
    fragment O on Order { customer { email } events { nodes { id } } }
    fragment C on OrderConnection { totalCount edges { ...E } }
    fragment E on OrderEdge { cursor node { ... on Node { id } lines { id } } }""",
    ),
    (
        SCHEMA,
        """{
        products(first: 3) { nodes { inventory { warehouse { address { city } } } } }
        viewer { scopes customer { addresses { city } } }
        __schema { types { name } }
        warehouses { code address { city } }
    }""",
    ),
    (
        OTHER_SCHEMA,
        """query Q($v: Boolean!) {
        ab(first: 3) {
            edges { cursor node { __typename
                ... on A { a child { name } kids { name } }
                ... on B { b a { a } } } }
            nodes { ... on Named { name } ... on A @include(if: $v) { grid { b a { a } } } }
            pageInfo { hasNextPage }
            totalCount
            extra { child { a } }
        }
    }""",
    ),
    (
        OTHER_SCHEMA,
        """query Q($w: Boolean!) {
        grid { child { a } kids { name } }
        conns(first: 1) { totalCount }
        named { name ... on A { child { a } } ... on B @skip(if: $w) { a { child { a } } } }
        any { ... on B { a { child { a } } m { bump } } ... on Named { name } }
    }""",
    ),
    (
        OTHER_SCHEMA,
        "mutation M($v: Boolean!) { bump make { a } x: make { child { a } } "
        "names y: bump @skip(if: $v) }",
    ),
]
PARSED = [(schema, parse(text), text) for schema, text in REFERENCE_DOCUMENTS]
TYPENAMES: list[Any] = [None, None, "Order", "Customer", "Product", "OrderConnection", "A", "B"]
TYPENAMES += ["ABEdge", "Named", "Query", "Mutation", "Nope", "", 7, ["A"]]
MISSING = object()


# Fields whose values are mostly lists in the fake answers (others mostly objects).
LIST_FIELDS = {"edges", "nodes", "lines", "allocations", "addresses", "inventory", "userErrors"}
LIST_FIELDS |= {"warehouses", "types", "kids", "grid", "conns"}


def fake_answer(
    draw: st.DrawFn, fragments: dict[str, Any], selections: list[Any], depth: int
) -> dict[str, Any]:
    """An answer to ``selections`` that need not fit the schema: any field may be missing,
    null, a scalar, an object or a (nested) list, and ``__typename`` anything."""
    keys: dict[str, tuple[str, list[Any]]] = {}
    pending = list(selections)
    while pending:
        selection = pending.pop()
        if isinstance(selection, FieldNode):
            name = selection.name.value
            _, inner = keys.setdefault(
                selection.alias.value if selection.alias else name, (name, [])
            )
            inner += selection.selection_set.selections if selection.selection_set else ()
            continue
        if isinstance(selection, FragmentSpreadNode):
            selection = fragments[selection.name.value]
        pending += selection.selection_set.selections
    out: dict[str, Any] = {}
    typename = draw(st.sampled_from(TYPENAMES))
    if typename is not None:
        out["__typename"] = typename
    for key, (name, inner) in keys.items():
        shape = "list" if name in LIST_FIELDS else "object"
        value = fake_value(draw, fragments, inner, shape, depth)
        if value is not MISSING:
            out[key] = value
    return out


def fake_value(
    draw: st.DrawFn, fragments: dict[str, Any], inner: list[Any], shape: str, depth: int
) -> Any:
    """Mostly ``shape`` ("object", "list" of objects or "item": an object or a nested list)
    if there are selections ``inner``."""
    choices = ["scalar", "missing", "null", "object", "list"]
    if shape == "item":
        choices = ["object", "object", "list", "null", "scalar"]
    elif inner:
        choices = [shape] * 6 + ["missing", "null", "scalar", "object", "list"]
    kind = draw(st.sampled_from(choices))
    if kind == "missing" or (depth > 8 and kind in ("object", "list")):
        return MISSING
    if kind in ("null", "scalar"):
        return None if kind == "null" else "s"
    if kind == "object":
        return fake_answer(draw, fragments, inner, depth + 1)
    size = draw(st.integers(0, 3))
    items = [fake_value(draw, fragments, inner, "item", depth + 1) for _ in range(size)]
    return [item for item in items if item is not MISSING]


@st.composite
def answered(draw: st.DrawFn) -> tuple[GraphQLSchema, DocumentNode, str, Any, Any]:
    schema, document, text = draw(st.sampled_from(PARSED))
    variables = {"v": draw(st.booleans()), "w": draw(st.booleans())}
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    (operation,) = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    answer = fake_answer(draw, fragments, list(operation.selection_set.selections), 0)
    return schema, document, text, variables, answer


@settings(max_examples=400, deadline=None, database=None)
@given(answered())
def test_actual_cost_is_the_reference_walk(
    case: tuple[GraphQLSchema, DocumentNode, str, Any, Any],
) -> None:
    schema, document, text, variables, answer = case
    expected = Reference(schema, document, variables).cost(answer)
    # The documents are parsed once: each is prepared once, then walked over every answer.
    assert actual_cost(schema, document, None, variables, answer) == expected
    assert actual_cost(schema, parse(text), None, variables, answer) == expected  # prepared anew


# --- the budget -------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_budget_drains_throttles_and_recovers() -> None:
    clock = FakeClock()
    budget = CostBudget(100, 10.0, 100, clock=clock)
    assert budget.check("u", 40).status.currently_available == 60
    assert budget.check("u", 40).status.currently_available == 20
    refused = budget.check("u", 40)
    assert (refused.accepted, refused.reason) == (False, "THROTTLED")
    assert refused.retry_after_seconds == 2.0  # (40 - 20) / 10
    assert refused.status.currently_available == 20  # nothing taken
    clock.advance(0.55)  # 25.5 available: (40 - 25.5) / 10 = 1.45, rounded up to 1.5
    assert budget.check("u", 40).retry_after_seconds == 1.5
    clock.advance(1.5)
    accepted = budget.check("u", 40)
    assert (accepted.accepted, accepted.reason, accepted.retry_after_seconds) == (True, None, None)
    assert accepted.status.currently_available == 0
    clock.advance(3600)  # never beyond the capacity
    assert budget.check("u", 0).status.as_dict() == {
        "maximumAvailable": 100,
        "currentlyAvailable": 100,
        "restoreRate": 10.0,
    }


def test_budget_refuses_what_no_wait_can_pay() -> None:
    budget = CostBudget(100, 10.0, 50, clock=FakeClock())
    refused = budget.check("u", 51)
    assert (refused.accepted, refused.reason, refused.retry_after_seconds) == (
        False,
        "MAX_COST_EXCEEDED",
        None,
    )
    assert refused.status.currently_available == 100
    # Above the capacity is never payable either, whatever max_query_cost says.
    assert CostBudget(100, 10.0, 1000, clock=FakeClock()).check("u", 101).reason == (
        "MAX_COST_EXCEEDED"
    )


def test_budget_settle_refunds_and_charges() -> None:
    clock = FakeClock()
    budget = CostBudget(100, 10.0, 100, clock=clock)
    budget.check("u", 80)
    assert budget.settle("u", 80, 30).currently_available == 70  # 20 + 50 back
    budget.check("u", 10)  # 60
    assert budget.settle("u", 10, 150).currently_available == -80  # 60 + 10 - 150
    refused = budget.check("u", 1)
    assert refused.reason == "THROTTLED"
    assert refused.retry_after_seconds == 8.1  # (1 + 80) / 10
    assert budget.settle("u", 0, 1000).currently_available == -100  # not below -capacity
    assert budget.settle("u", 1000, 0).currently_available == 100  # nor above capacity


def test_budget_principals_are_separate_and_bounded() -> None:
    budget = CostBudget(100, 1.0, 100, clock=FakeClock(), max_principals=2)
    budget.check("a", 60)
    budget.check("b", 70)
    assert budget.check("a", 0).status.currently_available == 40  # a is the most recent
    budget.check("c", 10)  # drops b, the least recently used
    assert len(budget) == 2
    assert budget.check("b", 0).status.currently_available == 100  # back, full
    assert budget.check("c", 0).status.currently_available == 90  # dropped a
    assert budget.check("a", 0).status.currently_available == 100


def test_budget_disabled() -> None:
    budget = CostBudget(0, 10.0, 10, clock=FakeClock())
    throttle = budget.check("u", 10**9)
    assert throttle.accepted
    assert throttle.status.as_dict() == {
        "maximumAvailable": 0,
        "currentlyAvailable": 0,
        "restoreRate": 10.0,
    }
    assert budget.settle("u", 10**9, 0).currently_available == 0
    assert len(budget) == 0


def test_budget_without_restore_rate_cannot_say_when() -> None:
    budget = CostBudget(10, 0.0, 10, clock=FakeClock())
    assert budget.check("u", 10).accepted
    refused = budget.check("u", 1)
    assert (refused.reason, refused.retry_after_seconds) == ("THROTTLED", None)


@settings(max_examples=300, deadline=None, database=None)
@given(
    capacity=st.integers(1, 500),
    rate=st.floats(0.01, 100.0),
    steps=st.lists(
        st.tuples(st.floats(0, 30.0), st.integers(0, 600), st.integers(0, 1200)), max_size=40
    ),
)
def test_budget_stays_within_bounds(
    capacity: int, rate: float, steps: list[tuple[float, int, int]]
) -> None:
    clock = FakeClock()
    budget = CostBudget(capacity, rate, capacity, clock=clock)
    for advance, requested, spent in steps:
        clock.advance(advance)
        throttle = budget.check("p", requested)
        assert -capacity <= throttle.status.currently_available <= capacity
        if throttle.accepted:
            assert throttle.status.currently_available >= 0
            status = budget.settle("p", requested, spent)
            assert -capacity <= status.currently_available <= capacity
        elif throttle.reason == "THROTTLED" and throttle.retry_after_seconds is not None:
            clock.advance(throttle.retry_after_seconds)  # waiting as told is enough
            assert budget.check("p", requested).accepted
            budget.settle("p", requested, requested)
        else:
            assert requested > capacity
