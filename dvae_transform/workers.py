"""Errors of DataLoader worker processes, reported by what they mean.

An exception raised in a worker reaches the main process wrapped in the worker's traceback; a worker
that dies (killed, out of memory) is reported by a signal handler at whatever line the main process
is running. :func:`worker_errors` turns both into plain errors: the original exception with its own
message, or a ``RuntimeError`` naming the likely cause.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def _plain(error: Exception) -> Exception | None:
    message = str(error)
    if isinstance(error, RuntimeError) and "DataLoader worker (pid" in message:
        return RuntimeError(
            f"a DataLoader worker process died while reading the dataset ({message.strip()}); a worker killed "
            "by the system has often run out of memory: use fewer workers (num_workers=)"
        )
    if message.startswith("Caught ") and "Original Traceback" in message:
        last = message.rstrip().splitlines()[-1]
        name, _, text = last.partition(": ")
        original = text if name.split(".")[-1] == type(error).__name__ else last
        try:
            return type(error)(original)
        except TypeError:  # an exception class that needs other arguments: keep torch's report
            return None
    return None


@contextlib.contextmanager
def worker_errors() -> Iterator[None]:
    """Within the block, errors of DataLoader workers are raised as plain errors (see the module docstring)."""
    try:
        yield
    except Exception as error:
        plain = _plain(error)
        if plain is None:
            raise
        raise plain from error
