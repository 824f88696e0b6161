"""Errors of DataLoader worker processes (``workers.py``), raised by real workers as plain errors."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from dvae_transform.workers import worker_errors

DIED = r"a DataLoader worker process died while reading the dataset \(.*\); .* use fewer workers \(num_workers=\)"


class NeedsTwo(Exception):
    """An exception class that cannot be made from a message alone."""

    def __init__(self, first: int, second: int) -> None:
        super().__init__(f"{first} and {second}")


class _FailsAt(Dataset):
    """Items 0 to 3; reading item 2 raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == 2:
            raise self.error
        return torch.tensor(index)


def _read_in_a_worker(dataset: Dataset) -> list[int]:
    iterator, items = iter(DataLoader(dataset, num_workers=1)), []
    try:
        with worker_errors():
            for item in iterator:
                items.append(int(item))
    finally:
        iterator._shutdown_workers()  # now, not when the error's traceback (which holds the iterator) is collected
    return items


def test_a_worker_s_error_is_raised_as_itself_with_its_own_message() -> None:
    with pytest.raises(ValueError) as raised:
        _read_in_a_worker(_FailsAt(ValueError("item 2: bad: unreadable")))
    assert str(raised.value) == "item 2: bad: unreadable"
    assert "Original Traceback" in str(raised.value.__cause__)  # torch's report stays attached
    with pytest.raises(FileNotFoundError, match=r"No such file: 'x\.png'"):
        _read_in_a_worker(_FailsAt(FileNotFoundError(2, "No such file", "x.png")))


def test_an_error_that_needs_other_arguments_is_named_in_a_runtime_error() -> None:
    with pytest.raises(RuntimeError, match=r"^(\w+\.)*NeedsTwo: 1 and 2$"):
        _read_in_a_worker(_FailsAt(NeedsTwo(1, 2)))


def test_torch_s_report_of_a_dead_worker_becomes_the_plain_death() -> None:
    """The form of torch's signal handler and liveness check (a real death: ``test_data_loader.py``)."""
    with pytest.raises(RuntimeError, match=DIED) as raised, worker_errors():
        raise RuntimeError("DataLoader worker (pid 12345) is killed by signal: Killed. ")
    assert "(DataLoader worker (pid 12345) is killed by signal: Killed.);" in str(raised.value)


@pytest.mark.parametrize("error", [ValueError("plain"), ConnectionResetError(104, "Connection reset by peer"),
                                   RuntimeError("Caught nothing"), EOFError()])
def test_errors_not_from_workers_pass_unchanged(error) -> None:
    with pytest.raises(type(error)) as raised, worker_errors():
        raise error
    assert raised.value is error


def test_a_worker_s_multi_line_message_is_kept_whole() -> None:
    with pytest.raises(ValueError) as raised:
        _read_in_a_worker(_FailsAt(ValueError("image 2 is broken:\ntruncated file")))
    assert str(raised.value) == "image 2 is broken:\ntruncated file"


def test_a_worker_s_key_error_keeps_its_key() -> None:
    with pytest.raises(KeyError) as raised:
        _read_in_a_worker(_FailsAt(KeyError("label")))
    assert raised.value.args == ("label",)
