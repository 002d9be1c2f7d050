"""app.variables: compiled variable coercion gives exactly what graphql-core's gives.

A schema with every kind of input (leaves of each built-in scalar, an enum, a scalar whose
coercion raises, lists of lists, input objects with defaults, an ``out_name``, an
``out_type``, a oneOf object, a recursive object) is coerced by both paths, on generated
values that are right, wrong, null, missing or of the wrong shape. Values and errors must
be the same, and the compiled path must be the one that answered every valid value it can
take (else these comparisons would hold trivially).
"""

from __future__ import annotations

from typing import Any

import graphql.execution.executor as graphql_executor
import pytest
from graphql import (
    GraphQLArgument,
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLField,
    GraphQLFloat,
    GraphQLID,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLString,
    parse,
)
from graphql.execution.get_variable_signature import get_variable_signature
from graphql.execution.values import VariableValues
from graphql.execution.values import get_variable_values as graphql_get_variable_values
from hypothesis import given, settings
from hypothesis import strategies as st

import app.variables as variables
from app.main import make_schema
from bench.workload import place_body


def _even(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value % 2:
        raise ValueError("not an even integer")
    return value


Even = GraphQLScalarType("Even", coerce_input_value=_even)
Color = GraphQLEnumType("Color", {"RED": "red", "GREEN": "green"})
Point = GraphQLInputObjectType(
    "Point",
    {"x": GraphQLInputField(GraphQLNonNull(GraphQLInt)), "y": GraphQLInputField(GraphQLInt)},
    out_type=lambda value: ("point", value.get("x"), value.get("y")),
)
Pick = GraphQLInputObjectType(
    "Pick",
    {"text": GraphQLInputField(GraphQLString), "number": GraphQLInputField(GraphQLInt)},
    is_one_of=True,
)
Tree: GraphQLInputObjectType = GraphQLInputObjectType(
    "Tree",
    lambda: {
        "label": GraphQLInputField(GraphQLString),
        "children": GraphQLInputField(GraphQLList(GraphQLNonNull(Tree))),
    },
)
Thing = GraphQLInputObjectType(
    "Thing",
    {
        "name": GraphQLInputField(GraphQLNonNull(GraphQLString)),
        "count": GraphQLInputField(GraphQLInt, default_value=3),
        "ratio": GraphQLInputField(GraphQLFloat),
        "flag": GraphQLInputField(GraphQLBoolean, out_name="is_flag"),
        "ident": GraphQLInputField(GraphQLID),
        "color": GraphQLInputField(Color, default_value="green"),
        "even": GraphQLInputField(Even),
        "grid": GraphQLInputField(GraphQLList(GraphQLList(GraphQLNonNull(GraphQLInt)))),
        "point": GraphQLInputField(Point),
        "points": GraphQLInputField(GraphQLNonNull(GraphQLList(Point)), default_value=[]),
        "pick": GraphQLInputField(Pick),
    },
)
ARGUMENTS = {
    "thing": GraphQLArgument(Thing),
    "things": GraphQLArgument(GraphQLList(GraphQLNonNull(Thing))),
    "tree": GraphQLArgument(Tree),
    "text": GraphQLArgument(GraphQLString),
    "number": GraphQLArgument(GraphQLInt),
}
SCHEMA = GraphQLSchema(GraphQLObjectType("Query", {"echo": GraphQLField(GraphQLString, ARGUMENTS)}))
OPERATIONS = {
    "required": "query($thing: Thing!, $text: String!) { echo(thing: $thing, text: $text) }",
    "nullable": "query($thing: Thing, $number: Int) { echo(thing: $thing, number: $number) }",
    "list": "query($things: [Thing!]) { echo(things: $things) }",
    "default": "query($number: Int = 7, $text: String) { echo(number: $number, text: $text) }",
    "recursive": "query($tree: Tree) { echo(tree: $tree) }",
}
NAMES = ["thing", "things", "text", "number", "tree"]
FIELD_NAMES = [
    *("name", "count", "ratio", "flag", "ident", "color", "even", "grid", "point", "points"),
    *("pick", "x", "y", "number", "label", "children", "unknown"),
]

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False),
    st.sampled_from(["RED", "GREEN", "BLUE", "red", "", "x", "12"]),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(FIELD_NAMES), inner, max_size=6),
    ),
    max_leaves=25,
)
points = st.fixed_dictionaries(
    {"x": st.integers(-5, 5)}, optional={"y": st.none() | st.integers(-(2**31), 2**31 - 1)}
)
things = st.fixed_dictionaries(
    {"name": st.text(max_size=5)},
    optional={
        "count": st.none() | st.integers(-3, 3),
        "ratio": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-3, 3),
        "flag": st.booleans(),
        "ident": st.text(max_size=3) | st.integers(0, 9),
        "color": st.sampled_from(["RED", "GREEN"]),
        "even": st.sampled_from([0, 2, 4]),
        "grid": st.lists(st.lists(st.integers(-9, 9), max_size=3), max_size=3),
        "point": points,
        "points": st.lists(points, max_size=3),
        "pick": st.sampled_from([{"text": "a"}, {"number": 1}]),
    },
)
#: Values of the right shape, mostly valid; each may be spoiled by one wrong value.
shaped = st.fixed_dictionaries(
    {},
    optional={
        "thing": things,
        "things": st.lists(things, max_size=3),
        "text": st.text(max_size=5),
        "number": st.integers(-(2**31), 2**31 - 1),
    },
)


