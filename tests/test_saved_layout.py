"""``checkpoints/``: saving, loading and Hub round trips of ``DVAEPurify`` (driven through the real
``huggingface_hub`` client), safetensors-only weights, config checks and the model card (the registry of
official pretrained purifiers: tests/test_pretrained_registry.py, tests/test_pretrained_resolve.py).

The Hub is ``FakeHub`` (tests/hub_server/); repos are put on it directly with ``add_repo``. Uploads through
``push_to_hub`` and ``hub/publish.py`` are tested in tests/test_push.py.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hub_fixtures import folder_files
from huggingface_hub import ModelCard, ModelHubMixin
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from safetensors.torch import load_file, save_file
from torchvision.transforms import v2

from dvae_transform import DVAE, DVAEPurify
from dvae_transform.saved.card import AttackResult
from dvae_transform.validation import InputTypeError
from dvae_transform.weights import load_safetensors

REPO = "tests-org/tiny-purifier"
LAYOUT = {
    "README.md",
    "config.json",
    "stage1/config.json",
    "stage1/model.safetensors",
    "stage2/config.json",
    "stage2/model.safetensors",
}


def purified(purifier: DVAEPurify, data: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return purifier.purify(*data)


@pytest.fixture(scope="module")
def saved(tiny_purifier: DVAEPurify, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_purifier`` written by ``save_pretrained``."""
    folder = tmp_path_factory.mktemp("saved") / "purifier"
    tiny_purifier.save_pretrained(folder)
    return folder


@pytest.fixture
def copy_of_saved(saved: Path, tmp_path: Path) -> Path:
    """A writable copy of the saved folder."""
    return Path(shutil.copytree(saved, tmp_path / "copy"))


def edit_json(path: Path, **changes: object) -> None:
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


# ----------------------------------------------------------------------------- local save / load


def test_save_writes_the_hub_layout(saved: Path, tiny_purifier: DVAEPurify) -> None:
    assert set(folder_files(saved)) == LAYOUT | {"training.json"}  # a fitted purifier's settings and history
    assert json.loads((saved / "config.json").read_text()) == {
        "format_version": 1, "batch_size": tiny_purifier.batch_size, "sample": False, "seed": None,
        "subtract": tiny_purifier.subtract,
    }
    assert json.loads((saved / "stage2" / "config.json").read_text()) == tiny_purifier.stage2.config
    card = ModelCard.load(saved / "README.md")
    assert card.data.library_name == "dvae-transform"
    assert {"dvae-transform", "unlearnable-examples"} <= set(card.data.tags)


_SAVE_LOOP = """
import sys
from dvae_transform import DVAEPurify
first, second = (DVAEPurify.from_pretrained(folder) for folder in sys.argv[1:3])
while True:
    for purifier in (first, second):
        purifier.save_pretrained(sys.argv[3])
        print("saved", flush=True)
"""


def _stage_weights(folder: Path) -> list[bytes]:
    return [(folder / stage / "model.safetensors").read_bytes() for stage in ("stage1", "stage2")]


