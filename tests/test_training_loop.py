"""The two-stage fit: determinism, resume, warm start, presets and bad input."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_images

from dvae_transform import PRESETS, DVAEPurify, FitConfig
from dvae_transform.config import resolve_config
from dvae_transform.training.loop import DivergedError, build_model
from dvae_transform.training.resume import ResumeState

TINY = {"epochs": 2, "width": 8, "latent_dim": 8, "batch_size": 32, "progress": False}
ONE_EPOCH = {**TINY, "epochs": 1}


def _state(purifier: DVAEPurify) -> dict[str, torch.Tensor]:
    return {**purifier.stage1.state_dict(), **{f"2.{k}": v for k, v in purifier.stage2.state_dict().items()}}


def _assert_same_weights(a: DVAEPurify, b: DVAEPurify) -> None:
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_same_seed_gives_identical_fits_and_other_seed_differs(tiny_data) -> None:
    a = DVAEPurify.fit(tiny_data, seed=3, **TINY)
    b = DVAEPurify.fit(tiny_data, seed=3, **TINY)
    c = DVAEPurify.fit(tiny_data, seed=4, **TINY)
    _assert_same_weights(a, b)
    assert not torch.equal(a.stage1.to_mu.weight, c.stage1.to_mu.weight)


def test_history_records_both_stages(tiny_data) -> None:
    purifier = DVAEPurify.fit(tiny_data, seed=0, **TINY)
    assert [(h["stage"], h["epoch"]) for h in purifier.history] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for record in purifier.history:
        assert record["images_per_s"] > 0 and record["kl"] >= 0 and record["psnr"] > 0


def test_fit_does_not_touch_global_rng(tiny_data) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    DVAEPurify.fit(tiny_data, seed=0, **TINY)
    assert torch.equal(torch.rand(3), expected)


KILLED_FIT = """
import sys, torch
from dvae_transform import DVAEPurify
torch.set_num_threads(1)  # as in this process (conftest): same thread count, bit-identical arithmetic
images = torch.rand(256, 1, 16, 16, generator=torch.Generator().manual_seed(0))
labels = torch.arange(256) % 4
DVAEPurify.fit((images, labels), seed=1, resume_dir=sys.argv[1], epochs=6, width=8, latent_dim=8,
               batch_size=32, progress=False)
