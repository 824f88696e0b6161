"""Loading one DVAE stage: checkpoints of older versions, bounded configs, shapes checked before allocating.

``tests/data/legacy-dvae-*`` were written by the code of commit 9a787dc (transposed 3x3 decoder convs, no
``downsamplings`` or ``decoder_layout`` in config.json), together with that code's outputs on two images
(``*.outputs.safetensors``); ``tests/data/make_legacy_checkpoints.py`` regenerates them.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dvae_transform import DVAE
from dvae_transform.validation import InputTypeError

DATA = Path(__file__).parent / "data"
LEGACY = ["legacy-dvae-3x32", "legacy-dvae-1x40"]


@pytest.fixture
def legacy_copy(tmp_path: Path) -> Path:
    """A writable copy of the 3x32 legacy checkpoint."""
    return Path(shutil.copytree(DATA / "legacy-dvae-3x32", tmp_path / "stage"))


def edit_config(folder: Path, **changes: object) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


# ----------------------------------------------------------------------------- checkpoints of older versions


@pytest.mark.parametrize("name", LEGACY)
def test_legacy_checkpoint_computes_what_the_old_code_computed(name: str) -> None:
    model = DVAE.from_pretrained(DATA / name)
    reference = load_file(DATA / f"{name}.outputs.safetensors")

    output = model(reference["images"], reference["labels"])
    for field, value in output._asdict().items():
        torch.testing.assert_close(value, reference[field], atol=1e-5, rtol=0)
    old = json.loads((DATA / name / "config.json").read_text())
    assert model.config == {**old, "downsamplings": 1, "decoder_layout": "conv"}


def test_legacy_40px_checkpoint_keeps_its_single_stride2_stage() -> None:
    """A config without ``downsamplings`` was built with one stage, whatever today's default for its size."""
    model = DVAE.from_pretrained(DATA / "legacy-dvae-1x40")
    assert model.downsamplings == 1 and model.latent_shape[1:] == (20, 20)
    assert DVAE(in_channels=1, image_size=40, width=4, latent_dim=4).downsamplings == 2


def test_a_seed_builds_the_network_the_old_code_built() -> None:
    """The legacy 3x32 file holds the initial parameters that ``torch.manual_seed(0)`` gave under the old code."""
    legacy = DVAE.from_pretrained(DATA / "legacy-dvae-3x32")
    torch.manual_seed(0)
    fresh = DVAE(**json.loads((DATA / "legacy-dvae-3x32" / "config.json").read_text()))
    for name, parameter in fresh.named_parameters():
        assert torch.equal(parameter, legacy.get_parameter(name)), name


def test_a_converted_checkpoint_saves_in_the_new_layout(tmp_path: Path) -> None:
    legacy = DVAE.from_pretrained(DATA / "legacy-dvae-3x32")
    legacy.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["decoder_layout"] == "conv"

    again = DVAE.from_pretrained(tmp_path)
    for name, tensor in legacy.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name


def test_a_file_whose_layout_disagrees_with_its_config_is_refused(tmp_path: Path) -> None:
    DVAE(in_channels=1, image_size=16, num_classes=2, width=8, latent_dim=4).save_pretrained(tmp_path)
    edit_config(tmp_path, decoder_layout="transposed")

    message = r"tensor 'image_decoder.4.weight' has shape \[4, 8, 3, 3\] but the config needs \[8, 4, 3, 3\]"
    with pytest.raises(ValueError, match=message):
        DVAE.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------- configs checked before building


def test_huge_num_classes_is_refused_from_the_config_alone(legacy_copy: Path) -> None:
    edit_config(legacy_copy, num_classes=10**7)
    (legacy_copy / "model.safetensors").unlink()  # nothing but the config may be looked at

    message = r"stage/config.json: .*num_classes must be an int in \[1, 100000\], got 10000000"
    with pytest.raises(ValueError, match=message):
        DVAE.from_pretrained(legacy_copy)


@pytest.mark.parametrize("content", ["[1, 2]", "null", "7"])
def test_a_config_that_is_not_a_json_object_is_refused_naming_the_file(legacy_copy: Path, content: str) -> None:
    (legacy_copy / "config.json").write_text(content)

    with pytest.raises(InputTypeError, match=r"stage/config\.json: expected a JSON object, got "):
        DVAE.from_pretrained(legacy_copy)
    (legacy_copy / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"stage/config\.json not found: the network settings are needed"):
        DVAE.from_pretrained(legacy_copy)


def test_large_config_with_small_weights_fails_without_allocating(legacy_copy: Path) -> None:
    """Bounded, yet 13 GB of parameters: refused on the header's shapes under a 1 GiB address-space allowance."""
    edit_config(legacy_copy, num_classes=100_000, width=64, latent_dim=256)
    script = textwrap.dedent(f"""
        import resource, sys
        import torch
        from dvae_transform import DVAE
        with open("/proc/self/status") as status:
            size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
        resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, resource.RLIM_INFINITY))
        try:
            DVAE.from_pretrained({str(legacy_copy)!r})
        except ValueError as error:
            print(error)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "stage/model.safetensors: tensor 'class_embedding.weight' has shape [3, 4096]" in result.stdout
    assert "needs [100000, 32768]" in result.stdout


def test_unexpected_loading_arguments_are_refused() -> None:
    message = r"takes the network settings from .*config.json; unexpected argument\(s\) \['width'\]"
    with pytest.raises(TypeError, match=message):
        DVAE.from_pretrained(DATA / "legacy-dvae-3x32", width=16)


# ----------------------------------------------------------------------------- damaged files


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _append(data: bytes) -> bytes:
    return data + b"\0" * 64


def _huge_header_length(data: bytes) -> bytes:
    return struct.pack("<Q", 2**60) + data[8:]


def _claim_a_larger_tensor(data: bytes) -> bytes:
    """The header says the class embedding holds 9 rows, not 3: its byte range no longer fits the shape."""
    return data.replace(b'"shape":[3,4096]', b'"shape":[9,4096]', 1)


@pytest.mark.parametrize("damage", [_truncate, _append, _huge_header_length, _claim_a_larger_tensor])
def test_damaged_weights_are_refused_naming_the_file(legacy_copy: Path, damage) -> None:
    weights = legacy_copy / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))

    with pytest.raises(ValueError, match=r"stage/model\.safetensors is not a readable safetensors file"):
        DVAE.from_pretrained(legacy_copy)
