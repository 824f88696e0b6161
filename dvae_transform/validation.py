"""Checks of scalar settings and of stored configs, shared by every entry point.

A wrong type raises :class:`InputTypeError` (a ``TypeError``), a wrong value ``ValueError``; both name
the setting and the value, so the transform, the trainer, the cache, the attacks and the command line
word their complaints alike. A stored config (a ``config.json``, a recipe) is a frozen dataclass whose
``__post_init__`` checks its values with these helpers; :func:`from_mapping` builds it from JSON, and
:func:`read_config` from a JSON file (the one place every stored config is read through).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import operator
import os
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class InputTypeError(TypeError):
    """A value given by the user (an argument, a file, a config entry) has the wrong type.

    Raised instead of a plain ``TypeError`` so that callers such as the command line can report
    bad input and still let programming errors surface.
    """


def _type_name(kind: type) -> str:
    if kind is type(None):
        return "None"
    name = kind.__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def check_type(value: T, name: str, *kinds: type) -> T:
    """``value`` if it is an instance of one of ``kinds`` (a bool counts as an int only if ``bool`` is listed)."""
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(_type_name(kind) for kind in kinds)
        raise InputTypeError(f"{name} must be {names}, got {type(value).__name__} ({value!r})")
    return value


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """An int (not a bool) in ``[low, high]`` (either bound optional)."""
    check_type(value, name, int)
    if (low is not None and value < low) or (high is not None and value > high):
        if high is not None:
            wanted = f"an int in [{low}, {high}]"
        else:
            wanted = "positive" if low == 1 else f">= {low}"
        raise ValueError(f"{name} must be {wanted}, got {value}")
    return value


def check_number(
    value: Any,
    name: str,
    *,
    positive: bool = False,
    low: float | None = None,
    high: float | None = None,
    kind: str = "a number",
) -> float:
    """A finite int or float (not a bool), positive and/or in ``[low, high]``; returned as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputTypeError(f"{name} must be {kind}, got {type(value).__name__} ({value!r})")
    below = (positive and not value > 0) or (low is not None and not value >= low)
    if not math.isfinite(value) or below or (high is not None and not value <= high):
        if low is not None and high is not None:
            wanted = f"{kind} in [{low}, {high}]"
        elif positive:
            wanted = f"a positive finite number{'' if high is None else f' <= {high}'}"
        else:
            wanted = f"a finite {kind.split(' ', 1)[-1]}"
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return float(value)


def item_index(index: Any, length: int) -> int:
    """``index`` (an int or int-like, e.g. a numpy or 0-d tensor int; negative counts from the end) as a position
    in ``[0, length)``; the one place every item lookup normalises its index."""
    if isinstance(index, bool):
        raise InputTypeError(f"an item index must be an int, got bool ({index!r})")
    try:
        position = operator.index(index)
    except TypeError:
        raise InputTypeError(f"an item index must be an int, got {type(index).__name__} ({index!r})") from None
    if not -length <= position < length:
        raise IndexError(f"item index {position} is out of range for {length} items (valid: {-length} to {length - 1})")
    return position % length


def check_choice(value: T, name: str, choices: Collection[T]) -> T:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        options = [repr(choice) for choice in sorted(choices, key=str)]
        listed = options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"
        raise ValueError(f"{name} must be {listed}, got {value!r}")
    return value


def positive_int(text: str) -> int:
    """An ``argparse`` type: a positive integer."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


@contextlib.contextmanager
def reported_as(source: str) -> Iterator[None]:
    """Prefix the message of any check failing in the block with ``source``."""
    try:
        yield
    except (InputTypeError, ValueError) as error:
        raise type(error)(f"{source}: {error}") from None


def from_mapping(cls: type[T], mapping: Any, source: str) -> T:
    """The dataclass ``cls`` built from a JSON object, every failure naming ``source``.

    The mapping must hold every field without a default and no other key; the values are checked
    by ``cls.__post_init__``.
    """
    if not isinstance(mapping, Mapping):
        raise InputTypeError(f"{source}: expected a JSON object, got {type(mapping).__name__}")
    fields = dataclasses.fields(cls)
    known = [field.name for field in fields]
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    unknown, missing = sorted(set(mapping) - set(known)), sorted(set(required) - set(mapping))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; expected {known}")
    if missing:
        raise ValueError(f"{source}: missing key(s) {missing}")
    with reported_as(source):
        return cls(**mapping)


def read_config(cls: type[T], path: str | os.PathLike, source: str | None = None, *, missing: str = "") -> T:
    """The JSON file ``path`` as the config dataclass ``cls``, checked by :func:`from_mapping`.

    Every failure names ``source`` (default: ``path``): a missing file (``FileNotFoundError``, followed by
    ``missing`` when given), a file that is not JSON (``ValueError``), JSON of another type than an object
    (:class:`InputTypeError`), and unknown, missing or wrong fields.
    """
    source = os.fspath(path) if source is None else source
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{source} not found{f': {missing}' if missing else ''}")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{source} is not valid JSON: {error}") from None
    return from_mapping(cls, content, source)


def check_device(device: Any) -> Any:
    """``device`` (a string or a ``torch.device``) as a ``torch.device``, or a ``ValueError`` naming it."""
    import torch  # the one check here that needs torch

    try:
        return torch.device(check_type(device, "device", str, torch.device))
    except RuntimeError as error:  # torch's "Expected one of cpu, cuda, ... device type"
        raise ValueError(f"device must name a torch device such as 'cpu' or 'cuda:0', got {device!r}") from error
