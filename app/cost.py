"""Query cost: static analysis of an operation, and a per-principal budget of cost points.

Cost model (the same for the requested cost, computed from the query and its arguments, and
the actual cost, computed from the result data):

- Scalar and enum fields cost 0, and so does ``__typename``. Introspection (``__schema``,
  ``__type``) costs 0 and is not looked into.
- An object, interface or union field costs 1 + the cost of its selections.
- A connection field (its type has an ``edges`` field whose type has a ``node`` field, like
  ``OrderConnection``) costs 2 + n * (1 + the cost of the selections under
  ``edges { node { … } }`` plus those under ``nodes { … }``). ``pageInfo`` and ``cursor`` are
  free, ``totalCount`` costs 1. n is the ``first`` or ``last`` argument (variables resolved;
  the larger if both are given; the argument's schema default if not given). A connection
  needs ``first`` or ``last``, from 0 to 100 (MAX_PAGE_SIZE).
- A plain list of objects that is not a connection (``Order.lines``, ``Query.warehouses``)
  costs LIST_ESTIMATE * (1 + the cost of its selections), where LIST_ESTIMATE = 5 is a
  typical size.
- Each root mutation field costs MUTATION_COST = 10 more.
- Fragments on abstract types: every branch is added (an upper bound).
- Selections nested more than MAX_NESTING = 100 fields (or fragments) deep are refused.

The actual cost walks the result data instead: connections and lists count the items really
returned (n is the length of ``edges`` or ``nodes``; a connection without items costs 2), an
object field whose value is null costs 1, and a field absent from the data (a fragment that
did not apply, or an error) costs 0.

``CostBudget`` is a token bucket per principal: it holds up to ``capacity`` points and
refills at ``restore_rate`` points per second. A query reserves its requested cost up front;
after it ran, the difference to its actual cost is given back.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLIncludeDirective,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSkipDirective,
    InlineFragmentNode,
    Node,
    OperationType,
    SelectionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    get_operation_ast,
    is_abstract_type,
    is_composite_type,
    value_from_ast,
)
from graphql.execution.values import VariableValues, get_directive_values, get_variable_values
from graphql.pyutils import Undefined

from app.identity_cache import IdentityCache

LIST_ESTIMATE = 5
MUTATION_COST = 10
MAX_PAGE_SIZE = 100
MAX_NESTING = 100
CONNECTION_COST = 2
INTROSPECTION = frozenset({"__schema", "__type"})


class CostError(GraphQLError):
    """A query the cost analysis refuses (a connection without a valid page size)."""

    def __init__(self, message: str, node: Node | None = None) -> None:
        super().__init__(message, node, extensions={"code": "QUERY_COST"})


@dataclass(frozen=True)
class Analysis:
    operation_type: OperationType
    coordinates: frozenset[str]
    requested_cost: int


# A field as selected: the type it is selected on, its node, the fragments it is nested in.
_Entry = tuple[GraphQLNamedType, FieldNode, frozenset[str]]
_Entries = list[_Entry]
_Seen = frozenset[str]
_Vars = Mapping[str, Any] | None
_Data = Mapping[str, Any]


class _FieldInfo:
    """A field's part of the cost that its selections decide (``_Walker.field_info``)."""

    __slots__ = ("connection", "coordinate", "extra", "field", "group", "key", "kids", "listed")

    def __init__(
        self, group: _Entries, key: str, coordinate: str | None, field: GraphQLField | None
    ) -> None:
        self.group = group  # (kept, so that no other list can take its id meanwhile)
        self.key = key
        self.coordinate = coordinate
        self.field = field
        self.extra = 0
        self.kids: _Entries | None = None  # the selections under it; None for a leaf
        self.connection = False
        self.listed = False


