"""app.execution: plain fields answered directly give what graphql-core's path gives.

A small Strawberry schema with every kind of field (basic leaves of each scalar and enum,
nullable and not, lists, resolvers sync and async, arguments, nested objects) is executed
with Strawberry's own executor and with ``PlainFieldPath``, on generated objects whose
attributes hold right values, wrong values, nulls, awaitables, raising properties or nothing
at all, and on generated selections (aliases, repeated fields, fragments,
``@skip``/``@include``, ``__typename``). Data and errors must be identical.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import strawberry
from graphql import GraphQLObjectType
from graphql.execution.executor import Executor
from hypothesis import given, settings
from hypothesis import strategies as st
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from app.execution import PlainFieldPath, strawberrys_check
from app.execution import plain_specs as specs_of
from app.main import make_schema


@strawberry.enum
class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Other(enum.Enum):
    BLUE = "blue"


@strawberry.interface
class Labelled:
    label: str


@strawberry.type
class Part(Labelled):
    """Implements an interface, so Strawberry gives it an ``is_type_of`` check."""

    size: int | None

    @strawberry.field
    async def later_label(self) -> str:
        await asyncio.sleep(0)
        if self.label == "boom":
            raise Boom("no label")
        return self.label


@strawberry.type
class Item:
    text: str
    maybe_text: str | None
    count: int
    maybe_count: int | None
    ratio: float
    flag: bool
    color: Color
    maybe_color: Color | None
    when: datetime
    day: date
    amount: Decimal
    ident: strawberry.ID
    tags: list[str]
    child: Item | None
    part: Part
    maybe_part: Part | None

    @strawberry.field
    def shout(self) -> str:
        return str(self.text).upper()

    @strawberry.field
    def plus(self, n: int = 1) -> int:
        return int(self.count) + n


LEAVES = tuple(
    "text maybeText count maybeCount ratio flag color maybeColor when day amount ident".split()
)
OTHERS = ("tags", "shout", "plus", "plus(n: 2)", "__typename")
OBJECTS = ("part", "maybePart")
PART_FIELDS = ("label", "size", "laterLabel", "__typename")
PYTHON_NAME = {
    "maybePart": "maybe_part",
    "maybeText": "maybe_text",
    "maybeCount": "maybe_count",
    "maybeColor": "maybe_color",
}


class Boom(Exception):
    pass


class Later:
    """An awaitable value (a coroutine only once awaited: no warnings when unselected)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Any:
        return asyncio.sleep(0, self.value).__await__()


def _raising(self: Any) -> Any:
    raise Boom("no value")


# What an attribute may hold: right and wrong values of every kind, and stand-ins for
# "raises", "awaitable" and "missing".
RAISES, AWAITS, MISSING = object(), object(), object()
VALUES = st.one_of(
    st.sampled_from(
        [
            None,
            "",
            "text",
            "été",
            0,
            -1,
            7,
            2**31,  # beyond GraphQL's Int
            True,
            False,
            1.5,
            float("nan"),
            float("inf"),
            Decimal("12.30"),
            Decimal("NaN"),
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            date(2026, 1, 2),
            Color.RED,
            Color.GREEN,
            Other.BLUE,
            "red",
            "RED",
            ["a", "b"],
            {"a": 1},
            Boom("an exception as a value"),
        ]
    ),
    st.sampled_from([RAISES, AWAITS, MISSING]),
    st.text(max_size=5),
    st.integers(),
)


def make_part(label: Any, size: Any) -> Part:
    part: Any = object.__new__(Part)
    part.__dict__.update(label=label, size=size)
    return part  # type: ignore[no-any-return]


@strawberry.type
class Sticker(Labelled):
    """Another implementation of the interface: Part's check lets it pass (it admits the
    interface's implementations), and Part's selection then runs on it."""

    shape: str


def make_sticker(label: Any) -> Sticker:
    sticker: Any = object.__new__(Sticker)
    sticker.__dict__.update(label=label, shape="round")
    return sticker  # type: ignore[no-any-return]


