"""app.hooks runs schema-extension hooks as Strawberry does: the same calls in the same
order, the same exceptions seen by the same hooks, the same ones suppressed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strawberry.extensions import SchemaExtension
from strawberry.extensions.context import OperationContextManager

from app.hooks import LeanSchema, Stage, hook_factory
from app.main import make_schema

KINDS = ("none", "generator", "async generator", "coroutine", "function")


class Boom(Exception):
    pass


def extension(kind: str, index: int, log: list[str], suppress: bool) -> SchemaExtension:
    """An extension whose ``on_operation`` is of this kind and writes what it sees to
    ``log``; a generator hook that ``suppress``es swallows the exception it is thrown."""

    def seen(what: str) -> None:
        log.append(f"{index}:{what}")

    attrs: dict[str, Any] = {}
    if kind == "generator":

        def on_operation(self: SchemaExtension) -> Iterator[None]:
            seen("enter")
            try:
                yield
            except Boom:
                seen("thrown")
                if not suppress:
                    raise
            seen("exit")

        attrs["on_operation"] = on_operation
    elif kind == "async generator":

        async def on_operation_async(self: SchemaExtension) -> AsyncIterator[None]:
            seen("enter")
            try:
                yield
            except Boom:
                seen("thrown")
                if not suppress:
                    raise
            seen("exit")

        attrs["on_operation"] = on_operation_async
    elif kind == "coroutine":

        async def on_operation_coroutine(self: SchemaExtension) -> None:
            seen("called")

        attrs["on_operation"] = on_operation_coroutine
    elif kind == "function":

        def on_operation_function(self: SchemaExtension) -> None:
            seen("called")

        attrs["on_operation"] = on_operation_function
    cls = type(f"Ext{index}{kind.title().replace(' ', '')}", (SchemaExtension,), attrs)
    instance: SchemaExtension = cls()
    return instance


async def run(manager_of: Any, spec: list[tuple[str, bool]], body_raises: bool) -> list[str]:
    log: list[str] = []
    extensions = [extension(kind, i, log, suppress) for i, (kind, suppress) in enumerate(spec)]
    try:
        async with manager_of(extensions):
            log.append("body")
            if body_raises:
                raise Boom()
        log.append("completed")
    except Boom:
        log.append("raised")
    return log


@settings(max_examples=150, deadline=None)
@given(
    spec=st.lists(st.tuples(st.sampled_from(KINDS), st.booleans()), max_size=5),
    body_raises=st.booleans(),
)
async def test_stage_runs_hooks_as_strawberry_does(
    spec: list[tuple[str, bool]], body_raises: bool
) -> None:
    theirs = await run(OperationContextManager, spec, body_raises)
    ours = await run(lambda exts: Stage(exts, "on_operation"), spec, body_raises)
    assert ours == theirs


def test_stage_runs_sync_hooks_as_strawberry_does() -> None:
    spec = [("generator", False), ("function", False), ("none", False), ("generator", True)]
    for body_raises in (False, True):
        logs = []
        for manager_of in (OperationContextManager, lambda exts: Stage(exts, "on_operation")):
            log: list[str] = []
            exts = [extension(kind, i, log, suppress) for i, (kind, suppress) in enumerate(spec)]
            try:
                with manager_of(exts):
                    log.append("body")
                    if body_raises:
                        raise Boom()
            except Boom:
                log.append("raised")
            logs.append(log)
        assert logs[0] == logs[1]
    with (
        pytest.raises(RuntimeError, match="synchronously"),
        Stage([extension("async generator", 0, [], False)], "on_operation"),
    ):
        pass


async def test_a_failing_hook_entry_leaves_the_earlier_hooks_exited() -> None:
    log: list[str] = []

    class Failing(SchemaExtension):
        def on_operation(self) -> Iterator[None]:
            raise Boom()
            yield  # pragma: no cover

    first = extension("generator", 0, log, suppress=False)
    with pytest.raises(Boom):
        async with Stage([first, Failing()], "on_operation"):
            pass  # pragma: no cover
    assert log == ["0:enter", "0:thrown"]


def test_hooks_are_classified_once_per_class() -> None:
    ext = extension("generator", 0, [], False)
    assert hook_factory(type(ext), "on_operation") is hook_factory(type(ext), "on_operation")
    assert hook_factory(type(ext), "on_parse") is None


def test_the_app_schema_runs_its_hooks_this_way() -> None:
    assert isinstance(make_schema(), LeanSchema)
