"""Every ``python`` snippet of the README runs, in order, against a local Hub-protocol server."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from dvae_transform import DVAEPurify

README = Path(__file__).parents[1] / "README.md"
PUBLISHED = "dvae-transform/mnist32-lsp-fast"


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def _publish_tiny_purifier(fake_hub, folder: Path) -> None:
    images = torch.rand(40, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    purifier = DVAEPurify.fit((images, torch.arange(40) % 10), epochs=1, width=8, latent_dim=8, progress=False)
    purifier.save_pretrained(folder)
    files = {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    fake_hub.add_repo(PUBLISHED, files)


def test_readme_snippets_run(fake_hub, tmp_path, monkeypatch) -> None:
    snippets = _snippets()
    assert len(snippets) >= 5
    _publish_tiny_purifier(fake_hub, tmp_path / "published")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVAE_TRANSFORM_CACHE", str(tmp_path / "cache"))
    namespace: dict = {}
    for snippet in snippets:
        exec(compile(snippet, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert (tmp_path / "my-purifier" / "stage1" / "model.safetensors").is_file()
    assert namespace["images"].shape == (16, 3, 32, 32)
    assert any((tmp_path / "cache").iterdir())