def test_a_save_stopped_at_any_moment_leaves_one_whole_purifier(tiny_purifier: DVAEPurify, tmp_path: Path) -> None:
    """A process saving two purifiers in turn over one folder is frozen (SIGSTOP) at 30 moments: what a kill
    there would leave on disk is always one whole purifier, never one's stage 1 with the other's stage 2."""
    other = copy.deepcopy(tiny_purifier)
    with torch.no_grad():
        for stage in (other.stage1, other.stage2):
            next(stage.parameters()).add_(1)
    tiny_purifier.save_pretrained(tmp_path / "a")
    other.save_pretrained(tmp_path / "b")
    expected = [_stage_weights(tmp_path / "a"), _stage_weights(tmp_path / "b")]
    target = tmp_path / "target"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")])}
    saver = subprocess.Popen([sys.executable, "-c", _SAVE_LOOP, str(tmp_path / "a"), str(tmp_path / "b"), str(target)],
                             env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert saver.stdout.readline() == "saved\n"
        for moment in range(30):
            time.sleep(0.003 * moment)
            saver.send_signal(signal.SIGSTOP)
            try:
                found = _stage_weights(target)
                assert found in expected, moment
            finally:
                saver.send_signal(signal.SIGCONT)
        while True:  # kill it in the middle of a save
            saver.send_signal(signal.SIGSTOP)
            if _staging(tmp_path):
                break
            saver.send_signal(signal.SIGCONT)
            time.sleep(0.001)
    finally:
        saver.kill()
        saver.wait()
    assert _staging(tmp_path)  # the killed save's
    tiny_purifier.save_pretrained(target)  # removes it
    assert not _staging(tmp_path)


def _staging(folder: Path) -> list[str]:
    return [path.name for path in folder.iterdir() if path.name.startswith(".tmp-")]


def test_a_save_refuses_a_folder_holding_other_files(tiny_purifier: DVAEPurify, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"holds notes.txt, which a saved model does not: .* new or empty folder"):
        tiny_purifier.save_pretrained(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_the_subtraction_rule_is_saved_and_a_file_without_it_means_raw(tmp_path: Path, tiny_purifier: DVAEPurify,
                                                                         tiny_data) -> None:
    raw = tiny_purifier.replace(subtract="raw")
    raw.save_pretrained(tmp_path / "raw")
    loaded = DVAEPurify.from_pretrained(tmp_path / "raw")
    assert loaded.subtract == "raw" and torch.equal(purified(loaded, tiny_data), purified(raw, tiny_data))
    config = json.loads((tmp_path / "raw" / "config.json").read_text())
    del config["subtract"]  # a file written before the rule existed, when stages subtracted the raw output
    (tmp_path / "raw" / "config.json").write_text(json.dumps(config))
    assert DVAEPurify.from_pretrained(tmp_path / "raw").subtract == "raw"
    assert DVAEPurify.from_pretrained(tmp_path / "raw", subtract="effect").subtract == "effect"


def test_local_round_trip_purifies_identically(saved: Path, tiny_purifier: DVAEPurify, tiny_data) -> None:
    loaded = DVAEPurify.from_pretrained(saved)

    assert isinstance(loaded, v2.Transform) and isinstance(loaded, ModelHubMixin)
    assert torch.equal(purified(loaded, tiny_data), purified(tiny_purifier, tiny_data))
    assert (loaded.batch_size, loaded.sample, loaded.seed) == (tiny_purifier.batch_size, False, None)
    images, labels = tiny_data
    assert torch.equal(v2.Compose([loaded])(images[0], labels[0])[0], tiny_purifier.purify(images[0], labels[0]))
    assert torch.equal(purified(DVAEPurify.from_pretrained(str(saved)), tiny_data), purified(loaded, tiny_data))


def test_saved_defaults_are_restored_and_can_be_overridden(tiny_purifier: DVAEPurify, tmp_path: Path) -> None:
    sampling = tiny_purifier.replace(batch_size=7, sample=True, seed=3)
    assert (tiny_purifier.batch_size, tiny_purifier.sample, tiny_purifier.seed) != (7, True, 3)
    sampling.save_pretrained(tmp_path)

    loaded = DVAEPurify.from_pretrained(tmp_path)
    assert (loaded.batch_size, loaded.sample, loaded.seed) == (7, True, 3)
    assert DVAEPurify.from_pretrained(tmp_path, batch_size=5, seed=None).batch_size == 5


def test_missing_local_folder_and_bad_names_are_explained(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a folder"):
        DVAEPurify.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="neither a local folder"):
        DVAEPurify.from_pretrained("no-such-checkpoint")
    with pytest.raises(FileNotFoundError, match="not a saved DVAEPurify"):
        DVAEPurify.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------- weights safety


def test_pickle_only_folder_is_refused_with_the_reason(copy_of_saved: Path) -> None:
    weights = copy_of_saved / "stage1" / "model.safetensors"
    torch.save(load_file(weights), copy_of_saved / "stage1" / "pytorch_model.bin")
    weights.unlink()

    with pytest.raises(FileNotFoundError, match=r"found only pytorch_model\.bin.*unpickling can execute"):
        DVAEPurify.from_pretrained(copy_of_saved)


def _without_a_tensor(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor for name, tensor in tensors.items() if name != "to_mu.bias"}


def _with_extra_tensor(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**tensors, "extra.weight": torch.zeros(3)}


def _with_wrong_shape(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**tensors, "to_mu.bias": torch.zeros(tensors["to_mu.bias"].numel() + 1)}


def _with_wrong_dtype(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**tensors, "to_mu.bias": tensors["to_mu.bias"].double()}


def _with_nan(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**tensors, "to_mu.bias": torch.full_like(tensors["to_mu.bias"], float("nan"))}


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_without_a_tensor, r"missing \['to_mu.bias'\]"),
        (_with_extra_tensor, r"unexpected \['extra.weight'\]"),
        (_with_wrong_shape, r"'to_mu.bias' has shape \[9\] but the config needs \[8\]"),
        (_with_wrong_dtype, r"'to_mu.bias' is torch.float64, expected torch.float32"),
        (_with_nan, r"'to_mu.bias' holds NaN"),
    ],
)
def test_tampered_tensors_are_refused_naming_file_and_tensor(copy_of_saved: Path, tamper, message: str) -> None:
    weights = copy_of_saved / "stage2" / "model.safetensors"
    save_file(tamper(load_file(weights)), weights)

    with pytest.raises(ValueError, match=message) as caught:
        DVAEPurify.from_pretrained(copy_of_saved)
    assert "stage2/model.safetensors" in str(caught.value)


