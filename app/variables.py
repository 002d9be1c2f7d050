"""Operation variables coerced by functions compiled once per input type.

graphql-core coerces every request's variables by walking the value and its type together:
for each value it asks what kind of type it has (non-null, list, input object, leaf), one
function call each, and before that it walks the value once more to refuse nesting deeper
than ``MAX_NESTING_DEPTH``. For ``placeOrder``'s input (three lines, an address) that was
about 33 µs a request, in a request of about 1.2 ms in-process.

``get_variable_values`` here answers with exactly what graphql-core's would, by two paths:

- the compiled path, when every variable the operation declares is given and its type is
  not recursive (so the type bounds how deep a value is walked, and the nesting check can
  only pass): the type's function coerces the value as ``coerce_input_value`` does (the
  same order of checks, the same defaults, ``out_name``, ``out_type``, oneOf, and each
  leaf's own ``coerce_input_value``), returning ``Undefined`` where that returns it;
- graphql-core's own path for everything else, and for any value the compiled path finds
  invalid, so every error (and its message, path and limit on errors) is graphql-core's.

The functions live on the named types they coerce (``_COERCERS``), built on first use.
``install()`` puts this function where graphql-core's executor looks for it (its module's
``get_variable_values``); tests/test_variables.py compares the two on generated values and
checks that it is installed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, NamedTuple

import graphql.execution.executor as _executor
from graphql import (
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLSchema,
    Undefined,
    VariableDefinitionNode,
    is_leaf_type,
)
from graphql.execution.get_variable_signature import (
    GraphQLVariableSignature,
    get_variable_signature,
)
from graphql.execution.values import (
    VariableValues,
    VariableValuesOrErrors,
    VariableValueSource,
)
from graphql.execution.values import get_variable_values as graphql_get_variable_values
from graphql.language.parser import MAX_NESTING_DEPTH
from graphql.pyutils import is_iterable
from graphql.type import is_required_input_field
from graphql.utilities.coerce_input_value import coerce_default_value

from app.identity_cache import IdentityCache

Coerce = Callable[[Any], Any]

#: Where a named type keeps its coercers, by the wrappers around it (see ``_shape``).
_COERCERS = "_ordergraph_coercers"


class _Recursive(Exception):
    """The type contains itself: its values are only bounded by the nesting check."""


def get_variable_values(
    schema: GraphQLSchema,
    var_def_nodes: Collection[VariableDefinitionNode],
    inputs: dict[str, Any],
    max_errors: int | None = None,
    hide_suggestions: bool = False,
) -> VariableValuesOrErrors:
    """graphql-core's ``get_variable_values``, by the compiled path where it applies."""
    values = _compiled(schema, var_def_nodes, inputs)
    if values is not None:
        return values
    return graphql_get_variable_values(
        schema, var_def_nodes, inputs, max_errors=max_errors, hide_suggestions=hide_suggestions
    )


def install() -> None:
    """Make graphql-core's executor coerce variables with ``get_variable_values``."""
    _executor.get_variable_values = get_variable_values  # type: ignore[attr-defined]


def _compiled(
    schema: GraphQLSchema, var_def_nodes: Collection[VariableDefinitionNode], inputs: Any
) -> VariableValues | None:
    """The variables' values, or None where graphql-core's path must decide (a variable
    left out, so its default or absence applies; a recursive type; an invalid value)."""
    plan = _plans(schema, var_def_nodes)
    if plan is None:
        return None
    sources: dict[str, VariableValueSource] = {}
    coerced: dict[str, Any] = {}
    for signature, coerce in plan:
        value = inputs.get(signature.name, Undefined)
        if value is Undefined:
            return None
        result = coerce(value)
        if result is Undefined:
            return None
        sources[signature.name] = VariableValueSource(signature, value)
        coerced[signature.name] = result
    return VariableValues(sources, coerced)


def _plans(
    schema: GraphQLSchema, var_def_nodes: Collection[VariableDefinitionNode]
) -> list[tuple[GraphQLVariableSignature, Coerce]] | None:
    """Each declared variable's signature and coercer; None when one has neither (not an
    input type, or a type the compiled path leaves to graphql-core). By the identity of the
    definitions: the parser cache hands out the same document for the same text, and the
    signatures (a type read off the AST, about 4 us a variable) are the same every time."""
    key = (id(schema), id(var_def_nodes))
    found: tuple[list[tuple[GraphQLVariableSignature, Coerce]] | None] | None = _PLANS.get(key)
    if found is None:
        found = (_plan(schema, var_def_nodes),)
        _PLANS.put(key, (schema, var_def_nodes), found)
    return found[0]


def _plan(
    schema: GraphQLSchema, var_def_nodes: Collection[VariableDefinitionNode]
) -> list[tuple[GraphQLVariableSignature, Coerce]] | None:
    plan = []
    for node in var_def_nodes:
        signature = get_variable_signature(schema, node)
        if isinstance(signature, GraphQLError):
            return None
        coerce = coercer(signature.type)
        if coerce is None:
            return None
        plan.append((signature, coerce))
    return plan


_PLANS = IdentityCache(1024)


def coercer(type_: GraphQLInputType) -> Coerce | None:
    """The compiled ``coerce_input_value`` for ``type_``; None for a recursive type, or
    one nested deeper than graphql-core lets a value be."""
    named, shape = _shape(type_)
    cache: dict[tuple[bool, ...], Coerce | None] | None = getattr(named, _COERCERS, None)
    if cache is None:
        cache = {}
        setattr(named, _COERCERS, cache)
    try:
        return cache[shape]
    except KeyError:
        pass
    try:
        depth, coerce = _compile(type_, frozenset())
    except _Recursive:
        compiled = None
    else:
        compiled = coerce if depth <= MAX_NESTING_DEPTH else None
    cache[shape] = compiled
    return compiled