# What an object field may hold: parts right and wrong, other objects, and the rest.
PARTS = st.one_of(
    st.builds(
        make_part,
        st.sampled_from(["a", "boom", None, 3]),
        st.none() | st.integers(-5, 2**32),
    ),
    st.builds(make_sticker, st.sampled_from(["s", None])),
    st.sampled_from([None, {"label": "a"}, "a part", Boom("no part"), RAISES, AWAITS, MISSING]),
)


def make_item(values: dict[str, Any], child: Item | None) -> Item:
    """An Item whose attributes are ``values`` (by Python name), with no checks."""
    properties = {name: property(_raising) for name, v in values.items() if v is RAISES}
    cls = type("GeneratedItem", (Item,), properties) if properties else Item
    item: Any = object.__new__(cls)
    for name, value in values.items():
        if value is RAISES or value is MISSING:
            continue
        item.__dict__[name] = Later(value) if value is AWAITS else value
    item.__dict__["child"] = child
    return item  # type: ignore[no-any-return]


def python_name(graphql_name: str) -> str:
    return PYTHON_NAME.get(graphql_name, graphql_name)


# A right value for each leaf, mostly: a wrong one in a non-null field nulls the whole item.
RIGHT = {
    "text": st.text(max_size=5),
    "maybeText": st.none() | st.text(max_size=5),
    "count": st.integers(-(2**31), 2**31 - 1),
    "maybeCount": st.none() | st.integers(-(2**31), 2**31 - 1),
    "ratio": st.floats(allow_nan=False, allow_infinity=False),
    "flag": st.booleans(),
    "color": st.sampled_from(Color),
    "maybeColor": st.none() | st.sampled_from(Color),
    "when": st.datetimes(timezones=st.just(UTC)),
    "day": st.dates(),
    "amount": st.decimals(allow_nan=False, places=2),
    "ident": st.text(min_size=1, max_size=4),
}


@st.composite
def items(draw: st.DrawFn, depth: int = 1) -> Item:
    child = draw(st.none() | items(depth - 1)) if depth > 0 else None
    values = {
        python_name(name): draw(RIGHT[name] if draw(st.integers(0, 3)) else VALUES)
        for name in LEAVES
    }
    values["tags"] = draw(st.sampled_from([["x"], [], None, ["x", None], "nope"]))
    for name in OBJECTS:
        values[python_name(name)] = draw(PARTS)
    return make_item(values, child)


@st.composite
def selections(draw: st.DrawFn, depth: int = 1) -> str:
    fields = draw(st.lists(st.sampled_from(LEAVES + OTHERS), min_size=1, max_size=8))
    parts = []
    for i, field in enumerate(fields):
        alias = draw(st.sampled_from(["", f"a{i}: "]))
        directive = draw(st.sampled_from(["", " @skip(if: true)", " @include(if: true)"]))
        if field == "__typename" or "(" in field:
            alias = f"x{i}: " if "(" in field else alias
        parts.append(f"{alias}{field}{directive}")
    if draw(st.booleans()):
        parts.append("...F")
    for i, name in enumerate(OBJECTS):
        if draw(st.booleans()):
            sub = draw(st.lists(st.sampled_from(PART_FIELDS), min_size=1, max_size=4))
            alias = draw(st.sampled_from(["", f"o{i}: "]))
            parts.append(f"{alias}{name} {{ {' '.join(sub)} }}")
    if depth > 0 and draw(st.booleans()):
        parts.append(f"child {{ {draw(selections(depth - 1))} }}")
    return " ".join(parts)


@strawberry.type
class Query:
    @strawberry.field
    def items(self, info: strawberry.Info) -> list[Item | None]:
        return info.context["items"]  # type: ignore[no-any-return]


STOCK = strawberry.Schema(query=Query, types=[Sticker])
FAST = strawberry.Schema(query=Query, types=[Sticker], execution_context_class=PlainFieldPath)


