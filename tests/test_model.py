"""The network: shapes, ranges, options, the architecture by resolution and configuration checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dvae_transform import DVAE
from dvae_transform.model import Conv3x3, default_downsamplings, swap_conv_layout


def parameter_count(**kwargs) -> int:
    with torch.device("meta"):
        return sum(parameter.numel() for parameter in DVAE(**kwargs).parameters())


@pytest.mark.parametrize("channels, size", [(1, 16), (3, 32), (3, 12)])
def test_forward_shapes_and_ranges(channels: int, size: int) -> None:
    model = DVAE(in_channels=channels, image_size=size, num_classes=5, width=8, latent_dim=12)
    x = torch.rand(3, channels, size, size)
    out = model(x, torch.tensor([0, 2, 4]))
    assert out.reconstruction.shape == x.shape
    assert out.perturbation.shape == x.shape
    assert out.mu.shape == out.log_var.shape == (3, 12, size // 2, size // 2)
    assert 0.0 <= out.reconstruction.min() and out.reconstruction.max() <= 1.0
    assert out.perturbation.min() < 0.0  # no sigmoid on the perturbation branch


def test_eval_uses_latent_mean_and_train_samples() -> None:
    model = DVAE(in_channels=1, image_size=16, num_classes=2, width=8, latent_dim=8)
    x, y = torch.rand(2, 1, 16, 16), torch.tensor([0, 1])
    model.eval()
    assert torch.equal(model(x, y).reconstruction, model(x, y).reconstruction)
    first = model(x, y, sample=True, generator=torch.Generator().manual_seed(1)).reconstruction
    again = model(x, y, sample=True, generator=torch.Generator().manual_seed(1)).reconstruction
    other = model(x, y, sample=True, generator=torch.Generator().manual_seed(2)).reconstruction
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_class_embedding_changes_only_the_perturbation() -> None:
    model = DVAE(in_channels=1, image_size=16, num_classes=3, width=8, latent_dim=8).eval()
    x = torch.rand(1, 1, 16, 16)
    a, b = model(x, torch.tensor([0])), model(x, torch.tensor([2]))
    assert torch.equal(a.reconstruction, b.reconstruction)
    assert not torch.equal(a.perturbation, b.perturbation)
    assert torch.equal(model.reconstruct(x), a.reconstruction)


def test_stem_embedding_target_option() -> None:
    model = DVAE(in_channels=1, image_size=16, num_classes=3, width=8, latent_dim=8, embedding_target="stem").eval()
    out = model(torch.rand(2, 1, 16, 16), torch.tensor([0, 1]))
    assert out.perturbation.shape == (2, 1, 16, 16)


def test_no_classifier_head() -> None:
    model = DVAE(in_channels=3, image_size=32, num_classes=10)
    assert not any(isinstance(module, torch.nn.Linear) for module in model.modules())


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"in_channels": 2}, ValueError, "in_channels must be 1 or 3"),
        ({"image_size": 15}, ValueError, "image_size must be even for 1 stride-2 stage"),
        ({"image_size": 100}, ValueError, r"image_size must be divisible by 8 for 3 stride-2 .* 96 or 104"),
        ({"image_size": 64, "downsamplings": 7}, ValueError, r"divisible by 128 for 7 stride-2 stage\(s\)"),
        ({"image_size": 64, "downsamplings": 11}, ValueError, r"downsamplings must be an int in \[1, 10\]"),
        ({"image_size": 2048}, ValueError, r"image_size must be an int in \[4, 1024\]"),
        ({"num_classes": 0}, ValueError, r"num_classes must be an int in \[1, 100000\]"),
        ({"num_classes": 10**7}, ValueError, r"num_classes must be an int in \[1, 100000\]"),
        ({"width": 12.0}, TypeError, "width must be an int"),
        ({"width": 2048}, ValueError, r"width must be an int in \[1, 1024\]"),
        ({"latent_dim": 8192}, ValueError, r"latent_dim must be an int in \[1, 4096\]"),
        ({"embedding_target": "pixels"}, ValueError, "embedding_target"),
        ({"decoder_layout": "transposed"}, ValueError, "from_pretrained converts weights saved in the 'transposed'"),
    ],
)
def test_bad_config_is_named(kwargs: dict, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        DVAE(**kwargs)


def test_save_load_round_trip_gives_identical_outputs(tmp_path) -> None:
    model = DVAE(in_channels=1, image_size=16, num_classes=3, width=8, latent_dim=8).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    loaded = DVAE.from_pretrained(tmp_path).eval()
    x, y = torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2, 0])
    for a, b in zip(model(x, y), loaded(x, y)):
        assert torch.equal(a, b)
    assert loaded.config == model.config


def test_save_writes_the_architecture_fields(tmp_path) -> None:
    DVAE(in_channels=1, image_size=64, num_classes=2, width=4, latent_dim=4).save_pretrained(tmp_path)
    saved = (tmp_path / "config.json").read_text()
    assert '"downsamplings": 2' in saved and '"decoder_layout": "conv"' in saved


# ----------------------------------------------------------------------------- decoder convolutions


@pytest.mark.parametrize("in_channels, out_channels", [(8, 8), (8, 4), (4, 3)])
def test_conv3x3_computes_the_transposed_convolution(in_channels: int, out_channels: int) -> None:
    transposed = nn.ConvTranspose2d(in_channels, out_channels, 3, 1, 1)
    conv = Conv3x3(in_channels, out_channels)
    with torch.no_grad():
        conv.weight.copy_(swap_conv_layout(transposed.weight))
        conv.bias.copy_(transposed.bias)
    x = torch.randn(2, in_channels, 9, 7)
    torch.testing.assert_close(conv(x), transposed(x), atol=1e-5, rtol=1e-5)
    assert torch.equal(swap_conv_layout(conv.weight), transposed.weight)  # the swap is its own inverse


def test_conv3x3_draws_its_initial_weights_as_the_transposed_layer_did() -> None:
    torch.manual_seed(3)
    transposed = nn.ConvTranspose2d(8, 4, 3, 1, 1)
    torch.manual_seed(3)
    conv = Conv3x3(8, 4)
    assert torch.equal(conv.weight, swap_conv_layout(transposed.weight))
    assert torch.equal(conv.bias, transposed.bias)


# ----------------------------------------------------------------------------- architecture by resolution


def test_published_32px_layout() -> None:
    """The paper's CIFAR network, tensor by tensor (the 3x3 decoder kernels in Conv2d layout)."""
    with torch.device("meta"):
        model = DVAE(in_channels=3, image_size=32, num_classes=10)
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items() if name.endswith("weight")}
    assert model.downsamplings == 1 and model.latent_shape == (128, 16, 16)
    assert [shapes[f"stem.{i}.conv1.weight"] for i in (3, 4, 5)] == [(64, 64, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3)]
    assert shapes["stem.0.weight"] == (64, 3, 3, 3) and shapes["stem.5.shortcut.0.weight"] == (128, 64, 1, 1)
    assert not any(name.startswith("stem.6") for name in shapes)
    assert (shapes["to_mu.weight"], shapes["from_latent.weight"]) == ((256, 128, 1, 1), (128, 256, 1, 1))
    assert shapes["class_embedding.weight"] == (10, 128 * 16 * 16)
    for decoder in ("image_decoder", "perturbation_decoder"):
        layers = [type(layer).__name__ for layer in getattr(model, decoder)]
        assert layers == ["ConvTranspose2d", "Conv3x3", "InstanceNorm2d", "ReLU", "Conv3x3", "InstanceNorm2d", "ReLU",
                          "Conv3x3", "Sigmoid" if decoder == "image_decoder" else "Identity"]
        assert [shapes[f"{decoder}.{i}.weight"] for i in (0, 1, 4, 7)] == [
            (128, 64, 4, 4), (64, 64, 3, 3), (32, 64, 3, 3), (3, 32, 3, 3)
        ]