@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_corrupt_safetensors_file_is_refused_naming_it(copy_of_saved: Path, damage: str) -> None:
    weights = copy_of_saved / "stage1" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-100] if damage == "truncate" else b"\xff" * 8 + data[8:])

    with pytest.raises(ValueError, match=r"stage1/model\.safetensors is not a readable safetensors file"):
        DVAEPurify.from_pretrained(copy_of_saved)


def test_refused_weights_leave_a_model_untouched(saved: Path, tiny_purifier: DVAEPurify, tmp_path: Path) -> None:
    model = DVAE(**tiny_purifier.stage1.config)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    tensors = load_file(saved / "stage1" / "model.safetensors")
    save_file(_with_nan(tensors), tmp_path / "bad.safetensors")

    with pytest.raises(ValueError, match="NaN"):
        load_safetensors(model, tmp_path / "bad.safetensors")
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


# ----------------------------------------------------------------------------- config checks


@pytest.mark.parametrize(
    ("file", "changes", "error", "message"),
    [
        ("stage1/config.json", {"dropout": 0.1}, ValueError, r"unknown key\(s\) \['dropout'\]"),
        ("stage2/config.json", {"width": "8"}, TypeError, r"stage2/config.json: .*width must be an int"),
        ("stage2/config.json", {"image_size": 15}, ValueError, r"image_size must be even"),
        ("config.json", {"colour": "red"}, ValueError, r"unknown key\(s\) \['colour'\]"),
        ("config.json", {"sample": "yes"}, TypeError, r"sample must be a bool"),
        ("config.json", {"subtract": "mean"}, ValueError, r"subtract must be .effect. or .raw., got .mean."),
        ("config.json", {"format_version": 2}, ValueError, r"format_version 2 is not supported"),
        ("config.json", {"batch_size": 10**9}, ValueError, r"config.json: batch_size must be an int in \[1, 4096\]"),
    ],
)
def test_bad_config_is_refused_before_any_tensor_is_read(
    copy_of_saved: Path, file: str, changes: dict, error: type, message: str
) -> None:
    edit_json(copy_of_saved / file, **changes)
    for stage in ("stage1", "stage2"):  # were any weights read first, this would raise a different error
        truncate(copy_of_saved / stage / "model.safetensors")

    with pytest.raises(error, match=message) as caught:
        DVAEPurify.from_pretrained(copy_of_saved)
    assert file in str(caught.value)


def test_config_that_disagrees_with_the_weights_names_the_tensor(copy_of_saved: Path) -> None:
    edit_json(copy_of_saved / "stage1" / "config.json", latent_dim=16)

    message = r"stage1/model.safetensors: tensor 'from_latent.weight' has shape \[16, 8, 1, 1\]"
    with pytest.raises(ValueError, match=message):
        DVAEPurify.from_pretrained(copy_of_saved)


@pytest.mark.parametrize("file", ["config.json", "stage2/config.json"])
def test_invalid_json_names_the_file(copy_of_saved: Path, file: str) -> None:
    (copy_of_saved / file).write_text("{not json")

    with pytest.raises(ValueError, match=rf"{file} is not valid JSON"):
        DVAEPurify.from_pretrained(copy_of_saved)


# ----------------------------------------------------------------------------- through the Hub client


def test_download_then_cache_serves_it_with_the_server_stopped(
    fake_hub, hf_cache: Path, saved: Path, tiny_purifier: DVAEPurify, tiny_data
) -> None:
    fake_hub.add_repo(REPO, folder_files(saved))
    expected = purified(tiny_purifier, tiny_data)

    first = DVAEPurify.from_pretrained(REPO)
    assert torch.equal(purified(first, tiny_data), expected)
    assert fake_hub.count("GET", "/lfs/") == 2  # both weight files came through the LFS CDN
    assert fake_hub.count(path_contains="README.md") == 0  # only the files needed to load
    assert len(list(hf_cache.rglob("model.safetensors"))) == 2

    fake_hub.stop()
    second = DVAEPurify.from_pretrained(REPO)
    assert torch.equal(purified(second, tiny_data), expected)