def execute(schema: strawberry.Schema, query: str, objects: list[Item]) -> Any:
    result = asyncio.run(schema.execute(query, context_value={"items": objects}))
    return result.data, [(e.message, e.path, e.locations) for e in result.errors or []]


@settings(max_examples=300, deadline=None)
@given(objects=st.lists(items(), max_size=3), selection=selections())
def test_plain_field_path_gives_what_graphql_core_gives(
    objects: list[Item], selection: str
) -> None:
    query = f"{{ items {{ {selection} }} }} fragment F on Item {{ count color amount }}"
    assert execute(FAST, query, objects) == execute(STOCK, query, objects)


@pytest.fixture
def stock_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The fields graphql-core's own ``execute_field`` runs."""
    calls: list[str] = []
    original = Executor.execute_field

    def spy(self: Any, parent_type: Any, source: Any, details: Any, *rest: Any) -> Any:
        calls.append(f"{parent_type.name}.{details[0].node.name.value}")
        return original(self, parent_type, source, details, *rest)

    monkeypatch.setattr(Executor, "execute_field", spy)
    yield calls


def good_item(child: Item | None = None) -> Item:
    values = {
        "text": "t",
        "maybe_text": None,
        "count": 3,
        "maybe_count": 4,
        "ratio": 0.5,
        "flag": True,
        "color": Color.RED,
        "maybe_color": None,
        "when": datetime(2026, 1, 2, tzinfo=UTC),
        "day": date(2026, 1, 2),
        "amount": Decimal("1.10"),
        "ident": "i1",
        "tags": ["x"],
        "part": make_part("p", 2),
        "maybe_part": None,
    }
    return make_item(values, child)


def test_plain_fields_skip_graphql_core_and_everything_else_takes_it(
    stock_calls: list[str],
) -> None:
    query = """{ items { text maybeText count color amount shout plus tags
        child { count } part { label laterLabel } maybePart { label } } }"""
    data, errors = execute(FAST, query, [good_item(good_item())])
    assert errors == []
    assert data["items"][0]["amount"] == "1.10"
    assert data["items"][0]["color"] == "RED"
    assert data["items"][0]["child"] == {"count": 3}
    assert data["items"][0]["part"] == {"label": "p", "laterLabel": "p"}
    assert data["items"][0]["maybePart"] is None
    # The root list, the resolvers and the list of strings: graphql-core's.
    assert sorted(stock_calls) == [
        "Item.plus",
        "Item.shout",
        "Item.tags",
        "Part.laterLabel",
        "Query.items",
    ]
    stock_calls.clear()
    execute(STOCK, query, [good_item(good_item())])
    assert "Item.text" in stock_calls and "Item.count" in stock_calls


def test_an_empty_list_is_answered_directly_and_any_other_by_graphql_core(
    stock_calls: list[str],
) -> None:
    empty, full, wrong = good_item(), good_item(), good_item()
    empty.__dict__["tags"] = []
    wrong.__dict__["tags"] = ()  # a tuple, even empty: graphql-core's
    query = "{ items { tags } }"
    data, errors = execute(FAST, query, [empty, full, wrong])
    assert errors == []
    assert data == {"items": [{"tags": []}, {"tags": ["x"]}, {"tags": []}]}
    assert stock_calls == ["Query.items", "Item.tags", "Item.tags"]


def test_a_value_that_fails_takes_graphql_cores_path_and_its_error(stock_calls: list[str]) -> None:
    item = good_item()
    item.__dict__["maybe_count"] = 2**31  # beyond GraphQL's Int: an error, and null
    item.__dict__["text"] = Later("t")  # awaitable
    item.__dict__["count"] = None  # non-null: an error, and the item is null
    query = "{ items { maybeCount text amount count } }"
    data, errors = execute(FAST, query, [item])
    assert sorted(stock_calls) == ["Item.count", "Item.maybeCount", "Item.text", "Query.items"]
    assert data == {"items": [None]}
    assert sorted((message[:24], path) for message, path, _ in errors) == [
        ("Cannot return null for n", ["items", 0, "count"]),
        ("Int cannot represent non", ["items", 0, "maybeCount"]),
    ]
    assert (data, errors) == execute(STOCK, query, [item])