class _Walker:
    """An operation's selections (fragments resolved, merged as execution merges them, with
    what each field's cost takes from them worked out once per group), and its requested
    cost. ``_Prepared`` walks the same selections with the result data: the actual cost."""

    def __init__(
        self, schema: GraphQLSchema, document: DocumentNode, name: str | None, variables: _Vars
    ) -> None:
        self.schema = schema
        self.operation = get_operation_ast(document, name)
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.variables: dict[str, Any] = dict(variables or {})
        self.variable_values: VariableValues | None = None
        # Invalid variables never execute (graphql-core reports them): estimate generously
        # rather than mistake a bad `$first` for a missing one.
        self.variables_invalid = False
        if self.operation is not None:
            # Only the variables the cost depends on are coerced: a mutation's `$input`
            # (coerced again by execution) would cost more than the whole walk.
            relevant = cost_variables(document)
            definitions = [
                d
                for d in self.operation.variable_definitions or ()
                if d.variable.name.value in relevant
            ]
            coerced = get_variable_values(schema, definitions, self.variables)
            if isinstance(coerced, VariableValues):  # else execution reports the errors
                self.variable_values, self.variables = coerced, coerced.coerced
            else:
                self.variables_invalid = True
        self.coordinates: set[str] = set()
        # What depends on the selections only, not on the data, worked out once per walker:
        # the requested cost reads it, and so does ``_Prepared`` while it builds its plans.
        self._children: dict[tuple[str, tuple[int, ...]], _Entries] = {}
        self._groups: dict[tuple[int, bool], list[_Entries]] = {}
        self._applying: dict[tuple[int, str], tuple[_Entries, _Entries]] = {}
        self._fields: dict[int, _FieldInfo] = {}

    def root(self) -> list[_Entry] | None:
        """The root fields of the operation; None if there is no such operation."""
        op = self.operation
        root = self.schema.get_root_type(op.operation) if op is not None else None
        return self.collect(root, op.selection_set, frozenset(), []) if op and root else None

    def _included(self, node: SelectionNode) -> bool:
        try:
            skip = get_directive_values(GraphQLSkipDirective, node, self.variable_values)
            include = get_directive_values(GraphQLIncludeDirective, node, self.variable_values)
        except GraphQLError:  # an invalid value: validation reports it
            return True
        return (skip or {}).get("if") is not True and (include or {}).get("if") is not False

    def collect(
        self, parent: GraphQLNamedType, selections: SelectionSetNode, seen: _Seen, out: _Entries
    ) -> _Entries:
        """Append the fields of ``selections`` on ``parent``, fragments resolved, to ``out``.
        ``seen``: the fragments the selections are nested in, so that none recurses forever."""
        for sel in selections.selections:
            if not self._included(sel):
                continue
            if isinstance(sel, FieldNode):
                out.append((parent, sel, seen))
                continue
            if isinstance(sel, InlineFragmentNode):
                cond = sel.type_condition.name.value if sel.type_condition else None
                inner, inner_seen = sel.selection_set, seen
            elif isinstance(sel, FragmentSpreadNode) and sel.name.value not in seen:
                fragment = self.fragments.get(sel.name.value)
                if fragment is None:
                    continue
                if len(seen) >= MAX_NESTING:
                    nested = f"is nested in more than {MAX_NESTING} fragments."
                    raise CostError(f"`...{sel.name.value}` {nested}", sel)
                cond, inner = fragment.type_condition.name.value, fragment.selection_set
                inner_seen = seen | {sel.name.value}
            else:
                continue
            target = self.schema.get_type(cond) if cond else parent
            if target is not None and is_composite_type(target):
                self.collect(target, inner, inner_seen, out)
        return out

    def children(self, named: GraphQLNamedType, group: _Entries) -> _Entries:
        key = (named.name, tuple(id(node) for _, node, _ in group))
        out = self._children.get(key)
        if out is None:
            out = self._children[key] = []
            for _, node, seen in group:
                if node.selection_set is not None:
                    self.collect(named, node.selection_set, seen, out)
        return out

    def groups(self, entries: _Entries, *, by_key: bool) -> list[_Entries]:
        """``_groups``, once per list of entries (``children`` hands out the same lists)."""
        key = (id(entries), by_key)
        found = self._groups.get(key)
        if found is None or found[0] is not entries:
            found = self._groups[key] = [entries, *_groups(entries, by_key=by_key)]
        return found[1:]

    def applying(self, group: _Entries, runtime: GraphQLObjectType) -> _Entries:
        """The entries of ``group`` selected on ``runtime`` (or on a type it belongs to)."""
        key = (id(group), runtime.name)
        hit = self._applying.get(key)
        if hit is None or hit[0] is not group:
            # (``group`` kept with it, so that no other list can take its id meanwhile.)
            hit = self._applying[key] = (group, [e for e in group if self._applies(e[0], runtime)])
        return hit[1]

    def field_info(self, group: _Entries) -> _FieldInfo:
        """What the cost of a field takes from its selections alone, once per group."""
        found = self._fields.get(id(group))
        if found is not None and found.group is group:
            return found
        parent, node, _ = group[0]
        field = _definition(parent, node)
        coordinate = None
        if node.name.value in INTROSPECTION or field is not None:
            coordinate = f"{parent.name}.{node.name.value}"
        info = _FieldInfo(group, _key(node), coordinate, field)
        if field is not None:
            info.extra = MUTATION_COST if parent is self.schema.mutation_type else 0
            named = get_named_type(field.type)
            if is_composite_type(named):
                info.kids = self.children(named, group)
                info.connection = _is_connection(named)
                info.listed = _is_list(field)
        self._fields[id(group)] = info
        return info

    def free(self, entries: _Entries) -> bool:
        """Whether ``entries`` cost 0 whatever the data: each is a leaf (a scalar or an enum
        below the mutation root) or unknown to the schema (``__typename``, introspection).

        Exact for the actual cost: the data only decides which of them count (the fields
        present, the fragments that applied), and however they are grouped and filtered,
        the first entry of a group is one of them, so ``field_info`` gives no field or no
        kids, and no ``MUTATION_COST``: 0."""
        mutation = self.schema.mutation_type
        for parent, node, _ in entries:
            field = _definition(parent, node)
            if field is not None and (
                parent is mutation or is_composite_type(get_named_type(field.type))
            ):
                return False
        return True

    def cost(self, entries: _Entries, path: str) -> int:
        """The requested cost of ``entries`` (the fields selected on ``path``)."""
        total = 0
        for group in self.groups(entries, by_key=False):
            total += self._field(self.field_info(group), path)
        return total

    def _field(self, info: _FieldInfo, path: str) -> int:
        if info.coordinate is not None:
            self.coordinates.add(info.coordinate)
        if info.field is None:  # __typename, introspection, or an invalid field
            return 0
        extra, kids = info.extra, info.kids
        if kids is None:  # a scalar or an enum
            return extra
        here = f"{path}.{info.key}".lstrip(".")
        if here.count(".") >= MAX_NESTING:  # fragments can nest past the parser's limit
            root = here.split(".")[0]
            node = info.group[0][1]
            raise CostError(f"`{root}` is nested more than {MAX_NESTING} fields deep.", node)
        if info.connection:
            size = self._page_size(info.field, info.group[0][1], here)
            return extra + self._connection(kids, size, here)
        if info.listed:
            return extra + LIST_ESTIMATE + LIST_ESTIMATE * self.cost(kids, here)
        return extra + 1 + self.cost(kids, here)

    def _connection(self, entries: _Entries, n: int, path: str) -> int:
        """2 + n * (1 + what each item costs) + totalCount, n being ``first``/``last``."""
        total = CONNECTION_COST
        for group in self.groups(entries, by_key=False):
            parent, node, _ = group[0]
            name, key = node.name.value, _key(node)
            named = _field_named_type(_definition(parent, node))
            if name in ("edges", "nodes") and named is not None:
                self.coordinates.add(f"{parent.name}.{name}")
                for inner in self.groups(self.children(named, group), by_key=False):
                    edge_type, edge_node, _ = inner[0]
                    node_type = _field_named_type(_definition(edge_type, edge_node))
                    if name == "nodes" or edge_node.name.value != "node" or node_type is None:
                        total += n * self.cost(inner, f"{path}.{key}")
                        continue
                    self.coordinates.add(f"{edge_type.name}.node")
                    kids = self.children(node_type, inner)
                    total += n * self.cost(kids, f"{path}.{key}.{_key(edge_node)}")
            elif name == "totalCount":
                self.coordinates.add(f"{parent.name}.totalCount")
                total += 1
            else:  # pageInfo is free: walked for its coordinates only
                cost = self.cost(group, path)
                total += 0 if name == "pageInfo" else cost
        return total + n

    def _applies(self, parent: GraphQLNamedType, runtime: GraphQLObjectType) -> bool:
        if is_abstract_type(parent):
            return self.schema.is_sub_type(parent, runtime)
        return parent is runtime

    def _page_size(self, field: GraphQLField, node: FieldNode, path: str) -> int:
        """``first`` or ``last`` (the larger), given or by default; CostError if neither."""
        sizes: list[int] = []
        for name, arg in ((n, field.args.get(n)) for n in ("first", "last")):
            given = next((a.value for a in node.arguments or () if a.name.value == name), None)
            if arg is None:
                continue
            value = Undefined
            if isinstance(given, VariableNode):
                if self.variables_invalid:
                    sizes.append(MAX_PAGE_SIZE)
                    continue
                value = self.variables.get(given.name.value, Undefined)
            elif given is not None:
                value = value_from_ast(given, arg.type, self.variables)
            value = arg.default_value if value is Undefined else value
            if isinstance(value, int) and not isinstance(value, bool):
                if not 0 <= value <= MAX_PAGE_SIZE:
                    message = f"`{path}`: `{name}` must be from 0 to {MAX_PAGE_SIZE}, not {value}."
                    raise CostError(message, node)
                sizes.append(value)
        if not sizes:
            message = f"`{path}` is a connection: pass `first` or `last` (at most {MAX_PAGE_SIZE})."
            raise CostError(message, node)
        return max(sizes)


