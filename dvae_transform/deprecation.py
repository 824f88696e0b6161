"""Old public names kept working for one release, each use warned with a ``FutureWarning`` naming the new one."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from .log import warn

Function = TypeVar("Function", bound=Callable[..., Any])


def warn_renamed(owner: str, old: str, new: str) -> None:
    """Warn that ``owner``'s ``old`` is now called ``new``."""
    warn(f"{owner}: {old!r} is renamed {new!r}; the old name goes in the next release", FutureWarning)


def renamed_keywords(**renames: str) -> Callable[[Function], Function]:
    """A decorator: each keyword ``old=new`` of ``renames`` is still accepted as ``old``, with a warning.

    Giving both names is a ``TypeError``.
    """

    def wrap(function: Function) -> Function:
        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{function.__qualname__}() got both {old!r} and its new name {new!r}")
                    warn_renamed(f"{function.__qualname__}()", old, new)
                    kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return call  # type: ignore[return-value]

    return wrap


def renamed_attribute(old: str, new: str) -> property:
    """A property ``old`` that reads and writes attribute ``new``, with a warning."""

    def get(self: Any) -> Any:
        warn_renamed(type(self).__name__, old, new)
        return getattr(self, new)

    def set_(self: Any, value: Any) -> None:
        warn_renamed(type(self).__name__, old, new)
        setattr(self, new, value)

    return property(get, set_, doc=f"Deprecated: use ``{new}``.")
