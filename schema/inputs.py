"""Faster conversion of GraphQL input values into Strawberry input classes.

Strawberry converts an input value field by field, resolving every field's annotation again
on every request: for ``placeOrder``'s input (lines, address) that was about a tenth of the
mutation's CPU time. ``@fast_input`` installs a converter (Strawberry's ``from_input`` hook of
the type definition) that works out, once, how to convert each field: values graphql-core
has already coerced (scalars, enums, lists of them) are taken as they are, nested fast inputs
convert themselves, and anything else goes through Strawberry's own conversion
(``InputContext.convert``), so the result is always what Strawberry would build.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import MISSING
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, TypeVar

from strawberry.types.arguments import InputContext
from strawberry.types.base import (
    StrawberryList,
    StrawberryObjectDefinition,
    StrawberryOptional,
    StrawberryType,
)
from strawberry.types.enum import StrawberryEnumDefinition

C = TypeVar("C", bound=type)
_Convert = Callable[[Any, InputContext, str], Any]

# What graphql-core hands over already in its Python form (its scalars' parse_value ran).
_AS_GIVEN = (str, int, float, bool, datetime, date, time, Decimal)


def _same(value: Any, _context: InputContext, _key: str) -> Any:
    return value


def _is_plain(type_: Any) -> bool:
    if isinstance(type_, StrawberryEnumDefinition):
        return True
    if isinstance(type_, type) and issubclass(type_, enum.Enum):
        return True
    # strawberry.ID and other NewTypes of str are plain strings at run time.
    base = getattr(type_, "__supertype__", type_)
    return isinstance(base, type) and base in _AS_GIVEN


def _converter(type_: StrawberryType | type) -> _Convert:
    """How to convert a value of ``type_``, decided once."""
    if isinstance(type_, StrawberryOptional):
        inner = _converter(type_.of_type)
        return lambda v, c, k: None if v is None else inner(v, c, k)
    if _is_plain(type_):
        return _same
    if isinstance(type_, StrawberryList):
        if _is_plain(type_.of_type):
            # A copy: graphql-core shares defaults between requests.
            return lambda v, c, k: list(v)
        item = _converter(type_.of_type)
        return lambda v, c, k: [item(x, c, k) for x in v]
    definition = getattr(type_, "__strawberry_definition__", None)
    if isinstance(definition, StrawberryObjectDefinition) and getattr(
        definition.from_input, "fast_input", False
    ):
        # (Looked up on every call: written out, it takes the place of the first one.)
        return lambda v, c, k: definition.from_input(type_, v, c)  # type: ignore[misc,arg-type]
    return lambda v, c, k: c.convert(v, type_, k)


def fast_input(cls: C) -> C:
    """Class decorator for ``@strawberry.input`` classes (put it above the Strawberry one)."""
    definition: StrawberryObjectDefinition = cls.__strawberry_definition__  # type: ignore[attr-defined]

    written: Any = None

    def from_input(type_: type, value: Mapping[str, Any], context: InputContext) -> Any:
        # Written out on first use, when every annotation the fields name is resolvable,
        # and put in this one's place (whoever kept this one still gets it written out).
        nonlocal written
        if written is not None:
            return written(type_, value, context)
        names = context.config.name_converter
        fields = [
            (
                names.from_field(f),
                f.python_name,
                _converter(f.resolve_type(type_definition=definition)),
                f.default_value is MISSING and f.default_factory is MISSING,
            )
            for f in definition.fields
        ]
        written = _written_out(fields)
        definition.from_input = written
        return written(type_, value, context)

    from_input.fast_input = True  # type: ignore[attr-defined]
    definition.from_input = from_input
    return cls


def _written_out(fields: list[tuple[str, str, _Convert, bool]]) -> Any:
    """``from_input`` for fields of (GraphQL name, Python name, converter, no default),
    as straight-line code: a field given is converted (a plain value taken as it is), one
    without a default is None unless given (as Strawberry does), and one with a default is
    left to it. tests/test_inputs.py compares the result with Strawberry's conversion."""
    namespace: dict[str, Any] = {}
    body = []
    implicit = ", ".join(f"{python!r}: None" for _, python, _, no_default in fields if no_default)
    body.append(f"kwargs = {{{implicit}}}")
    for i, (graphql, python, convert, _) in enumerate(fields):
        if convert is _same:
            value = f"value[{graphql!r}]"
        else:
            namespace[f"c{i}"] = convert
            value = f"c{i}(value[{graphql!r}], context, {graphql!r})"
        body.append(f"if {graphql!r} in value: kwargs[{python!r}] = {value}")
    body.append("return type_(**kwargs)")
    source = "def from_input(type_, value, context):\n" + "".join(f"    {b}\n" for b in body)
    exec(compile(source, "<schema.inputs from_input>", "exec"), namespace)
    function = namespace["from_input"]
    function.fast_input = True
    return function
