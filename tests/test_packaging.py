"""Packaging: lower-bound requirements, py.typed, ``--version``, and no deprecated torchvision codec."""

from __future__ import annotations

import configparser
import warnings
from pathlib import Path

import pytest
import torch

import dvae_transform
from dvae_transform.cli import main
from dvae_transform.evaluation.baselines import JPEGCompression

SETUP = configparser.ConfigParser()
SETUP.read(Path(__file__).parents[1] / "setup.cfg")


def test_requirements_have_lower_bounds_only():
    requirements = [line for line in SETUP["options"]["install_requires"].splitlines() if line]
    assert requirements and all(">=" in line and "<" not in line and "==" not in line for line in requirements)


def test_the_package_ships_py_typed():
    assert (Path(dvae_transform.__file__).parent / "py.typed").is_file()
    assert "py.typed" in SETUP["options.package_data"]["dvae_transform"]


def test_version_option(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out == f"dvae-purify {dvae_transform.__version__}\n"


def test_jpeg_baseline_uses_no_deprecated_codec():
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        purified = JPEGCompression(quality=10).purify(images)
    assert purified.shape == images.shape and (purified - images).abs().mean() > 0.01
