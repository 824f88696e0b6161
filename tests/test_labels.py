"""Where a sample's label is found (``labels.py``): torchvision's rule, and what ``labels_getter`` accepts."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from dvae_transform.labels import check_labels_getter, default_labels_getter

IMAGE = torch.zeros(3, 4, 4)
NO_LABEL = r"found no label in its input; .*labels_getter=<callable>.*labels_getter=None for the label-free path"


@pytest.mark.parametrize("label", [3, np.int64(3), torch.tensor(3)])
def test_a_pair_s_second_item_is_the_label(label) -> None:
    assert default_labels_getter((IMAGE, label)) is label
    assert default_labels_getter([IMAGE, label, "extra"]) is label


def test_a_dict_s_label_is_under_labels_else_the_first_key_holding_label() -> None:
    assert default_labels_getter({"image": IMAGE, "class_label": 1, "Labels": 2}) == 2
    assert default_labels_getter({"image": IMAGE, "fine_LABEL": 1, "coarse_label": 0}) == 1
    assert default_labels_getter((IMAGE, {"boxes": None, "label": 5})) == 5


@pytest.mark.parametrize("sample", [IMAGE, (IMAGE,), {"image": IMAGE, "target": 3}, (IMAGE, {"boxes": None}),
                                    {"image": IMAGE, "label": None}])
def test_a_sample_without_a_label_names_the_ways_out(sample) -> None:
    with pytest.raises(ValueError, match=NO_LABEL):
        default_labels_getter(sample)


def test_a_dict_with_other_keys_than_strings_has_no_label() -> None:
    with pytest.raises(ValueError, match=NO_LABEL):
        default_labels_getter({0: IMAGE, 1: 3})


def test_labels_getter_is_default_a_callable_or_none() -> None:
    def getter(sample):
        return sample["target"]

    for accepted in ("default", None, getter):
        assert check_labels_getter(accepted) is accepted
    for refused in ("label", 1, ["label"]):
        message = f"labels_getter must be 'default', a callable or None, got {refused!r}"
        with pytest.raises(ValueError, match=re.escape(message)):
            check_labels_getter(refused)
