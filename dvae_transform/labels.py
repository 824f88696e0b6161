"""Where a transform finds the label in a sample: torchvision's rule, or the user's ``labels_getter``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

from torchvision.transforms.v2._utils import _find_labels_default_heuristic

LabelsGetter = Callable[[Any], Any]


def default_labels_getter(sample: Any) -> Any:
    """The label of a v2 sample by torchvision's rule (``_find_labels_default_heuristic``).

    A tuple's second item (an int, numpy or tensor label, or a dict searched as below); a dict's
    ``labels`` key, else its first key containing ``label`` (case-insensitive). A sample without one
    is a ``ValueError``: pass ``labels_getter=`` a callable that finds it, or ``None`` for the label-free path.
    """
    label = None
    pair = isinstance(sample, (tuple, list)) and len(sample) > 1
    if pair and not isinstance(sample[1], Mapping):
        label = sample[1]  # to_labels refuses one that is not an integer label
    elif pair or isinstance(sample, Mapping):
        with suppress(ValueError):
            label = _find_labels_default_heuristic(_named_items(sample[1] if pair else sample))
    if label is None:
        raise ValueError(
            "DVAEPurify found no label in its input; pass (image, label) or a dict with a 'label' key, "
            "labels_getter=<callable> to say where it is, or labels_getter=None for the label-free path"
        )
    return label


def _named_items(sample: Mapping) -> dict[str, Any]:
    """The entries of ``sample`` with text keys, the only ones torchvision's rule can search by name."""
    return {key: value for key, value in sample.items() if isinstance(key, str)}


def check_labels_getter(labels_getter: str | LabelsGetter | None) -> str | LabelsGetter | None:
    """``labels_getter`` if it is ``"default"``, a callable or None."""
    if labels_getter == "default" or labels_getter is None or callable(labels_getter):
        return labels_getter
    raise ValueError(f"labels_getter must be 'default', a callable or None, got {labels_getter!r}")