"""


def test_killed_fit_resumes_and_matches_uninterrupted_fit(tmp_path) -> None:
    images = torch.rand(256, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    data = (images, torch.arange(256) % 4)
    settings = {**TINY, "epochs": 6}
    checkpoint = tmp_path / "ckpt"
    process = subprocess.Popen([sys.executable, "-c", KILLED_FIT, str(checkpoint)], cwd=Path(__file__).parents[1])
    deadline = time.monotonic() + 120
    while not (checkpoint / "stage1" / "last.safetensors").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the fit ended before its first checkpoint"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert ResumeState(checkpoint, 2).finished_epochs() < 6
    resumed = DVAEPurify.fit(data, seed=1, resume_dir=checkpoint, **settings)
    _assert_same_weights(DVAEPurify.fit(data, seed=1, **settings), resumed)
    # A finished checkpoint is reused as it is.
    _assert_same_weights(resumed, DVAEPurify.fit(data, seed=1, resume_dir=checkpoint, **settings))


def test_checkpoint_is_one_file_per_stage_and_resuming_never_unpickles(tiny_data, tmp_path, monkeypatch) -> None:
    first = DVAEPurify.fit(tiny_data, seed=0, resume_dir=tmp_path, **TINY)
    files = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())
    assert files == ["fit.json", "stage1/last.safetensors", "stage2/last.safetensors"]

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)
    _assert_same_weights(first, DVAEPurify.fit(tiny_data, seed=0, resume_dir=tmp_path, **TINY))


def test_checkpoint_restores_channels_last_training_state(tmp_path) -> None:
    """The state is saved contiguous; restored into a channels-last model (as on CUDA) it takes that layout."""

    def setup():
        model = build_model(FitConfig(width=8, latent_dim=8), in_channels=1, image_size=8, num_classes=2, seed=0)
        model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
        return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    model, optimizer, scheduler = setup()
    model(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]), sample=False).reconstruction.sum().backward()
    optimizer.step()
    scheduler.step()
    ResumeState(tmp_path, 1).save(model, optimizer, scheduler, [torch.Generator().get_state()], epoch=0)
    restored, restored_optimizer, restored_scheduler = setup()
    assert ResumeState(tmp_path, 1).restore(restored, restored_optimizer, restored_scheduler,
                                                torch.Generator()) == 1
    weight = restored.stem[3].conv1.weight
    state = restored_optimizer.state[weight]
    assert state["exp_avg"].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(state["exp_avg"], optimizer.state[model.stem[3].conv1.weight]["exp_avg"])
    assert torch.equal(weight, model.stem[3].conv1.weight)


def test_checkpoint_of_other_settings_data_or_warm_start_is_refused(tiny_data, tiny_purifier, tmp_path) -> None:
    images, labels = tiny_data
    DVAEPurify.fit(tiny_data, seed=0, resume_dir=tmp_path, **ONE_EPOCH)
    with pytest.raises(ValueError, match="other settings"):
        DVAEPurify.fit(tiny_data, seed=9, resume_dir=tmp_path, **ONE_EPOCH)
    changed = images.clone()
    changed[0, 0, 0, 0] = 1 - changed[0, 0, 0, 0]
    with pytest.raises(ValueError, match=f"resume_dir {tmp_path} holds a fit of other data"):
        DVAEPurify.fit((changed, labels), seed=0, resume_dir=tmp_path, **ONE_EPOCH)
    with pytest.raises(ValueError, match="other data"):
        DVAEPurify.fit((images, labels.roll(1)), seed=0, resume_dir=tmp_path, **ONE_EPOCH)
    with pytest.raises(ValueError, match="another warm start"):
        DVAEPurify.fit(tiny_data, init=tiny_purifier, seed=0, resume_dir=tmp_path, **ONE_EPOCH)
    record = json.loads((tmp_path / "fit.json").read_text())
    assert record["processes"] == 1
    (tmp_path / "fit.json").write_text(json.dumps({**record, "processes": 2}))  # as a 2-process fit writes it
    with pytest.raises(ValueError, match=r"a fit of another number of processes \(processes: 2, this fit: 1\)"):
        DVAEPurify.fit(tiny_data, seed=0, resume_dir=tmp_path, **ONE_EPOCH)


@pytest.mark.parametrize("name", ["fit.json", "stage1/last.safetensors"])
@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_checkpoint_files_are_named(tiny_data, tmp_path, name, damage) -> None:
    DVAEPurify.fit(tiny_data, seed=0, resume_dir=tmp_path, **ONE_EPOCH)
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if damage == "truncate" else b"\x00garbage")
    with pytest.raises(ValueError) as caught:
        DVAEPurify.fit(tiny_data, seed=0, resume_dir=tmp_path, **ONE_EPOCH)
    assert str(path) in str(caught.value) and "weights_only" not in str(caught.value)


def test_a_diverged_fit_is_refused_and_its_resume_state_never_saved(tiny_data, tmp_path) -> None:
    words = r"stage 1 diverged in epoch 1/2: .* no longer finite .*learning rate \(lr=1e\+08, e\.g\. lr=1e\+07"
    with pytest.raises(DivergedError, match=words):
        DVAEPurify.fit(tiny_data, resume_dir=tmp_path, **{**TINY, "lr": 1e8})
    assert ResumeState(tmp_path, 1).finished_epochs() == 0


def test_warm_start_with_more_classes_is_refused_before_training(tiny_purifier, tmp_path) -> None:
    images, _ = make_images(16)
    with pytest.raises(ValueError, match="warm start: the starting weights have 4 classes, this fit needs 6"):
        DVAEPurify.fit((images, torch.arange(16) % 6), init=tiny_purifier, resume_dir=tmp_path, **ONE_EPOCH)
    with pytest.raises(ValueError, match="the starting weights have 4 classes, this fit needs 5"):
        DVAEPurify.fit((images, torch.arange(16) % 4), init=tiny_purifier, num_classes=5, **ONE_EPOCH)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_non_square_images_are_refused_before_training(tmp_path) -> None:
    images = torch.rand(8, 1, 16, 24)
    with pytest.raises(ValueError, match=r"images are 16x24 \(height x width\).*square.*Resize\(16\)"):
        DVAEPurify.fit((images, torch.arange(8) % 2), resume_dir=tmp_path, **ONE_EPOCH)
    assert not any(tmp_path.iterdir())


def test_warm_start_begins_from_given_weights(tiny_data, tiny_purifier) -> None:
    warm = DVAEPurify.fit(tiny_data, init=tiny_purifier, seed=0, **{**TINY, "epochs": 1, "lr": 1e-12})
    # With a vanishing learning rate the warm start keeps the initial weights (up to Adam's first step).
    assert torch.allclose(warm.stage1.to_mu.weight, tiny_purifier.stage1.to_mu.weight, atol=1e-6)
    assert warm.num_classes == tiny_purifier.num_classes


def test_fit_accepts_uint8_tensors_and_torch_dataset(tiny_data) -> None:
    images, labels = tiny_data
    as_uint8 = (images * 255).round().to(torch.uint8)
    dataset = torch.utils.data.TensorDataset(as_uint8, labels)
    a = DVAEPurify.fit((as_uint8, labels), seed=0, **TINY)
    b = DVAEPurify.fit(dataset, seed=0, **TINY)
    _assert_same_weights(a, b)


def test_fit_accepts_hf_dataset() -> None:
    datasets = pytest.importorskip("datasets")
    images, labels = make_images(32, channels=3)
    rows = {"img": [(image.permute(1, 2, 0) * 255).byte().numpy() for image in images], "label": labels.tolist()}
    dataset = datasets.Dataset.from_dict(rows).cast_column("img", datasets.Image())
    purifier = DVAEPurify.fit(dataset, seed=0, **TINY)
    assert (purifier.in_channels, purifier.image_size, purifier.num_classes) == (3, 16, 4)
    with pytest.raises(ValueError, match="label column 'target' not found"):
        DVAEPurify.fit(dataset, label_column="target", **TINY)


@pytest.mark.parametrize(
    "data, error, words",
    [
        ((torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2])), ValueError, "3 labels for 4 images"),
        ((torch.rand(4, 1, 16, 16) * 2, torch.arange(4)), ValueError, r"lie in \[0, 1\]"),
        ((torch.full((2, 1, 16, 16), float("nan")), torch.arange(2)), ValueError, "NaN"),
        ((torch.rand(2, 16, 16), torch.arange(2)), ValueError, "rank 3|2 labels for 1 images|channel"),
        ((torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2, 5])), ValueError, r"\[0, 4\)"),
        ((torch.rand(0, 1, 16, 16), torch.zeros(0, dtype=torch.long)), ValueError, "empty"),
        ([], ValueError, "empty"),
        (42, TypeError, "data must be"),
    ],
)
def test_bad_fit_input_is_named(data, error, words) -> None:
    kwargs = {"num_classes": 4} if isinstance(data, tuple) else {}
    with pytest.raises(error, match=words):
        DVAEPurify.fit(data, **kwargs, **TINY)


def test_a_stray_huge_label_is_refused_unless_num_classes_is_given(tiny_data) -> None:
    images, labels = tiny_data
    labels = labels.clone()
    labels[17] = 99_999
    with pytest.raises(ValueError, match=r"labels go up to 99999 \(dataset item 17\), which makes 100000 classes for "
                                         r"64 images; relabel .* or pass num_classes= explicitly"):
        DVAEPurify.fit((images, labels), **TINY)


@pytest.mark.parametrize(("label", "error", "words"), [
    (torch.tensor(1 + 2j), TypeError, r"dataset item 5: label must be an integer, got tensor\(1\.\+2\.j\)"),
    (np.uint64(2**64 - 1), ValueError, "dataset item 5: label 18446744073709551615 is not a class id"),
])
def test_a_complex_or_overflowing_label_names_its_item(tiny_data, label, error, words) -> None:
    items = [(image, label if index == 5 else int(value)) for index, (image, value) in enumerate(zip(*tiny_data))]
    with pytest.raises(error, match=words):
        DVAEPurify.fit(items, **TINY)


def test_zero_init_starts_the_perturbation_branch_at_zero_and_leaves_the_rest_as_seeded() -> None:
    shape = {"in_channels": 1, "image_size": 8, "num_classes": 2, "seed": 0}
    default = build_model(FitConfig(width=8, latent_dim=8), **shape)
    zeroed = build_model(FitConfig(width=8, latent_dim=8, zero_init_perturbation=True), **shape)
    images, labels = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        assert torch.equal(zeroed.eval()(images, labels).perturbation, torch.zeros_like(images))
        assert default.eval()(images, labels).perturbation.abs().max() > 0
    reference = default.state_dict()
    changed = [name for name, tensor in zeroed.state_dict().items() if not torch.equal(tensor, reference[name])]
    last = len(zeroed.perturbation_decoder) - 2  # the last convolution, before the identity output
    assert changed == [f"perturbation_decoder.{last}.weight", f"perturbation_decoder.{last}.bias"]
    with pytest.raises(TypeError, match="zero_init_perturbation"):
        FitConfig(zero_init_perturbation=1)


@pytest.mark.parametrize(("setting", "error", "words"), [
    ({"kl_bounds": (float("nan"), 3.0)}, ValueError, "kl_bounds (stage 1) must be a positive finite number, got nan"),
    ({"kl_bounds": (1.0, -3.0)}, ValueError, "kl_bounds (stage 2) must be a positive finite number, got -3.0"),
    ({"kl_bounds": (1.0, float("inf"))}, ValueError, "kl_bounds (stage 2) must be a positive finite number, got inf"),
    ({"kl_bounds": ("1", 3.0)}, TypeError, "kl_bounds (stage 1) must be a number, got str ('1')"),
    ({"kl_bounds": 3.0}, TypeError, "kl_bounds must be a tuple or a list, got float (3.0)"),
    ({"seed": 1.5}, TypeError, "seed must be an int, got float (1.5)"),
    ({"seed": "0"}, TypeError, "seed must be an int, got str ('0')"),
])
def test_fit_settings_of_a_wrong_type_or_value_are_refused(setting, error, words) -> None:
    with pytest.raises(error, match=re.escape(f"fit settings: {words}")):
        FitConfig(**setting)


def test_the_fit_subtraction_rule_feeds_stage_2_and_the_purifier(tiny_data) -> None:
    raw = DVAEPurify.fit(tiny_data, seed=0, **TINY)
    effect = DVAEPurify.fit(tiny_data, seed=0, subtract="effect", **TINY)
    assert (raw.subtract, effect.subtract) == ("raw", "effect")
    assert torch.equal(raw.stage1.to_mu.weight, effect.stage1.to_mu.weight)  # stage 1 does not depend on it
    assert not torch.equal(raw.stage2.to_mu.weight, effect.stage2.to_mu.weight)  # stage 2 trains on other x1
    with pytest.raises(ValueError, match="subtract must be 'effect' or 'raw', got 'mean'"):
        FitConfig(subtract="mean")


def test_presets_are_documented_configs() -> None:
    assert PRESETS["paper"] == FitConfig(width=64, latent_dim=256, epochs=60, batch_size=128, lr=5e-3)
    assert PRESETS["fast"].width < PRESETS["paper"].width
    assert resolve_config("fast", epochs=3).epochs == 3
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_config("slowest")
    with pytest.raises(TypeError, match="unknown fit setting"):
        resolve_config("fast", epoch=3)


def test_mixed_precision_fit_runs_and_can_alternate_with_full_precision(tiny_data) -> None:
    full = DVAEPurify.fit(tiny_data, seed=0, **TINY)
    bf16 = DVAEPurify.fit(tiny_data, seed=0, mixed_precision="bf16", **TINY)
    again = DVAEPurify.fit(tiny_data, seed=0, **TINY)
    assert all(torch.isfinite(p).all() for p in bf16.stage2.parameters())
    assert not torch.equal(full.stage1.to_mu.weight, bf16.stage1.to_mu.weight)  # bf16 arithmetic was used
    _assert_same_weights(full, again)


def test_plain_vae_fit_follows_a_mixed_precision_fit(tiny_data) -> None:
    from dvae_transform.evaluation.baselines import PlainVAE

    DVAEPurify.fit(tiny_data, seed=0, mixed_precision="bf16", **TINY)
    plain = PlainVAE.fit(tiny_data[0], epochs=1, width=8, latent_dim=8, batch_size=32)
    assert plain.purify(tiny_data[0]).shape == tiny_data[0].shape
