"""Weights are read from safetensors files only, and checked against the model before any is loaded.

Pickle checkpoints (``pytorch_model.bin``, ``*.pt``, ...) are refused: unpickling can execute code.
:class:`SafetensorsHubMixin` gives a network ``from_pretrained`` / ``save_pretrained`` on these terms.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import PyTorchModelHubMixin, constants, hf_hub_download
from huggingface_hub.errors import RemoteEntryNotFoundError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_model
from torch import nn

from ..validation import from_mapping

WEIGHTS_NAME = constants.SAFETENSORS_SINGLE_FILE
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _missing_weights_message(where: str, folder: Path | None = None) -> str:
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES) if folder else []
    found = f" (found only {', '.join(pickles)})" if pickles else ""
    return (
        f"{where} not found{found}. dvae-transform reads weights only from safetensors files: pickle checkpoints "
        "(pytorch_model.bin, *.pt, *.pth, *.ckpt) are refused because unpickling can execute arbitrary code. "
        "Convert a trusted checkpoint with safetensors.torch.save_file."
    )


def weights_file(
    model_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """The ``model.safetensors`` of a local folder or a Hub repo (downloaded through the Hugging Face cache).

    Raises ``FileNotFoundError`` when there is none, naming any pickle files found instead.
    """
    if os.path.isdir(model_id):
        weights = Path(model_id) / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(_missing_weights_message(str(weights), Path(model_id)))
        return weights
    try:
        return Path(hf_hub_download(
            model_id, WEIGHTS_NAME, revision=revision, cache_dir=cache_dir, force_download=force_download,
            token=token, local_files_only=local_files_only,
        ))
    except RemoteEntryNotFoundError as error:
        raise FileNotFoundError(_missing_weights_message(f"{model_id}/{WEIGHTS_NAME}")) from error


def load_safetensors(model: nn.Module, path: str | os.PathLike, *, device: str | torch.device = "cpu") -> None:
    """Load a safetensors file into ``model`` after checking it holds exactly its tensors, shapes and dtypes.

    A corrupt or truncated file, a missing or extra tensor, a wrong shape or dtype, or a non-finite
    value raises ``ValueError`` naming the file; ``model`` is left untouched then.
    """
    expected = model.state_dict()
    try:
        with safe_open(os.fspath(path), framework="pt", device=str(device)) as file:
            names = set(file.keys())
            missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
            if missing or extra:
                raise ValueError(f"{path}: tensors do not match the config: missing {missing}, unexpected {extra}")
            for name in sorted(names):
                shape = list(file.get_slice(name).get_shape())
                if shape != list(expected[name].shape):
                    raise ValueError(
                        f"{path}: tensor {name!r} has shape {shape} but the config needs {list(expected[name].shape)}"
                    )
            tensors = {name: file.get_tensor(name) for name in sorted(names)}
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupted?): {error}") from None
    for name, tensor in tensors.items():
        if tensor.dtype != expected[name].dtype:
            raise ValueError(f"{path}: tensor {name!r} is {tensor.dtype}, expected {expected[name].dtype}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{path}: tensor {name!r} holds NaN or infinite values")
    model.load_state_dict(tensors)


def save_weights(model: nn.Module, folder: Path) -> None:
    """Write ``model``'s tensors to ``folder/model.safetensors``."""
    save_model(model, str(folder / WEIGHTS_NAME))


class SafetensorsHubMixin(PyTorchModelHubMixin):
    """``PyTorchModelHubMixin`` on safetensors terms: the config is checked, then only ``model.safetensors`` is read.

    Unlike the mixin's default loader it never falls back to a pickled ``pytorch_model.bin``, and it
    checks every tensor's name, shape and dtype against the config before loading any. A subclass
    names the dataclass that checks its constructor arguments in ``config_class``.
    """

    config_class: ClassVar[type]

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        config: dict[str, Any] | None = None,
        map_location: str = "cpu",
        **model_kwargs: Any,
    ) -> Any:
        weights = weights_file(model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                               local_files_only=local_files_only, token=token)
        source = os.path.join(model_id, constants.CONFIG_NAME)
        if config is None:
            raise FileNotFoundError(f"{source} not found: the network settings are needed to build the model")
        from_mapping(cls.config_class, config, source)
        model = cls(**model_kwargs)
        load_safetensors(model, weights, device=map_location)
        return model.eval()

    def _save_pretrained(self, save_directory: Path) -> None:
        save_weights(self, save_directory)