def _shape(type_: Any) -> tuple[GraphQLNamedType, tuple[bool, ...]]:
    """The named type inside ``type_`` and its wrappers, outermost first (True: non-null,
    False: list). ``type_from_ast`` builds new wrappers for every request."""
    wrappers: list[bool] = []
    while isinstance(type_, GraphQLNonNull | GraphQLList):
        wrappers.append(isinstance(type_, GraphQLNonNull))
        type_ = type_.of_type
    return type_, tuple(wrappers)


def _compile(type_: Any, inside: frozenset[str]) -> tuple[int, Coerce]:
    """``type_``'s coercer, and how deep graphql-core's nesting check can go in its values
    (lists and input object fields count one level each)."""
    if isinstance(type_, GraphQLNonNull):
        depth, inner = _compile_value(type_.of_type, inside)

        def non_null(value: Any) -> Any:
            if value is None or value is Undefined:
                return Undefined
            return inner(value)

        return depth, non_null
    depth, inner = _compile_value(type_, inside)

    def nullable(value: Any) -> Any:
        if value is None or value is Undefined:
            return None  # the value null
        return inner(value)

    return depth, nullable


def _compile_value(type_: Any, inside: frozenset[str]) -> tuple[int, Coerce]:
    """``_compile`` for a nullable ``type_``, for values that are not null."""
    if isinstance(type_, GraphQLList):
        depth, item = _compile(type_.of_type, inside)
        return depth + 1, _list(item)
    if isinstance(type_, GraphQLInputObjectType):
        if type_.name in inside:
            raise _Recursive(type_.name)
        fields = []
        deepest = 0
        for name, field in type_.fields.items():
            non_null = isinstance(field.type, GraphQLNonNull)
            inner_type = field.type.of_type if non_null else field.type
            depth, inner = _compile_value(inner_type, inside | {type_.name})
            deepest = max(deepest, depth + 1)
            # graphql-core memoizes a field's coerced default on the field: taking it now
            # gives the value it would give on every request.
            required = is_required_input_field(field)
            default = Undefined if required else coerce_default_value(field)
            leaf = is_leaf_type(inner_type)
            fields.append(
                _Field(
                    name,
                    non_null,
                    leaf,
                    inner_type.coerce_input_value if leaf else inner,
                    field.out_name or name,
                    required,
                    default,
                )
            )
        return deepest, _input_object(type_, tuple(fields))
    assert is_leaf_type(type_), type_
    return 0, _leaf(type_)


def _list(item: Coerce) -> Coerce:
    def coerce_list(value: Any) -> Any:
        if not is_iterable(value):
            # A single value stands for a list of one.
            one = item(value)
            return Undefined if one is Undefined else [one]
        out = []
        for element in value:
            coerced = item(element)
            if coerced is Undefined:
                return Undefined
            out.append(coerced)
        return out

    return coerce_list


class _Field(NamedTuple):
    name: str
    non_null: bool
    leaf: bool
    # A leaf: its type's ``coerce_input_value``; else the coercer of the (nullable) type
    # for values that are not null.
    coerce: Coerce
    out_name: str
    required: bool
    default: Any  # Undefined: none


def _input_object(type_: GraphQLInputObjectType, fields: tuple[_Field, ...]) -> Coerce:
    """The coercer of an input object type's values, written out as straight-line code
    once: what ``_compile`` and ``_leaf`` would do for each field, without a call for each
    wrapper and leaf (a placeOrder input had taken about 11 us). It checks what
    ``coerce_input_value`` checks, in its order: a dict, no unknown field, then each field
    (a required one given, null only where allowed, a default where left out), then oneOf."""
    namespace: dict[str, Any] = {
        "U": Undefined,
        "known": type_.fields,
        "out_type": type_.out_type,
    }
    body = [
        "if not isinstance(value, dict):",
        "    return U",
        "defined = 0",
        "for name, field_value in value.items():",
        "    if field_value is U:",
        "        continue",
        "    defined += 1",
        "    if name not in known:",
        "        return U",
        "out = {}",
    ]
    for i, f in enumerate(fields):
        namespace[f"f{i}"] = f.coerce
        out = f"out[{f.out_name!r}]"
        body.append(f"v = value.get({f.name!r}, U)")
        body.append("if v is U:")
        if f.required:
            body.append("    return U")
        elif f.default is not Undefined:
            namespace[f"d{i}"] = f.default
            body.append(f"    {out} = d{i}")
        else:
            body.append("    pass")
        body.append("elif v is None:")
        body.append("    return U" if f.non_null else f"    {out} = None")
        body.append("else:")
        if f.leaf:  # (_leaf: whatever the leaf raises makes the value invalid)
            body += [
                "    try:",
                f"        c = f{i}(v)",
                "    except Exception:",
                "        return U",
            ]
        else:
            body.append(f"    c = f{i}(v)")
        body += ["    if c is U:", "        return U", f"    {out} = c"]
    if type_.is_one_of:
        body += [
            "keys = list(out)",
            "if defined != 1 or len(keys) != 1 or out[keys[0]] is None:",
            "    return U",
        ]
    body.append("return out_type(out)")
    source = "def coerce_object(value):\n" + "".join(f"    {line}\n" for line in body)
    exec(compile(source, f"<app.variables {type_.name}>", "exec"), namespace)
    coerce: Coerce = namespace["coerce_object"]
    return coerce


def _leaf(type_: Any) -> Coerce:
    coerce_input_value = type_.coerce_input_value

    def coerce_leaf(value: Any) -> Any:
        try:
            return coerce_input_value(value)
        except Exception:  # invalid: graphql-core's path reports it
            return Undefined

    return coerce_leaf