def _definition(parent: GraphQLNamedType, node: FieldNode) -> GraphQLField | None:
    fields = getattr(parent, "fields", None)
    return fields.get(node.name.value) if isinstance(fields, dict) else None


def _field_named_type(field: GraphQLField | None) -> GraphQLNamedType | None:
    return get_named_type(field.type) if field is not None else None


def _key(node: FieldNode) -> str:
    return node.alias.value if node.alias else node.name.value


def _groups(entries: Iterable[_Entry], *, by_key: bool = False) -> list[_Entries]:
    """Entries merged as execution merges them: by response key (and, unless ``by_key``, by
    the type selected on, so that the branches of an abstract type add up)."""
    groups: dict[tuple[str, ...], _Entries] = {}
    for entry in entries:
        key = (_key(entry[1]),) if by_key else (entry[0].name, entry[1].name.value, _key(entry[1]))
        groups.setdefault(key, []).append(entry)
    return list(groups.values())


def _is_list(field: GraphQLField) -> bool:
    type_ = field.type.of_type if isinstance(field.type, GraphQLNonNull) else field.type
    return isinstance(type_, GraphQLList)


def _is_connection(named: GraphQLNamedType) -> bool:
    edges = getattr(named, "fields", {}).get("edges")
    edge_type = get_named_type(edges.type) if edges is not None else None
    return "node" in getattr(edge_type, "fields", {})