def test_offline_mode_and_local_files_only_use_the_cache(
    fake_hub, hf_offline, saved: Path, tiny_purifier: DVAEPurify, tiny_data
) -> None:
    fake_hub.add_repo(REPO, folder_files(saved))
    with pytest.raises(LocalEntryNotFoundError):
        DVAEPurify.from_pretrained(REPO, local_files_only=True)  # nothing cached yet
    DVAEPurify.from_pretrained(REPO)
    fake_hub.clear_log()

    from_cache = DVAEPurify.from_pretrained(REPO, local_files_only=True)
    hf_offline(True)
    offline = DVAEPurify.from_pretrained(REPO)

    assert fake_hub.request_log == []
    expected = purified(tiny_purifier, tiny_data)
    assert torch.equal(purified(from_cache, tiny_data), expected)
    assert torch.equal(purified(offline, tiny_data), expected)


def test_revision_pins_the_weights(
    fake_hub, saved: Path, other_purifier: DVAEPurify, tiny_purifier: DVAEPurify, tiny_data, tmp_path: Path
) -> None:
    other_purifier.save_pretrained(tmp_path / "other")
    first = fake_hub.add_repo(REPO, folder_files(saved))
    second = fake_hub.add_repo(REPO, folder_files(tmp_path / "other"))  # main moves on
    old, new = purified(tiny_purifier, tiny_data), purified(other_purifier, tiny_data)
    assert first != second and not torch.equal(old, new)

    assert torch.equal(purified(DVAEPurify.from_pretrained(REPO, revision=first), tiny_data), old)
    assert torch.equal(purified(DVAEPurify.from_pretrained(REPO), tiny_data), new)


def test_missing_repo_revision_and_file_are_reported(fake_hub, saved: Path) -> None:
    with pytest.raises(RepositoryNotFoundError):
        DVAEPurify.from_pretrained("tests-org/absent")
    files = folder_files(saved)
    fake_hub.add_repo(REPO, files)
    with pytest.raises(RevisionNotFoundError):
        DVAEPurify.from_pretrained(REPO, revision="v9")

    del files["stage2/model.safetensors"]
    fake_hub.add_repo("tests-org/incomplete", files)
    with pytest.raises(FileNotFoundError, match=r"stage2/model\.safetensors not found"):
        DVAEPurify.from_pretrained("tests-org/incomplete")


def test_pickle_only_repo_is_refused_and_never_downloaded(fake_hub, saved: Path) -> None:
    files = folder_files(saved)
    for stage in ("stage1", "stage2"):
        buffer = io.BytesIO()
        torch.save(load_file(saved / stage / "model.safetensors"), buffer)
        files[f"{stage}/pytorch_model.bin"] = buffer.getvalue()
        del files[f"{stage}/model.safetensors"]
    fake_hub.add_repo(REPO, files)
    stage1_only = {name.removeprefix("stage1/"): data for name, data in files.items() if name.startswith("stage1/")}
    fake_hub.add_repo("tests-org/dvae-pickle", stage1_only)

    with pytest.raises(FileNotFoundError, match="pickle checkpoints .* are refused because unpickling"):
        DVAEPurify.from_pretrained(REPO)
    with pytest.raises(FileNotFoundError, match="pickle checkpoints .* are refused because unpickling"):
        DVAE.from_pretrained("tests-org/dvae-pickle")
    assert fake_hub.count(path_contains="pytorch_model.bin") == 0


def test_a_single_stage_loads_from_the_hub(fake_hub, saved: Path, tiny_purifier: DVAEPurify) -> None:
    fake_hub.add_repo("tests-org/stage1", {name: (saved / "stage1" / name).read_bytes()
                                           for name in ("config.json", "model.safetensors")})

    stage = DVAE.from_pretrained("tests-org/stage1")
    assert stage.config == tiny_purifier.stage1.config and not stage.training
    expected = tiny_purifier.stage1.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in stage.state_dict().items())


