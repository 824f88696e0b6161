"""Weights are read from safetensors files only, and checked against the model before any is loaded.

Pickle checkpoints (``pytorch_model.bin``, ``*.pt``, ...) are refused: unpickling can execute code.
:class:`SafetensorsHubMixin` gives a network ``from_pretrained`` / ``save_pretrained`` on these terms.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import PyTorchModelHubMixin, constants, hf_hub_download
from huggingface_hub.errors import RemoteEntryNotFoundError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_model
from torch import nn

from .files import replace_folder
from .validation import InputTypeError, from_mapping, read_config

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


@dataclass(frozen=True)
class HubDownload:
    """How files are fetched from the Hub: the download keywords ``ModelHubMixin`` hands ``_from_pretrained``,
    kept together and handed on whole (to ``hf_hub_download`` and ``snapshot_download`` as :meth:`keywords`)."""

    revision: str | None = None
    cache_dir: str | os.PathLike | None = None
    force_download: bool = False
    local_files_only: bool = False
    token: str | bool | None = None

    @classmethod
    def split(cls, keywords: Mapping[str, Any]) -> tuple[HubDownload, dict[str, Any]]:
        """The Hub download keywords among ``keywords`` (what ``_from_pretrained`` receives), and the others."""
        names = {field.name for field in dataclasses.fields(cls)}
        return (cls(**{name: value for name, value in keywords.items() if name in names}),
                {name: value for name, value in keywords.items() if name not in names})

    def keywords(self) -> dict[str, Any]:
        """The keywords of ``hf_hub_download`` / ``snapshot_download`` (and ``from_pretrained``)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def at(self, revision: str | None) -> HubDownload:
        """The same download, of ``revision``."""
        return dataclasses.replace(self, revision=revision)


def repo_file(model_id: str, filename: str, hub: HubDownload) -> Path | None:
    """``filename`` of a local folder or a Hub repo (downloaded through the Hugging Face cache); None if absent."""
    if os.path.isdir(model_id):
        path = Path(model_id) / filename
        return path if path.is_file() else None
    try:
        return Path(hf_hub_download(model_id, filename, **hub.keywords()))
    except RemoteEntryNotFoundError:
        return None


def weights_file(model_id: str, hub: HubDownload) -> Path:
    """The ``model.safetensors`` of :func:`repo_file`.

    Raises ``FileNotFoundError`` when there is none, naming any pickle files found instead.
    """
    path = repo_file(model_id, WEIGHTS_NAME, hub)
    if path is None:
        folder = Path(model_id) if os.path.isdir(model_id) else None
        where = str(folder / WEIGHTS_NAME) if folder is not None else f"{model_id}/{WEIGHTS_NAME}"
        raise FileNotFoundError(_missing_weights_message(where, folder))
    return path