def test_an_error_inside_a_plain_object_is_the_fields_as_graphql_core_has_it() -> None:
    first, second = good_item(), good_item()
    first.__dict__["part"] = make_part(None, 1)  # label is non-null
    second.__dict__["maybe_part"] = make_part("boom", 1)  # laterLabel raises, once awaited
    query = "{ items { count maybePart { size laterLabel } part { size label } } }"
    data, errors = execute(FAST, query, [first, second])
    # part is non-null: the first item goes; maybePart is nullable: only it goes.
    assert data == {
        "items": [None, {"count": 3, "maybePart": None, "part": {"size": 2, "label": "p"}}]
    }
    assert sorted((message, path) for message, path, _ in errors) == [
        ("Cannot return null for non-nullable field Part.label.", ["items", 0, "part", "label"]),
        ("no label", ["items", 1, "maybePart", "laterLabel"]),
    ]
    assert (data, errors) == execute(STOCK, query, [first, second])


class CountResolves(SchemaExtension):
    seen: list[str] = []

    def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        CountResolves.seen.append(info.field_name)
        return _next(root, info, *args, **kwargs)


def test_field_middleware_sees_every_field() -> None:
    schema = strawberry.Schema(
        query=Query, execution_context_class=PlainFieldPath, extensions=[CountResolves]
    )
    CountResolves.seen = []
    data, errors = execute(schema, "{ items { text count } }", [good_item()])
    assert errors == [] and data == {"items": [{"text": "t", "count": 3}]}
    assert CountResolves.seen == ["items", "text", "count"]


def test_which_fields_of_the_api_are_answered_directly() -> None:
    types = make_schema()._schema.type_map

    def specs(name: str) -> dict[str, Any]:
        type_ = types[name]
        assert isinstance(type_, GraphQLObjectType)
        return specs_of(type_)

    assert set(specs("Money")) == {"amount", "currency"}
    # Leaves, and objects of types without an is_type_of check (Money).
    assert {"id", "number", "status", "placedAt", "externalId", "total"} <= set(specs("Order"))
    # Not resolvers or lists.
    assert not {"customer", "lines", "events"} & set(specs("Order"))
    assert "shippingAddress" in specs("Order")  # an Address
    assert "product" not in specs("OrderLine")
    # An Order (a Node): the is_type_of check Strawberry gives it looks at the value only.
    assert "node" in specs("OrderEdge")
    assert {"order", "userErrors"} <= set(specs("PlaceOrderPayload"))


@strawberry.type
class Checked:
    name: str

    @classmethod
    def is_type_of(cls, obj: Any, info: Any) -> bool:
        return isinstance(obj, cls) and info is not None


@strawberry.type
class Holder:
    checked: Checked


def test_only_strawberrys_own_type_check_is_called_without_resolve_info() -> None:
    order = make_schema()._schema.type_map["Order"]
    assert isinstance(order, GraphQLObjectType)
    assert strawberrys_check(order.is_type_of)

    schema = strawberry.Schema(query=Holder)
    checked = schema._schema.type_map["Checked"]
    holder = schema._schema.type_map["Holder"]
    assert isinstance(checked, GraphQLObjectType) and isinstance(holder, GraphQLObjectType)
    assert checked.is_type_of is not None and not strawberrys_check(checked.is_type_of)
    assert "checked" not in specs_of(holder)
    assert not strawberrys_check(lambda obj, info: True)


def test_the_api_executes_on_the_plain_field_path() -> None:
    assert issubclass(make_schema().execution_context_class, PlainFieldPath)
    assert issubclass(PlainFieldPath, StrawberryGraphQLCoreExecutionContext)