@pytest.mark.parametrize("size, stages", [(4, 1), (16, 1), (28, 1), (32, 1), (48, 2), (64, 2), (96, 3), (224, 4),
                                          (1024, 6)])
def test_default_downsamplings_bring_the_latent_side_to_16_or_less(size: int, stages: int) -> None:
    assert default_downsamplings(size) == stages
    assert size >> stages <= 16 and (stages == 1 or size >> (stages - 1) > 16)


@pytest.mark.parametrize("size, side", [(32, 16), (64, 16), (224, 14)])
def test_each_resolution_runs_forward_and_backward(size: int, side: int) -> None:
    model = DVAE(in_channels=3, image_size=size, num_classes=3, width=4, latent_dim=4)
    x = torch.rand(2, 3, size, size)
    out = model(x, torch.tensor([0, 2]))
    assert out.reconstruction.shape == out.perturbation.shape == x.shape
    assert out.mu.shape == (2, 4, side, side) and model.latent_shape == (8, side, side)
    assert model.class_embedding.weight.shape == (3, 8 * side * side)  # the embedding lives at the latent's size
    (out.reconstruction.mean() + out.perturbation.mean() + out.mu.mean()).backward()
    assert all(parameter.grad is not None for name, parameter in model.named_parameters() if "embedding" not in name)


