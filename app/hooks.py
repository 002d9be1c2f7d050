"""Schema-extension hooks without Strawberry's per-request discovery.

For every request and every lifecycle stage (operation, parse, validate, execute),
Strawberry's ``ExtensionContextManagerBase`` looks at each extension's class again: is
the hook overridden, is it a generator, an async generator, a coroutine function? It then
wraps it in a fresh ``contextlib.contextmanager`` (``functools.wraps`` copies its metadata
each time) and enters it through an ``ExitStack``. With our six extensions, that set-up
and the exit stacks took about a fifth of a ``{ __typename }`` request's time on the event
loop (py-spy on a live server).

``LeanSchema`` runs the same hooks with the same semantics (enter in order, leave in
reverse, exceptions thrown into generator hooks, one that a hook swallows hidden from the
hooks left after it but still raised from the stage, as Strawberry does), but
decides once per extension class how to call each hook, and skips the ``ExitStack`` for a
stage with one hook. tests/test_hooks.py holds it to Strawberry's behaviour.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any

import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext

_Factory = Callable[[SchemaExtension], Any]  # extension -> a (sync or async) context manager


_FACTORIES: dict[tuple[type, str], tuple[_Factory, bool] | None] = {}


def hook_factory(extension_type: type, name: str) -> tuple[_Factory, bool] | None:
    """How to run hook ``name`` of this extension class: (make its context manager, is it
    async), or None when the class does not override it. Strawberry's rules, decided once
    per class."""
    key = (extension_type, name)
    if key not in _FACTORIES:
        _FACTORIES[key] = _classify(extension_type, name)
    return _FACTORIES[key]


def _classify(extension_type: type, name: str) -> tuple[_Factory, bool] | None:
    hook = getattr(extension_type, name)
    if hook is getattr(SchemaExtension, name):
        return None
    if inspect.isgeneratorfunction(hook):
        return contextlib.contextmanager(hook), False
    if inspect.isasyncgenfunction(hook):
        return contextlib.asynccontextmanager(hook), True
    if inspect.iscoroutinefunction(hook):
        coroutine_hook = hook

        @contextlib.asynccontextmanager
        async def awaited(extension: SchemaExtension) -> AsyncIterator[None]:
            await coroutine_hook(extension)
            yield

        return awaited, True
    if callable(hook):
        plain_hook = hook

        @contextlib.contextmanager
        def called(extension: SchemaExtension) -> Iterator[None]:
            plain_hook(extension)
            yield

        return called, False
    raise ValueError(
        f"Hook {name} on {extension_type.__name__} must be callable, received {hook!r}"
    )


class Stage:
    """One lifecycle stage of one request: the hooks of every extension that has one.

    Unlike Strawberry's, a hook whose entry fails leaves the stage's earlier hooks exited
    (with that exception), not open."""

    __slots__ = ("_entered", "_hooks", "_name")

    def __init__(self, extensions: list[SchemaExtension], name: str) -> None:
        self._name = name
        self._hooks: list[tuple[_Factory, bool, SchemaExtension]] = []
        for extension in extensions:
            found = hook_factory(type(extension), name)
            if found is not None:
                self._hooks.append((found[0], found[1], extension))
        # What __exit__ leaves: nothing, the one hook's context manager, or an exit stack.
        self._entered: Any = None

    async def __aenter__(self) -> None:
        hooks = self._hooks
        if len(hooks) == 1:
            make, is_async, extension = hooks[0]
            cm = make(extension)
            await cm.__aenter__() if is_async else cm.__enter__()
            self._entered = cm
        elif hooks:
            async with contextlib.AsyncExitStack() as stack:
                for make, is_async, extension in hooks:
                    if is_async:
                        await stack.enter_async_context(make(extension))
                    else:
                        stack.enter_context(make(extension))
                self._entered = stack.pop_all()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # As Strawberry's: a hook that swallows the exception hides it from the hooks left
        # after it, but the stage itself never suppresses it.
        entered, self._entered = self._entered, None
        if entered is None:
            return
        if len(self._hooks) == 1 and not self._hooks[0][1]:
            entered.__exit__(exc_type, exc, tb)
        else:
            await entered.__aexit__(exc_type, exc, tb)

    def __enter__(self) -> None:
        for _, is_async, extension in self._hooks:
            if is_async:
                raise RuntimeError(
                    f"SchemaExtension hook {extension}.{self._name} "
                    "failed to complete synchronously."
                )
        with contextlib.ExitStack() as stack:
            for make, _, extension in self._hooks:
                stack.enter_context(make(extension))
            self._entered = stack.pop_all()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entered, self._entered = self._entered, None
        if entered is not None:
            entered.__exit__(exc_type, exc, tb)


class LeanExtensionsRunner(SchemaExtensionsRunner):
    def operation(self) -> Any:
        return Stage(self.extensions, "on_operation")

    def validation(self) -> Any:
        return Stage(self.extensions, "on_validate")

    def parsing(self) -> Any:
        return Stage(self.extensions, "on_parse")

    def executing(self) -> Any:
        return Stage(self.extensions, "on_execute")


class LeanSchema(strawberry.Schema):
    """``strawberry.Schema`` whose extension hooks run through ``Stage``."""

    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        return LeanExtensionsRunner(execution_context=execution_context, extensions=extensions)