def _both(operation: str, inputs: dict[str, Any]) -> tuple[Any, Any]:
    nodes = parse(OPERATIONS[operation]).definitions[0].variable_definitions  # type: ignore[attr-defined]
    ours = variables.get_variable_values(SCHEMA, nodes, inputs, max_errors=3)
    theirs = graphql_get_variable_values(SCHEMA, nodes, inputs, max_errors=3)
    return ours, theirs


def _same(ours: Any, theirs: Any) -> None:
    if isinstance(theirs, list):
        assert isinstance(ours, list)
        assert [e.formatted for e in ours] == [e.formatted for e in theirs]
        return
    assert isinstance(ours, VariableValues)
    assert ours.coerced == theirs.coerced
    assert {name: (s.signature.name, s.value) for name, s in ours.sources.items()} == {
        name: (s.signature.name, s.value) for name, s in theirs.sources.items()
    }


@settings(max_examples=400, deadline=None)
@given(operation=st.sampled_from(sorted(OPERATIONS)), inputs=shaped)
def test_well_shaped_values_coerce_the_same(operation: str, inputs: dict[str, Any]) -> None:
    _same(*_both(operation, inputs))


@settings(max_examples=400, deadline=None)
@given(
    operation=st.sampled_from(sorted(OPERATIONS)),
    inputs=st.dictionaries(st.sampled_from(NAMES), values, max_size=4),
)
def test_any_values_coerce_the_same(operation: str, inputs: dict[str, Any]) -> None:
    _same(*_both(operation, inputs))


@settings(max_examples=200, deadline=None)
@given(thing=things, text=st.text(max_size=5))
def test_valid_values_take_the_compiled_path(thing: dict[str, Any], text: str) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("graphql-core's path was taken")

    nodes = parse(OPERATIONS["required"]).definitions[0].variable_definitions  # type: ignore[attr-defined]
    expected = graphql_get_variable_values(SCHEMA, nodes, {"thing": thing, "text": text})
    assert isinstance(expected, VariableValues)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(variables, "graphql_get_variable_values", refuse)
        ours = variables.get_variable_values(SCHEMA, nodes, {"thing": thing, "text": text})
    _same(ours, expected)
    # out_name, out_type and the defaults came through
    assert ours.coerced["thing"]["count"] == thing.get("count", 3)  # type: ignore[union-attr]
    assert "flag" not in ours.coerced["thing"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("operation", "inputs"),
    [
        ("default", {"text": "a"}),  # a variable left out: its default applies
        ("nullable", {"thing": {"name": "a"}}),  # a nullable variable left out
        ("recursive", {"tree": {"label": "a", "children": [{"label": "b"}]}}),
        ("required", {"thing": {"name": 1}, "text": "a"}),  # invalid: graphql-core reports
        ("required", {"thing": {"name": "a", "size": 1}, "text": "a"}),  # an unknown field
        ("required", {"thing": {"name": "a", "pick": {"text": "a", "number": 1}}, "text": "a"}),
        ("required", {"thing": {"name": "a", "pick": {}}, "text": "a"}),
        ("required", {"thing": {"name": "a", "pick": {"text": None}}, "text": "a"}),
    ],
)
def test_what_the_compiled_path_leaves_to_graphql_core(
    operation: str, inputs: dict[str, Any]
) -> None:
    nodes = parse(OPERATIONS[operation]).definitions[0].variable_definitions  # type: ignore[attr-defined]
    assert variables._compiled(SCHEMA, nodes, inputs) is None
    _same(*_both(operation, inputs))


def test_a_type_nested_deeper_than_graphql_core_allows_is_not_compiled() -> None:
    deep: Any = GraphQLInt
    for _ in range(201):
        deep = GraphQLList(deep)
    assert variables.coercer(deep) is None
    assert variables.coercer(GraphQLList(GraphQLInt)) is not None


def test_the_schema_installs_it_in_graphql_cores_executor() -> None:
    make_schema()
    assert vars(graphql_executor)["get_variable_values"] is variables.get_variable_values


async def test_place_orders_input_takes_the_compiled_path() -> None:
    import json

    schema = make_schema()._schema
    body = json.loads(place_body(["TEE-BLK-M", "MUG-WHT"], "Q3VzdG9tZXI6MQ=="))
    nodes = parse(body["query"]).definitions[0].variable_definitions  # type: ignore[attr-defined]
    ours = variables._compiled(schema, nodes, body["variables"])
    theirs = graphql_get_variable_values(schema, nodes, body["variables"])
    assert ours is not None
    _same(ours, theirs)


def test_one_documents_signatures_are_read_once_and_give_each_requests_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    real = get_variable_signature

    def counted(schema: Any, node: Any) -> Any:
        calls.append(node.variable.name.value)
        return real(schema, node)

    monkeypatch.setattr(variables, "get_variable_signature", counted)
    nodes = parse(OPERATIONS["required"]).definitions[0].variable_definitions  # type: ignore[attr-defined]
    for text in ("a", "b", "c"):
        inputs = {"thing": {"name": text}, "text": text}
        ours = variables._compiled(SCHEMA, nodes, inputs)
        assert ours is not None
        _same(ours, graphql_get_variable_values(SCHEMA, nodes, inputs))
    assert sorted(calls) == ["text", "thing"]
    # What the compiled path leaves to graphql-core stays left, however often it comes.
    recursive = parse(OPERATIONS["recursive"]).definitions[0].variable_definitions  # type: ignore[attr-defined]
    for _ in range(2):
        assert variables._compiled(SCHEMA, recursive, {"tree": {"label": "a"}}) is None
