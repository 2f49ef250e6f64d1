"""One registry class for every string factory of vislang: models, datasets, tasks, fusion strategies.

```python
FUSIONS = Registry("fusion strategy", load="vislang.fusion")   # imported on first look-up
@FUSIONS.register("late-concat")
def late_concat(...): ...
FUSIONS.get("late-concat"); FUSIONS.names("late-*")
```
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from vislang.errors import VislangError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, registered once each.

    Args:
        kind: What an entry is, for error messages ("model", "dataset", "task").
        load: Modules imported before the first look-up, so that their entries register themselves
            (the built-in ones; importing them at look-up time avoids import cycles).
    """

    def __init__(self, kind: str, load: tuple[str, ...] | str = ()):
        self.kind = kind
        self._load = (load,) if isinstance(load, str) else tuple(load)
        self._loaded = False
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator registering its target under ``name`` (default: its ``__name__``)."""

        def deco(obj: T) -> T:
            self.add(name or obj.__name__, obj)  # type: ignore[attr-defined]
            return obj

        return deco

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name``.

        Raises:
            ValueError: ``name`` is registered already (a programming error, not a user's).
        """
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = obj
        return obj

    def remove(self, name: str) -> None:
        """Forget ``name`` (for tests that register a temporary entry)."""
        self._entries.pop(name, None)

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._load:
                importlib.import_module(module)

    def get(self, name: str) -> T:
        """The entry registered as ``name``.

        Raises:
            VislangError: No such entry; the message lists the known names.
        """
        self._ensure_loaded()
        if name not in self._entries:
            raise VislangError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}")
        return self._entries[name]

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a glob pattern, sorted."""
        self._ensure_loaded()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._entries)
