"""Batched purification: shapes, ranges, determinism, micro-batching and the two stages."""

from __future__ import annotations

import pytest
import torch

from dvae_transform import DVAE, DVAEPurify
from dvae_transform.precision import quantize
from dvae_transform.purify import (
    ACTIVATION_MAPS,
    MAX_MICRO_BATCH,
    MICRO_BATCH_BYTES,
    default_batch_size,
    perturbation_estimate,
    purify_two_stage,
    reconstruct,
    remove_perturbation,
)


def test_output_shape_range_and_type(tiny_purifier, tiny_data) -> None:
    images, labels = tiny_data
    out = tiny_purifier.purify(images, labels)
    assert out.shape == images.shape and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    single = tiny_purifier.purify(images[3], int(labels[3]))
    assert single.shape == images[3].shape
    assert torch.allclose(single, out[3], atol=1e-6)


def test_output_is_an_ordinary_tensor_that_can_be_trained_on(tiny_purifier, tiny_data) -> None:
    images, labels = tiny_data
    out = tiny_purifier.purify(images, labels)
    assert not out.is_inference()
    weight = torch.ones(1, requires_grad=True)
    (out * weight).sum().backward()
    assert weight.grad is not None


def test_uint8_and_float_input_agree(tiny_purifier, tiny_data) -> None:
    images, labels = tiny_data
    as_uint8 = (images * 255).round().to(torch.uint8)
    assert torch.allclose(tiny_purifier.purify(as_uint8, labels), tiny_purifier.purify(as_uint8.float() / 255, labels))


def test_micro_batching_does_not_change_results(tiny_purifier, tiny_data) -> None:
    images, labels = tiny_data
    whole = purify_two_stage(tiny_purifier.stage1, tiny_purifier.stage2, images, labels, batch_size=64)
    pieces = purify_two_stage(tiny_purifier.stage1, tiny_purifier.stage2, images, labels, batch_size=7)
    # Convolutions may sum in another order for another batch size, so a stage-1 value that lies on an
    # 8-bit rounding boundary can round either way; the output then moves far less than one 8-bit level.
    assert torch.allclose(whole, pieces, atol=1e-3)


def _meta_dvae(image_size: int, width: int, in_channels: int = 3) -> DVAE:
    with torch.device("meta"):  # only the sizes matter
        return DVAE(in_channels, image_size, 10, width=width, latent_dim=8)