def _items(value: Any) -> list[Any]:
    """The items of a list value (nested lists flattened); none for null. (A flat list is
    handed out itself: read it only.)"""
    if not isinstance(value, list):
        return []
    if not any(isinstance(item, list) for item in value):
        return value
    return [leaf for item in value for leaf in (_items(item) if isinstance(item, list) else [item])]


def _count(value: Any) -> int:
    """``len(_items(value))``, without building the list."""
    if not isinstance(value, list):
        return 0
    count = len(value)
    for item in value:
        if isinstance(item, list):
            count += _count(item) - 1
    return count


_COST_ARGUMENTS = frozenset({"first", "last"})
_CONDITIONS = frozenset({"skip", "include"})


def _variables_in(node: Any, out: set[str]) -> None:
    if isinstance(node, VariableNode):
        out.add(node.name.value)
    for child in getattr(node, "values", None) or getattr(node, "fields", None) or ():
        _variables_in(getattr(child, "value", child), out)


def _scan(selections: SelectionSetNode | None, out: set[str]) -> None:
    for sel in selections.selections if selections is not None else ():
        for directive in sel.directives or ():
            if directive.name.value in _CONDITIONS:
                for arg in directive.arguments or ():
                    _variables_in(arg.value, out)
        if isinstance(sel, FieldNode):
            for arg in sel.arguments or ():
                if arg.name.value in _COST_ARGUMENTS:
                    _variables_in(arg.value, out)
        if isinstance(sel, FieldNode | InlineFragmentNode):
            _scan(sel.selection_set, out)