@pytest.mark.parametrize("file", ["config.json", "stage1/config.json"])
def test_a_config_on_the_hub_that_is_not_a_json_object_is_refused_naming_it(
    fake_hub, saved: Path, file: str
) -> None:
    fake_hub.add_repo("tests-org/listed", {**folder_files(saved), file: b"[1, 2, 3]"})

    with pytest.raises(InputTypeError, match=rf"tests-org/listed/{file}: expected a JSON object, got list"):
        DVAEPurify.from_pretrained("tests-org/listed")


def test_corrupt_weights_on_the_hub_are_refused(fake_hub, saved: Path) -> None:
    files = folder_files(saved)
    files["stage1/model.safetensors"] = files["stage1/model.safetensors"][:-100]
    fake_hub.add_repo(REPO, files)

    with pytest.raises(ValueError, match=r"stage1/model\.safetensors is not a readable safetensors file"):
        DVAEPurify.from_pretrained(REPO)


def test_bad_config_on_the_hub_is_refused(fake_hub, saved: Path) -> None:
    files = folder_files(saved)
    files["stage1/config.json"] = json.dumps({**json.loads(files["stage1/config.json"]), "extra": 1})
    fake_hub.add_repo(REPO, files)

    with pytest.raises(ValueError, match=r"tests-org/tiny-purifier/stage1/config.json: unknown key"):
        DVAEPurify.from_pretrained(REPO)


# ----------------------------------------------------------------------------- model card


def test_model_card_carries_metadata_and_metrics(tiny_purifier: DVAEPurify, tmp_path: Path) -> None:
    results = [AttackResult("lsp", 0.12, 0.91), AttackResult("classwise_noise", 0.2, 0.85)]
    tiny_purifier.save_pretrained(tmp_path, model_card_kwargs={
        "repo_id": "org/tiny", "datasets": ["ylecun/mnist"], "attack": "lsp", "results": results,
        "clean_accuracy": 0.97, "training_settings": {"epochs": 12}, "eval_data": "held-out digits",
    })

    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.datasets == ["ylecun/mnist"] and card.data.poisoning_attack == "lsp"
    assert card.data.evaluated_attacks == ["lsp", "classwise_noise"]
    assert [(r.metric_type, r.metric_value, r.dataset_name) for r in card.data.eval_results] == [
        ("accuracy", 0.91, "held-out digits"), ("accuracy", 0.85, "held-out digits"),
    ]
    assert 'DVAEPurify.from_pretrained("org/tiny")' in card.text
    assert "| `classwise_noise` | 0.2000 | 0.8500 |" in card.text and "| epochs | `12` |" in card.text


def test_a_fitted_purifier_saves_its_training_details(tiny_purifier: DVAEPurify, tmp_path: Path) -> None:
    tiny_purifier.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "No training details" not in card and "| epochs | `1` |" in card
    assert "| stage 2 final epoch | `1: loss" in card
    training = json.loads((tmp_path / "training.json").read_text())
    assert training["config"]["epochs"] == 1 and training["history"] == tiny_purifier.history
    assert DVAEPurify.from_pretrained(tmp_path).history == tiny_purifier.history
    assert DVAEPurify.from_pretrained(tmp_path, labels_getter=None).labels_getter is None


def test_model_card_rejects_bad_metrics(tiny_purifier: DVAEPurify) -> None:
    with pytest.raises(ValueError, match=r"purified must be an accuracy in \[0, 1\]"):
        AttackResult("lsp", 0.1, 1.5)
    with pytest.raises(TypeError, match="AttackResult"):
        tiny_purifier.generate_model_card(results=[("lsp", 0.1, 0.9)])


# ----------------------------------------------------------------------------- warm start


def test_warm_start_from_a_folder_or_repo_equals_warm_start_from_the_object(
    fake_hub, saved: Path, tiny_purifier: DVAEPurify, tiny_data
) -> None:
    fake_hub.add_repo(REPO, folder_files(saved))
    options = {"epochs": 1, "batch_size": 32, "progress": False, "seed": 0}

    reference = purified(DVAEPurify.fit(tiny_data, init=tiny_purifier, **options), tiny_data)
    assert torch.equal(purified(DVAEPurify.fit(tiny_data, init=str(saved), **options), tiny_data), reference)
    assert torch.equal(purified(DVAEPurify.fit(tiny_data, init=REPO, **options), tiny_data), reference)
    assert not torch.equal(reference, purified(tiny_purifier, tiny_data))  # it did train
    with pytest.raises(TypeError, match="init must be a DVAEPurify"):
        DVAEPurify.fit(tiny_data, init=42, **options)
