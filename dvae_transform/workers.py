"""Errors of DataLoader worker processes, reported by what they mean.

An exception raised in a worker reaches the main process wrapped in the worker's traceback. A worker
that dies (killed, out of memory) is noticed in one of several ways, whichever comes first: torch's
signal handler or its liveness check (a ``RuntimeError`` "DataLoader worker (pid ...) ..." raised at
whatever line the main process is running), or a failed hand-over of a batch the worker had queued
(a ``ConnectionResetError``, ``EOFError``, ``BrokenPipeError``... raised by ``multiprocessing`` while
the main process receives it). :func:`worker_errors` turns all of them into plain errors: the original
exception with its own message, or one ``RuntimeError`` naming the likely cause of a death.
"""

from __future__ import annotations

import ast
import contextlib
import multiprocessing
import traceback
from collections.abc import Iterator
from pathlib import Path

import torch.utils.data

_RECEIVING = (Path(multiprocessing.__file__).parent, Path(torch.multiprocessing.__file__).parent)
_LOADER = Path(torch.utils.data.__file__).parent


def _within(path: str, folder: Path) -> bool:
    return Path(path).is_relative_to(folder)


def _lost_hand_over(error: Exception) -> bool:
    """Whether ``error`` was raised by ``multiprocessing`` while a DataLoader received a worker's batch."""
    if not isinstance(error, (OSError, EOFError, RuntimeError)):
        return False
    files = [frame.f_code.co_filename for frame, _ in traceback.walk_tb(error.__traceback__)]
    received = any(_within(path, folder) for path in files for folder in _RECEIVING)
    return received and any(_within(path, _LOADER) for path in files)


def _died(cause: str) -> RuntimeError:
    return RuntimeError(
        f"a DataLoader worker process died while reading the dataset ({cause}); a worker killed by the "
        "system has often run out of memory: use fewer workers (num_workers=)"
    )


def _plain(error: Exception) -> Exception | None:
    message = str(error)
    if isinstance(error, RuntimeError) and "DataLoader worker (pid" in message:
        return _died(message.strip())
    if _lost_hand_over(error):
        return _died(f"a batch it handed over could not be received: {type(error).__name__}: {message}".rstrip(": "))
    if message.startswith("Caught ") and "Original Traceback" in message:
        try:
            return type(error)(_original_message(message, type(error).__name__))
        except TypeError:  # an exception class that needs other arguments: keep torch's report
            return None
    return None


def _original_message(report: str, name: str) -> object:
    """The message of the worker's exception ``name`` in torch's report of it: every line after ``Name: `` (a message
    may span lines), a ``KeyError``'s key as itself rather than its printed form."""
    lines = report.rstrip().splitlines()
    starts = [index for index, line in enumerate(lines) if line.partition(": ")[0].split(".")[-1] == name]
    if not starts:
        return lines[-1]
    text = "\n".join([lines[starts[-1]].partition(": ")[2], *lines[starts[-1] + 1 :]])
    if name == "KeyError":
        with contextlib.suppress(ValueError, SyntaxError):
            return ast.literal_eval(text)
    return text


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