# By document identity: the parser cache hands out the same DocumentNode for the same text,
# and documents hash deeply (slow).
_VARIABLES_CACHE = IdentityCache(1024)
_ANALYSIS_CACHE = IdentityCache(4096)


def cost_variables(document: DocumentNode) -> frozenset[str]:
    """The variables the cost of ``document`` depends on: those in ``first``/``last``
    arguments and in ``@skip``/``@include`` conditions."""
    key = (id(document),)
    found: frozenset[str] | None = _VARIABLES_CACHE.get(key)
    if found is None:
        out: set[str] = set()
        for definition in document.definitions:
            _scan(getattr(definition, "selection_set", None), out)
            for directive in getattr(definition, "directives", None) or ():
                for arg in directive.arguments or ():
                    _variables_in(arg.value, out)
        found = frozenset(out)
        _VARIABLES_CACHE.put(key, document, found)
    return found


def _cache_key(
    schema: GraphQLSchema, document: DocumentNode, operation_name: str | None, variables: _Vars
) -> tuple[Any, ...] | None:
    """What a cost worked out for an operation depends on: the schema, the document, the
    operation and the values of ``cost_variables`` (each with its type: ``True == 1`` as a
    key, but they coerce differently); None (no caching) for an unhashable value, which is
    an invalid one. The caches keep the schema and document, so no id here is reused."""
    given = variables or {}
    values = []
    for name in sorted(cost_variables(document)):
        value = given.get(name, Undefined)
        values.append((name, type(value), value))
    key = (id(schema), id(document), operation_name, tuple(values))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def analyze(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: _Vars,
) -> Analysis:
    """The operation's type, the schema coordinates it touches and its requested cost.
    Cached by document, operation and the values of the variables the cost depends on."""
    key = _cache_key(schema, document, operation_name, variables)
    if key is not None and (cached := _ANALYSIS_CACHE.get(key)) is not None:
        return cached  # type: ignore[no-any-return]
    walker = _Walker(schema, document, operation_name, variables)
    entries = walker.root()
    cost = walker.cost(entries, "") if entries is not None else 0
    kind = walker.operation.operation if walker.operation else OperationType.QUERY
    analysis = Analysis(kind, frozenset(walker.coordinates), cost)
    if key is not None:
        _ANALYSIS_CACHE.put(key, (schema, document), analysis)
    return analysis


# --- the actual cost ----------------------------------------------------------------------

# How a field's actual cost follows from its value (the kind of a ``_Step``).
_SCALAR = 0  # extra (a scalar root mutation field; other scalars cost 0 and have no step)
_OBJECT = 1  # extra + 1 + its selections over the value, if an object
_LEAF_OBJECT = 2  # extra + 1: its selections cost 0 whatever the value (``_Walker.free``)
_LIST = 3  # extra + the number of items + its selections over each item
_LEAF_LIST = 4  # extra + the number of items
_CONNECTION = 5  # extra + ``_Prepared._connection`` over the value; 2 if not an object

# (response key, kind, MUTATION_COST or 0, the ``_Plan`` of the field's selections, or its
# ``_ConnectionPlan``, or None for a scalar)
_Step = tuple[str, int, int, Any]
_ABSENT: Any = object()


class _Plan:
    """The actual cost of one list of entries (the selections on an object), prepared.

    ``free``: they cost 0 whatever the data (``_Walker.free``), so the field they are
    selected under never visits its value. ``steps`` (built on the first walk): one per
    response key that can cost something, for an object whose ``__typename`` names no object
    type; ``typed``: the same per runtime type, from the fragments that apply to it. The
    fields that cost 0 there (scalars, ``__typename``, unknown fields) have no step."""

    __slots__ = ("entries", "free", "steps", "typed")

    def __init__(self, entries: _Entries, free: bool) -> None:
        self.entries = entries  # (kept, so that no other list can take its id meanwhile)
        self.free = free
        self.steps: tuple[_Step, ...] | None = None
        self.typed: dict[str, tuple[_Step, ...]] = {}


# What a field selected on a connection adds (``_Part.kind``).
_ITEMS = 0  # edges or nodes: their number (n) and what each item's selections cost
_TOTAL_COUNT = 1  # 1
_OTHER = 2  # its actual cost, as any field's (pageInfo, and fields always free, get no part)


