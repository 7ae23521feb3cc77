"""A registry of small classes by name (the prior families, the inference algorithms): a class decorator registers an
instance under the class's ``name``, and a lookup by name answers it or fails with one clear error."""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(dict, Generic[T]):
    """``name -> instance``, in registration order. ``what`` names its entries in the error for an unknown one;
    ``check(cls)`` may refuse a class at registration."""

    def __init__(self, what: str, check: Callable[[type], None] | None = None):
        super().__init__()
        self.what, self.check = what, check

    def register(self, cls: type[T]) -> type[T]:
        """Register an instance of ``cls`` under ``cls.name`` (a class decorator)."""
        if cls.name in self:
            raise ValueError(f"a {self.what} called {cls.name!r} is registered already")
        if self.check is not None:
            self.check(cls)
        self[cls.name] = cls()
        return cls

    def lookup(self, name: str) -> T:
        """The entry called ``name``; one clear error for an unknown one."""
        if name not in self:
            raise ValueError(f"unknown {self.what} {name!r}; valid: {', '.join(self)}")
        return self[name]