@pytest.mark.parametrize("num_classes", [1, 10, 100])
@pytest.mark.parametrize("width", [16, 64])
def test_a_224px_network_holds_at_most_twice_the_parameters_of_a_32px_one(width: int, num_classes: int) -> None:
    sizes = {size: parameter_count(image_size=size, width=width, latent_dim=4 * width, num_classes=num_classes)
             for size in (32, 64, 224)}
    assert sizes[224] <= 2 * sizes[32] and sizes[64] <= 2 * sizes[32]


def test_downsamplings_can_be_chosen() -> None:
    model = DVAE(in_channels=1, image_size=64, num_classes=2, width=4, latent_dim=4, downsamplings=1)
    assert model.latent_shape == (8, 32, 32) and model.config["downsamplings"] == 1
    assert model(torch.rand(1, 1, 64, 64), torch.tensor([1])).reconstruction.shape == (1, 1, 64, 64)


@pytest.mark.parametrize("channels, size, values", [(3, 32, 12), (1, 64, 16), (3, 224, 768)])
def test_values_per_latent_position(channels: int, size: int, values: int) -> None:
    with torch.device("meta"):
        model = DVAE(in_channels=channels, image_size=size, width=4, latent_dim=4)
    assert model.values_per_latent_position == values
    assert values * model.latent_shape[1] ** 2 == channels * size * size


@pytest.mark.parametrize("shape", [(2, 1, 16, 20), (2, 1, 20, 16), (2, 3, 16, 16), (1, 16, 16)])
def test_wrong_input_shape_is_named_with_how_to_resize(shape: tuple[int, ...]) -> None:
    model = DVAE(in_channels=1, image_size=16, num_classes=2, width=4, latent_dim=4)
    with pytest.raises(ValueError, match=r"expects a batch of 1x16x16 images .*v2\.Resize\(16\) then v2\.CenterCrop"):
        model.reconstruct(torch.rand(shape))


def test_perturbation_alone_equals_the_forward_branch() -> None:
    model = DVAE(in_channels=1, image_size=16, num_classes=3, width=8, latent_dim=8).eval()
    x, y = torch.rand(3, 1, 16, 16), torch.tensor([0, 1, 2])
    assert torch.equal(model.perturbation(x, y), model(x, y).perturbation)
    sampled = model.perturbation(x, y, sample=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(sampled, model(x, y, sample=True, generator=torch.Generator().manual_seed(5)).perturbation)