class _Part:
    """A field selected on a connection (``_ConnectionPlan``). For ``edges`` and ``nodes``,
    ``items`` (built when an answer first has them): what each item costs, as (None, the
    plan of a field of the item) or, for the ``node`` of an edge, (its response key, the
    plan of the node's selections); free plans left out. For ``_OTHER``, ``plan``: that of
    the field itself."""

    __slots__ = ("group", "items", "key", "kind", "name", "named", "plan")

    def __init__(self, kind: int, group: _Entries, named: GraphQLNamedType | None = None) -> None:
        self.kind = kind
        self.group = group
        self.key = _key(group[0][1])
        self.name = group[0][1].name.value
        self.named = named
        self.items: list[tuple[str | None, _Plan]] | None = None
        self.plan: _Plan | None = None


class _ConnectionPlan:
    """The selections on a connection, prepared: ``parts`` (built on the first walk), one
    per response key, but those that cost 0 whatever the data (``pageInfo``, free fields)."""

    __slots__ = ("entries", "parts")

    def __init__(self, entries: _Entries) -> None:
        self.entries = entries  # (kept, so that no other list can take its id meanwhile)
        self.parts: list[_Part] | None = None


class _Prepared:
    """An operation prepared for the actual cost of its answers (``actual_cost`` caches one
    per document, operation and values of the cost variables): the plan of each selection
    is worked out on its first walk, from the ``_Walker``'s groups and field infos, then
    reused for every item of every answer.

    What is short-cut, each exactly (the same result as visiting every field of the data):
    fields that cost 0 wherever they are selected have no step; a field whose selections
    are all free (``_Walker.free``) is not descended into, as they add 0 whatever its value
    holds: an object costs ``extra + 1`` (null or not), a list ``extra`` + its number of
    items, and the edges or nodes of a connection add only their number to n.

    Shared by the requests that send the same operation: a walk is synchronous (no await,
    so two requests on the event loop never interleave within one) and all it leaves on the
    object are plans, which depend on the selections alone, never on an answer. (Were two
    threads to walk at once, a plan could be built twice: the same both times, and the
    memos check the identity of what they are keyed by.)"""

    def __init__(self, walker: _Walker) -> None:
        self.walker = walker
        self.schema = walker.schema
        self._plans: dict[int, _Plan] = {}
        self._connections: dict[int, _ConnectionPlan] = {}
        entries = walker.root()
        self.root = self.plan(entries) if entries is not None else None

    def cost(self, data: _Data) -> int:
        """The actual cost of the answer ``data``."""
        return self._cost(self.root, data) if self.root is not None else 0

    def plan(self, entries: _Entries) -> _Plan:
        """The plan of ``entries``, once per list (the walker hands out the same lists)."""
        found = self._plans.get(id(entries))
        if found is None or found.entries is not entries:
            found = self._plans[id(entries)] = _Plan(entries, self.walker.free(entries))
        return found

    def _connection_plan(self, entries: _Entries) -> _ConnectionPlan:
        found = self._connections.get(id(entries))
        if found is None or found.entries is not entries:
            found = self._connections[id(entries)] = _ConnectionPlan(entries)
        return found

    def _steps(self, plan: _Plan, runtime: GraphQLObjectType | None) -> tuple[_Step, ...]:
        """``plan``'s steps, for all its entries (``runtime`` None) or for those that apply
        to ``runtime``; fields merged by response key, as execution merges them."""
        walker, steps = self.walker, list[_Step]()
        for group in walker.groups(plan.entries, by_key=True):
            if runtime is not None:
                group = walker.applying(group, runtime)
                if not group:
                    continue
            info = walker.field_info(group)
            if info.field is None:  # __typename, introspection, or an invalid field: 0
                continue
            if info.kids is None:  # a scalar or an enum
                if info.extra:
                    steps.append((info.key, _SCALAR, info.extra, None))
            elif info.connection:
                connection = self._connection_plan(info.kids)
                steps.append((info.key, _CONNECTION, info.extra, connection))
            else:
                sub = self.plan(info.kids)
                if info.listed:
                    kind = _LEAF_LIST if sub.free else _LIST
                else:
                    kind = _LEAF_OBJECT if sub.free else _OBJECT
                steps.append((info.key, kind, info.extra, sub))
        done = tuple(steps)
        if runtime is None:
            plan.steps = done
        else:
            plan.typed[runtime.name] = done
        return done

    def _cost(self, plan: _Plan, data: _Data) -> int:
        """The actual cost of ``plan``'s entries over the object ``data``: a field absent
        from it costs 0; if its ``__typename`` names an object type, only the fragments that
        apply to that type count."""
        typename = data.get("__typename")
        # (Not a string when a field is aliased `__typename`: no type then, rather than a
        # TypeError for a list.)
        runtime = self.schema.get_type(typename) if isinstance(typename, str) else None
        if isinstance(runtime, GraphQLObjectType):
            steps = plan.typed.get(runtime.name)
            if steps is None:
                steps = self._steps(plan, runtime)
        else:
            steps = plan.steps
            if steps is None:
                steps = self._steps(plan, None)
        total = 0
        for key, kind, extra, sub in steps:
            value = data.get(key, _ABSENT)
            if value is _ABSENT:
                continue
            if kind == _LEAF_OBJECT:
                total += extra + 1
            elif kind == _OBJECT:
                total += extra + 1
                if isinstance(value, Mapping):
                    total += self._cost(sub, value)
            elif kind == _LIST:
                items = _items(value)
                total += extra + len(items)
                for item in items:
                    if isinstance(item, Mapping):
                        total += self._cost(sub, item)
            elif kind == _LEAF_LIST:
                total += extra + _count(value)
            elif kind == _CONNECTION:
                if isinstance(value, Mapping):
                    total += extra + self._connection(sub, value)
                else:
                    total += extra + CONNECTION_COST
            else:  # _SCALAR
                total += extra
        return total

    def _connection(self, connection: _ConnectionPlan, data: _Data) -> int:
        """2 + n (the more of edges and nodes returned) + what their items cost + 1 for
        ``totalCount`` + the actual cost of other fields. The fields selected on the
        connection and on its edges are merged by response key without looking at their
        ``__typename`` (an edge's ``node`` counts in n, not as a field of the edge); the
        nodes, the edges' other fields and the connection's other fields are walked as
        objects (``_cost``)."""
        parts = connection.parts
        if parts is None:
            parts = connection.parts = self._parts(connection.entries)
        total, count = CONNECTION_COST, 0
        for part in parts:
            value = data.get(part.key, _ABSENT)
            if value is _ABSENT:
                continue
            if part.kind == _ITEMS:
                items = _items(value)
                count = max(count, len(items))
                plans = part.items
                if plans is None:
                    plans = part.items = self._item_plans(part)
                for node_key, plan in plans:
                    for item in items:
                        if not isinstance(item, Mapping):
                            continue
                        if node_key is not None:
                            item = item.get(node_key)
                            if not isinstance(item, Mapping):
                                continue
                        total += self._cost(plan, item)
            elif part.kind == _TOTAL_COUNT:
                total += 1
            elif part.plan is not None:  # _OTHER
                total += self._cost(part.plan, data)
        return total + count

    def _parts(self, entries: _Entries) -> list[_Part]:
        parts = []
        for group in self.walker.groups(entries, by_key=True):
            parent, node, _ = group[0]
            name = node.name.value
            named = _field_named_type(_definition(parent, node))
            if name in ("edges", "nodes") and named is not None:
                parts.append(_Part(_ITEMS, group, named))
            elif name == "totalCount":
                parts.append(_Part(_TOTAL_COUNT, group))
            elif name != "pageInfo" and not self.walker.free(group):  # else it costs 0
                part = _Part(_OTHER, group)
                part.plan = self.plan(group)
                parts.append(part)
        return parts

    def _item_plans(self, part: _Part) -> list[tuple[str | None, _Plan]]:
        walker, plans = self.walker, []
        assert part.named is not None  # (an _ITEMS part)
        for inner in walker.groups(walker.children(part.named, part.group), by_key=True):
            edge_type, edge_node, _ = inner[0]
            node_type = _field_named_type(_definition(edge_type, edge_node))
            if part.name == "nodes" or edge_node.name.value != "node" or node_type is None:
                node_key, entries = None, inner
            else:
                node_key, entries = _key(edge_node), walker.children(node_type, inner)
            plan = self.plan(entries)
            if not plan.free:
                plans.append((node_key, plan))
        return plans