def test_the_default_micro_batch_follows_the_image_size_and_the_memory_budget() -> None:
    assert default_batch_size(_meta_dvae(32, 16)) == MAX_MICRO_BATCH == 256  # 32 px: as before, the cap
    paper_224, fast_224 = _meta_dvae(224, 64), _meta_dvae(224, 16)
    assert default_batch_size(fast_224) == 56 and default_batch_size(paper_224) == 15
    for model in (paper_224, fast_224, _meta_dvae(64, 16), _meta_dvae(1024, 2, in_channels=1)):
        size = default_batch_size(model)
        per_image = ACTIVATION_MAPS * 4 * (model.width + model.in_channels) * model.image_size**2
        assert size == MAX_MICRO_BATCH or size * per_image <= MICRO_BATCH_BYTES < (size + 1) * per_image
    assert default_batch_size(fast_224, budget=MICRO_BATCH_BYTES // 4) == 14
    assert default_batch_size(fast_224, budget=1) == 1  # never below one image
    assert default_batch_size(_meta_dvae(32, 16), paper_224) == 15  # the larger model decides
    with pytest.raises(ValueError, match="budget must be positive"):
        default_batch_size(fast_224, budget=0)


def test_purification_runs_in_the_default_micro_batch_unless_one_is_given(tiny_purifier, tiny_data) -> None:
    images, labels = tiny_data
    images, labels = images.repeat(5, 1, 1, 1)[:300], labels.repeat(5)[:300]
    seen: list[int] = []
    hook = tiny_purifier.stage1.stem.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    try:
        assert tiny_purifier.batch_size is None and tiny_purifier.micro_batch == MAX_MICRO_BATCH
        tiny_purifier.purify(images, labels)
        assert seen == [256, 44]
        seen.clear()
        chosen = tiny_purifier.replace(batch_size=100)
        assert chosen.micro_batch == 100
        chosen.purify(images, labels)
        assert seen == [100, 100, 100]
    finally:
        hook.remove()
    assert DVAEPurify(tiny_purifier.stage1, tiny_purifier.stage2, batch_size=None).batch_size is None


def test_mean_latent_is_deterministic_and_sampling_is_seeded(tiny_purifier, tiny_data) -> None:
    images, labels = tiny_data
    stages = (tiny_purifier.stage1, tiny_purifier.stage2)
    assert torch.equal(purify_two_stage(*stages, images, labels), purify_two_stage(*stages, images, labels))
    a = purify_two_stage(*stages, images, labels, sample=True, seed=1)
    b = purify_two_stage(*stages, images, labels, sample=True, seed=1)
    c = purify_two_stage(*stages, images, labels, sample=True, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)


def _estimate_by_hand(model: DVAE, images: torch.Tensor, labels: torch.Tensor, subtract: str) -> torch.Tensor:
    with torch.no_grad():
        output = model.eval()(images, labels)
    if subtract == "raw":
        return output.perturbation
    return (output.reconstruction + output.perturbation).clamp(0, 1) - output.reconstruction


@pytest.mark.parametrize("subtract", ["effect", "raw"])
def test_two_stages_compose_as_documented(tiny_purifier, tiny_data, subtract: str) -> None:
    images, labels = tiny_data
    stage1, stage2 = tiny_purifier.stage1, tiny_purifier.stage2
    x1 = remove_perturbation(stage1, images, labels, subtract=subtract)
    assert torch.equal(x1, quantize(x1))  # stage-1 output is stored at 8-bit precision
    assert torch.allclose(x1, quantize(images - _estimate_by_hand(stage1, images, labels, subtract)), atol=1 / 255)
    expected = reconstruct(stage2, torch.clamp(x1 - _estimate_by_hand(stage2, x1, labels, subtract), 0, 1))
    purified = purify_two_stage(stage1, stage2, images, labels, subtract=subtract)
    assert torch.allclose(purified, expected, atol=1e-5)


def test_the_effect_rule_is_the_raw_branch_output_where_the_clamp_is_inactive(tiny_purifier) -> None:
    stage1 = tiny_purifier.stage1
    images = torch.rand(32, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    images[:16, :, :8] = 0.0  # a black band: x_rec + p leaves [0, 1] there
    labels = torch.arange(32) % tiny_purifier.num_classes
    with torch.no_grad():
        output = stage1.eval()(images, labels)
        raw = perturbation_estimate(stage1, images, labels, subtract="raw")
        effect = perturbation_estimate(stage1, images, labels, subtract="effect")
    combined = output.reconstruction + output.perturbation
    inside = (combined >= 0) & (combined <= 1)
    assert torch.allclose(effect[inside], raw[inside], atol=1e-6)
    assert (~inside).any() and not torch.allclose(effect[~inside], raw[~inside], atol=1e-3)
    assert ((output.reconstruction + effect) >= -1e-6).all() and ((output.reconstruction + effect) <= 1 + 1e-6).all()
    with pytest.raises(ValueError, match="subtract"):
        remove_perturbation(stage1, images, labels, subtract="mean")


def test_models_keep_their_training_mode(tiny_purifier, tiny_data) -> None:
    images, labels = tiny_data
    tiny_purifier.stage1.train()
    try:
        remove_perturbation(tiny_purifier.stage1, images, labels)
        assert tiny_purifier.stage1.training
    finally:
        tiny_purifier.stage1.eval()


def test_bad_batch_size(tiny_purifier, tiny_data) -> None:
    with pytest.raises(ValueError, match="batch_size must be positive"):
        reconstruct(tiny_purifier.stage2, tiny_data[0], batch_size=0)


def test_models_keep_their_weights_and_layout(tiny_purifier, tiny_data) -> None:
    stage1, stage2 = tiny_purifier.stage1, tiny_purifier.stage2
    before = {name: (tensor.data_ptr(), tensor.stride()) for name, tensor in stage1.state_dict().items()}
    purify_two_stage(stage1, stage2, *tiny_data)
    assert {name: (tensor.data_ptr(), tensor.stride()) for name, tensor in stage1.state_dict().items()} == before


@pytest.mark.parametrize("size", [64, 224])
def test_larger_images_purify_run_to_run_identically(size: int) -> None:
    torch.manual_seed(0)
    stages = [DVAE(in_channels=3, image_size=size, num_classes=2, width=4, latent_dim=4) for _ in range(2)]
    images, labels = torch.rand(3, 3, size, size), torch.tensor([0, 1, 1])
    first = purify_two_stage(*stages, images, labels, batch_size=2, sample=True, seed=4)
    assert first.shape == images.shape and 0.0 <= first.min() and first.max() <= 1.0
    assert torch.equal(first, purify_two_stage(*stages, images, labels, batch_size=2, sample=True, seed=4))
