"""A shorter path through graphql-core's executor for plain fields.

Most fields of a response are read straight off an object: leaves such as ``sku``,
``quantity``, ``amount``, ``status`` (about 2,150 of the 3,155 fields of a page of 50
orders) and small objects such as an order's ``total`` (a ``Money``). For each, graphql-core
fetches the field's definition, builds a ``GraphQLResolveInfo`` (a 15-field tuple), calls
Strawberry's resolver for a basic field (three calls that end in ``getattr``), checks the
result for being awaitable twice and goes through ``complete_value`` (non-null, null, list,
leaf, abstract, object). ``PlainFieldPath`` does only what that path ends in: ``getattr``,
then the type's ``coerce_output_value`` for a leaf, the object's selection, or ``[]`` for
an empty list (a mutation's ``userErrors`` when it succeeds). The page,
in-process, went from 52.5 to 70.4 a second (19.0 to 14.2 ms).

It does so only when nothing could make the answer differ:

- the field is a Strawberry *basic* field (no resolver, permission classes, field
  extensions or exception handlers: Strawberry itself only calls
  ``getattr(source, python_name)`` for it), with no arguments, of a scalar or enum type, or
  of an object type without an ``is_type_of`` check or with the one Strawberry adds to
  types that implement an interface (such as every ``Node``), which looks at the value
  only, or a list;
- no field middleware runs (no schema extension has a ``resolve`` hook);
- the value is null where the type allows it; for a leaf, a plain value (``str``, ``int``,
  ``float``, ``bool``, ``Decimal``, ``datetime``, ``date`` or an enum member) that coerces
  to a value; for an object, anything but an exception or an awaitable that passes the
  type's check if it has one, and an error in its selection is the field's, handled as
  ``execute_field`` handles it; for a list, an empty ``list``.

Anything else, a value that fails a check or raises included, takes graphql-core's path
from the start, which reports errors exactly as it always does (``tests/test_execution.py``
compares the two on generated objects and selections).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    Undefined,
)
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter

#: How to answer one plain field: the attribute to read, whether it is non-null, and either
#: the output coercion of a leaf or the object type whose selection completes the value, or
#: neither for a list (with the field's type, for errors).
PlainSpec = tuple[
    str, bool, Callable[[Any], Any] | None, GraphQLObjectType | None, GraphQLOutputType
]

#: Where a type keeps its specs (computed on first use; the type lives as long).
_SPECS = "_ordergraph_plain_specs"


def plain_spec(field: GraphQLField) -> PlainSpec | None:
    """How to answer ``field`` without graphql-core's general path, or None when it needs
    that path: it is not a Strawberry basic field without arguments whose type is a leaf,
    or an object type without an ``is_type_of`` check or with Strawberry's."""
    if field.args or not getattr(field.resolve, "_is_default", False):
        return None
    definition = (field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if definition is None or definition.base_resolver is not None:
        return None
    if definition.default_resolver is not getattr:
        return None
    non_null = isinstance(field.type, GraphQLNonNull)
    type_ = field.type.of_type if isinstance(field.type, GraphQLNonNull) else field.type
    if isinstance(type_, GraphQLScalarType | GraphQLEnumType):
        return (definition.python_name, non_null, type_.coerce_output_value, None, field.type)
    if isinstance(type_, GraphQLList):
        # Answered here only when empty (a mutation's ``userErrors`` when it succeeds).
        return (definition.python_name, non_null, None, None, field.type)
    if isinstance(type_, GraphQLObjectType) and (
        type_.is_type_of is None or strawberrys_check(type_.is_type_of)
    ):
        return (definition.python_name, non_null, None, type_, field.type)
    return None


def strawberrys_check(is_type_of: Any) -> bool:
    """Whether ``is_type_of`` is the one Strawberry gives a type that implements an
    interface: it looks at the value only (its type, or the type it was cast to), not at the
    resolve info, so it can be called without one. A type's own ``is_type_of`` is not."""
    module = getattr(is_type_of, "__module__", None)
    name = getattr(is_type_of, "__qualname__", "")
    return module == GraphQLCoreConverter.__module__ and name.endswith(
        "._get_is_type_of.<locals>.is_type_of"
    )


def plain_specs(parent_type: GraphQLObjectType) -> dict[str, PlainSpec]:
    """The fields of ``parent_type`` that can be answered directly, by field name."""
    try:
        return parent_type.__dict__[_SPECS]  # type: ignore[no-any-return]
    except KeyError:
        specs = {name: spec for name, f in parent_type.fields.items() if (spec := plain_spec(f))}
        setattr(parent_type, _SPECS, specs)
        return specs


#: Values that are certainly neither awaitable nor an exception (enum members too).
_PLAIN = frozenset({str, int, float, bool, Decimal, datetime, date})
#: Stands for "graphql-core's path decides".
_GENERAL = object()


def _has_middleware(executor: Any) -> bool:
    """Whether field middleware runs: Strawberry passes a manager on every request, with
    the schema extensions that have a ``resolve`` hook (none, unless one is added)."""
    manager = executor.middleware_manager
    return manager is not None and bool(manager.middlewares)


def _passes(object_type: Any, value: Any) -> bool:
    """Whether ``value`` passes ``object_type``'s check, if it has one (``strawberrys_check``:
    no resolve info needed); a value that fails, or a check that raises, takes graphql-core's
    path, which reports it."""
    check = object_type.is_type_of
    if check is None:
        return True
    try:
        return check(value, None) is True
    except Exception:
        return False


class PlainFieldPath(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's executor (Strawberry's), with plain fields answered directly."""

    __slots__ = ()

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: Any,
        path: Any,
        position_context: Any,
    ) -> Any:
        node = field_details_list[0].node
        # (plain_specs, without a call for every field once the type has its specs)
        specs = parent_type.__dict__.get(_SPECS) or plain_specs(parent_type)
        spec = specs.get(node.name.value)
        if spec is not None and not node.arguments and not _has_middleware(self):
            name, non_null, coerce, object_type, return_type = spec
            try:
                value = getattr(source, name)
            except Exception:  # graphql-core's path below reports it, as always
                value = _GENERAL
            if value is None:
                if not non_null:
                    return None
            elif coerce is not None:
                if type(value) in _PLAIN or isinstance(value, Enum):
                    try:
                        coerced = coerce(value)
                    except Exception:  # as above
                        coerced = None
                    if coerced is not None and coerced is not Undefined:
                        return coerced
            elif object_type is None:  # a list
                if type(value) is list and not value:
                    return []
            elif (
                value is not _GENERAL
                and not isinstance(value, Exception)
                and not self.is_awaitable(value)
                and _passes(object_type, value)
            ):
                assert object_type is not None
                return self._complete_object(
                    field_details_list, path, position_context, value, object_type, return_type
                )
        return super().execute_field(
            parent_type, source, field_details_list, path, position_context
        )

    def _complete_object(
        self,
        field_details_list: Any,
        path: Any,
        position_context: Any,
        value: Any,
        object_type: GraphQLObjectType,
        return_type: GraphQLOutputType,
    ) -> Any:
        """What ``execute_field`` does with a value of an object type that it passes the
        check of (``_passes``): ``complete_value`` comes down to executing its selection,
        and an error there is the field's, as ``execute_field`` handles it."""
        try:
            completed = self.collect_and_execute_subfields(
                object_type, field_details_list, path, value, position_context
            )
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None
        if self.is_awaitable(completed):
            return self._await_completed(completed, return_type, field_details_list, path)
        return completed

    async def _await_completed(
        self, completed: Any, return_type: Any, field_details_list: Any, path: Any
    ) -> Any:
        try:
            return await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None