def read_weights(
    path: str | os.PathLike, expected: Mapping[str, torch.Tensor], *, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, checked against ``expected`` (names to tensors, meta tensors will do).

    Names and shapes are compared with the file's header before any tensor is read, so a file that
    does not fit allocates nothing; dtypes and finiteness are checked once read. A corrupt or truncated
    file, a missing or extra tensor, a wrong shape or dtype, or a non-finite value raises ``ValueError``
    naming the file.
    """
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
    return tensors


def load_safetensors(model: nn.Module, path: str | os.PathLike, *, device: str | torch.device = "cpu") -> None:
    """Load a safetensors file into ``model`` after :func:`read_weights` checked it; ``model`` is untouched on error."""
    model.load_state_dict(read_weights(path, model.state_dict(), device=device))


class AtomicSave:
    """``save_pretrained`` written all at once: the Hub mixin's files go to a staging folder that then takes the
    target's place (:func:`~dvae_transform.files.replace_folder`), so a killed save never leaves a folder mixing
    old and new files (one stage of each). An existing model card (``README.md``) is kept, as the mixin keeps it;
    a target holding anything else that the save would not write is refused, since it is replaced whole.
    Put before the Hub mixin in the bases.
    """

    def save_pretrained(self, save_directory: str | os.PathLike, *, config: Any = None, repo_id: str | None = None,
                        push_to_hub: bool = False, model_card_kwargs: dict[str, Any] | None = None,
                        **push_to_hub_kwargs: Any) -> str | None:
        """Save to ``save_directory`` (replaced whole), then push to ``repo_id`` (default: its name) if asked."""
        target = Path(save_directory)

        def write(staging: Path) -> None:
            card = target / "README.md"
            if card.is_file() and not card.is_symlink():
                shutil.copyfile(card, staging / card.name)
            super(AtomicSave, self).save_pretrained(staging, config=config, model_card_kwargs=model_card_kwargs)
            foreign = sorted({path.name for path in _entries(target)} - {path.name for path in _entries(staging)})
            if foreign:
                raise FileExistsError(
                    f"{target} holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which a saved "
                    "model does not: save_pretrained replaces the whole folder; choose a new or empty folder"
                )

        replace_folder(target, write)
        if push_to_hub:
            return self.push_to_hub(repo_id or target.name, config=config, model_card_kwargs=model_card_kwargs,
                                    **push_to_hub_kwargs)
        return None


def _entries(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []


class SafetensorsHubMixin(AtomicSave, PyTorchModelHubMixin):
    """``PyTorchModelHubMixin`` on safetensors terms: the config is checked, then only ``model.safetensors`` is read.

    Unlike the mixin's default loader it never falls back to a pickled ``pytorch_model.bin``, and it
    allocates nothing before the weights are known to fit: the config is checked (``config_class``,
    a dataclass whose checks bound every size), the network is built on the meta device, and every
    tensor's name and shape in the file's header is compared with it. The tensors read then become
    the network's parameters (no second copy). Loading thus needs about the weight file's size in memory.

    A subclass names its config dataclass in ``config_class`` and has a ``config`` dict (what ``config.json``
    holds); it may override :meth:`_from_config`
    (build from a checked config) and the two layout hooks, when a config records that its file stores
    some tensors in another layout than the network's.
    """

    config_class: ClassVar[type]

    @classmethod
    def _from_config(cls, config: Any) -> nn.Module:
        return cls(**dataclasses.asdict(config))

    def _to_stored_layout(self, tensors: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
        """The network's tensors as the file of ``config`` stores them."""
        return tensors

    def _from_stored_layout(self, tensors: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
        """The tensors of the file of ``config`` in the network's layout."""
        return tensors

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, force_download: bool = False,
                        local_files_only: bool = False, token: str | bool | None = None, **model_kwargs: Any) -> Any:
        """The mixin's ``from_pretrained``, its ``config.json`` checked first (:func:`~..validation.read_config`)."""
        model_id = os.fspath(pretrained_model_name_or_path)
        hub = HubDownload(revision=revision, cache_dir=cache_dir, force_download=force_download,
                          local_files_only=local_files_only, token=token)
        source = os.path.join(model_id, constants.CONFIG_NAME)
        path = repo_file(model_id, constants.CONFIG_NAME, hub)
        if path is None:
            raise FileNotFoundError(f"{source} not found: the network settings are needed to build the model")
        read_config(cls.config_class, path, source)
        return super().from_pretrained(model_id, **hub.keywords(), **model_kwargs)

    @classmethod
    def _from_pretrained(
        cls, *, model_id: str, config: dict[str, Any] | None = None, map_location: str = "cpu", **keywords: Any
    ) -> Any:
        """The mixin's loading hook; ``keywords``: its Hub download keywords (:class:`HubDownload`) and the model's."""
        hub, model_kwargs = HubDownload.split(keywords)
        source = os.path.join(model_id, constants.CONFIG_NAME)
        checked = from_mapping(cls.config_class, config, source)  # read_config checked the file already
        overrides = sorted(name for name, value in model_kwargs.items() if config.get(name) != value)
        if overrides:
            raise InputTypeError(f"{cls.__name__}.from_pretrained takes the network settings from {source}; "
                                 f"unexpected argument(s) {overrides}")
        weights = weights_file(model_id, hub)
        with torch.device("meta"):
            model = cls._from_config(checked)
        tensors = read_weights(weights, model._to_stored_layout(model.state_dict(), checked), device=map_location)
        model.load_state_dict(model._from_stored_layout(tensors, checked), assign=True)
        return model.eval()

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write ``model.safetensors`` and ``config.json`` (what ``self.config`` holds) into ``save_directory``."""
        save_model(self, str(save_directory / WEIGHTS_NAME))
        (save_directory / constants.CONFIG_NAME).write_text(json.dumps(self.config, indent=2, sort_keys=True))