# Prepared operations (``_cache_key``); their plans keep the lists their memos are keyed by.
_PREPARED_CACHE = IdentityCache(1024)


def actual_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: _Vars,
    data: Mapping[str, Any] | None,
) -> int:
    """The cost model applied to the result ``data``: items really returned. The operation is
    prepared once per document, operation and values of ``cost_variables`` (``_Prepared``)."""
    if data is None:
        return 0
    key = _cache_key(schema, document, operation_name, variables)
    prepared: _Prepared | None = _PREPARED_CACHE.get(key) if key is not None else None
    if prepared is None:
        prepared = _Prepared(_Walker(schema, document, operation_name, variables))
        if key is not None:
            _PREPARED_CACHE.put(key, (schema, document), prepared)
    return prepared.cost(data)


# --- the budget ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ThrottleStatus:
    maximum_available: int
    currently_available: int
    restore_rate: float

    def as_dict(self) -> dict[str, int | float]:
        return {
            "maximumAvailable": self.maximum_available,
            "currentlyAvailable": self.currently_available,
            "restoreRate": self.restore_rate,
        }


@dataclass(frozen=True)
class Throttle:
    accepted: bool
    reason: str | None
    retry_after_seconds: float | None
    status: ThrottleStatus


@dataclass(slots=True)
class _Bucket:
    level: float
    stamp: float


