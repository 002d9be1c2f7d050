"""A small LRU keyed by object identity, for objects that hash slowly or not at all."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class IdentityCache:
    """Keys are built from ``id()`` of objects (with anything hashable beside them). Each
    entry keeps those objects alive (``keep``), so no id in a live key can be reused by
    another object; the least recently used entries go beyond ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, tuple[Any, Any]] = OrderedDict()

    def get(self, key: Hashable) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: Hashable, keep: Any, value: Any) -> None:
        self._entries[key] = (keep, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