class CostBudget:
    """Cost points per principal: a token bucket of ``capacity`` refilled at ``restore_rate``
    points per second. At most ``max_principals`` buckets are kept (least recently used go;
    a principal dropped comes back full). ``capacity <= 0`` disables the budget."""

    _SLACK = 1e-6  # points: float noise is not a reason to refuse

    def __init__(
        self,
        capacity: int,
        restore_rate: float,
        max_query_cost: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_principals: int = 100_000,
    ) -> None:
        self.capacity = capacity
        self.restore_rate = restore_rate
        self.max_query_cost = max_query_cost
        self._clock = clock
        self._max_principals = max(1, max_principals)
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, principal: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(principal)
        if bucket is None:
            bucket = self._buckets[principal] = _Bucket(float(self.capacity), now)
            while len(self._buckets) > self._max_principals:
                self._buckets.popitem(last=False)
            return bucket
        self._buckets.move_to_end(principal)
        elapsed = max(0.0, now - bucket.stamp)
        bucket.level = min(float(self.capacity), bucket.level + elapsed * self.restore_rate)
        bucket.stamp = now
        return bucket

    def _status(self, bucket: _Bucket | None) -> ThrottleStatus:
        level = bucket.level if bucket is not None else max(self.capacity, 0)
        return ThrottleStatus(max(self.capacity, 0), math.floor(level), self.restore_rate)

    def check(self, principal: str, requested: int) -> Throttle:
        """Reserve ``requested`` points, or refuse: MAX_COST_EXCEEDED when no wait helps
        (above ``max_query_cost`` or ``capacity``), THROTTLED with the seconds to wait."""
        if not self.enabled:
            return Throttle(True, None, None, self._status(None))
        requested = max(0, requested)
        bucket = self._bucket(principal)
        if requested > min(self.max_query_cost, self.capacity):
            return Throttle(False, "MAX_COST_EXCEEDED", None, self._status(bucket))
        if requested > bucket.level + self._SLACK:
            retry: float | None = None
            if self.restore_rate > 0:
                seconds = (requested - bucket.level) / self.restore_rate
                retry = max(0.1, math.ceil(seconds * 10 - 1e-9) / 10)
            return Throttle(False, "THROTTLED", retry, self._status(bucket))
        bucket.level = max(bucket.level - requested, 0.0)
        return Throttle(True, None, None, self._status(bucket))

    def settle(self, principal: str, reserved: int, actual: int) -> ThrottleStatus:
        """Give back ``reserved - actual`` (take more when the actual cost is larger)."""
        if not self.enabled:
            return self._status(None)
        bucket = self._bucket(principal)
        level = bucket.level + reserved - actual
        bucket.level = min(float(self.capacity), max(-float(self.capacity), level))
        return self._status(bucket)
