"""``dvae-purify bench`` through the command line: other datasets and victims, split runs, bad input."""

from __future__ import annotations

import json

import pytest
from dataset_writers import write_cifar10, write_fashion

from dvae_transform.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bench_error(argv: list[str], capsys) -> str:
    """Run ``dvae-purify bench argv``, expecting bad input: exit status 2 and one line on stderr."""
    assert main(["bench", *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dvae-purify bench: error: "), captured.err
    return lines[0]


@pytest.mark.slow
def test_cifar10_with_the_resnet18_victim_and_the_paper_preset_end_to_end(tmp_path, capsys):
    write_cifar10(tmp_path / "data", per_batch=8, test=20)
    out, notes = tmp_path / "out", tmp_path / "B.md"
    argv = ["bench", "--data", "cifar10", "--root", str(tmp_path / "data"), "--victim", "resnet18", "--preset", "paper",
            "--train", "40", "--test", "20", "--epochs", "1", "--victim-epochs", "1", "--seeds", "0",
            "--attacks", "lsp", "--defenses", "none", "dvae", "--out", str(out), "--benchmarks-file", str(notes)]

    assert main(argv) == 0

    results = json.loads((out / "results.json").read_text())
    settings = results["settings"]
    assert settings["data"] == {"name": "cifar10", "num_train": 40, "num_test": 20, "image_shape": [3, 32, 32],
                                "num_classes": 10, "subset_seed": 0}
    assert settings["victim"]["name"] == "resnet18" and settings["victim_epochs"] == 1
    assert settings["preset"] == "paper" and settings["fit"]["width"] == 64 and settings["fit"]["epochs"] == 1
    assert settings["attack_settings"] == {}  # the published budgets
    assert set(results["cells"]) == {f"{row}/{defense}/0" for row in ("clean", "lsp") for defense in ("none", "dvae")}
    assert "diagnostics" in results["cells"]["lsp/dvae/0"] and "diagnostics" not in results["cells"]["lsp/none/0"]
    text = notes.read_text()
    assert text.count("<!-- bench-cifar10-resnet18:start -->") == 1 and "<!-- bench:start -->" not in text
    assert "## Benchmark: cifar10, victim `resnet18`" in text
    assert "40 train / 20 test images (seed-0 subset of 40 / 20)" in text
    assert "CIFAR-style ResNet-18" in text and "Stage-1 diagnostics" in text
    assert all((out / name).read_bytes().startswith(PNG_MAGIC) for name in ("accuracy.png", "samples.png"))


def test_a_grid_split_over_processes_merges_and_refuses_other_data(tmp_path, capsys):
    common = ["--quick", "--defenses", "none", "--seeds", "0", "--no-write"]
    assert main(["bench", *common, "--attacks", "--out", str(tmp_path / "clean")]) == 0  # the clean row only
    assert main(["bench", *common, "--no-clean", "--attacks", "ops", "--out", str(tmp_path / "ops")]) == 0
    capsys.readouterr()
    merged = ["bench", *common, "--attacks", "ops", "--resume", "--out", str(tmp_path / "all"),
              "--merge", str(tmp_path / "clean"), str(tmp_path / "ops")]
    assert main(merged) == 0
    results = json.loads((tmp_path / "all" / "results.json").read_text())
    assert set(results["cells"]) == {"clean/none/0", "ops/none/0"} and results["runs"][-1]["computed"] == 0

    write_fashion(tmp_path / "fashion", train=64, test=64)
    fashion = ["--data", "fashion-mnist", "--root", str(tmp_path / "fashion")]
    error = bench_error([*common, *fashion, "--out", str(tmp_path / "other"), "--merge", str(tmp_path / "ops")], capsys)
    assert f"--merge: {tmp_path / 'ops'} was made with other settings (" in error
    assert "data.name: 'mnist' there, 'fashion-mnist' now" in error
    error = bench_error([*common, *fashion, "--resume", "--out", str(tmp_path / "all")], capsys)
    assert "--resume" in error and "data.name: 'mnist' there, 'fashion-mnist' now" in error


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--data", "cifar-10"], "unknown dataset 'cifar-10'; known: mnist, fashion-mnist, cifar10"),
        (["--victim", "vgg"], "--victim 'vgg': unknown victim; known: small, resnet18, resnet18_cpu"),
        (["--victim", "small", "--victim-width", "8"],
         "--victim-width 8: victim 'small' has no width setting; victims with one: resnet18_cpu"),
        (["--data", "svhn", "--root", "{tmp}/nowhere"], "svhn: dataset folder {tmp}/nowhere does not exist"),
        (["--data", "cifar10", "--root", "{tmp}"], "missing data_batch_3"),
        (["--data", "fashion-mnist", "--root", "{tmp}/fashion", "--train", "13"],
         "fashion-mnist: train=13 > 12 images: expected at most 12"),
        (["--data", "mnist", "--root", "{tmp}"], "mnist: the embedded digits take no root"),
        (["--quick", "--merge", "{tmp}/nowhere"], "--merge {tmp}/nowhere: no results.json in it"),
    ],
)
def test_bad_input_is_one_line_naming_it_and_exit_status_2(tmp_path, capsys, argv, words):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    write_fashion(tmp_path / "fashion")
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    assert words.format(tmp=tmp_path) in bench_error([*argv, "--out", str(tmp_path / "out")], capsys)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--victim-width", "0"], "argument --victim-width: expected a positive integer, got 0"),
        (["--victim-width", "1.5"], "argument --victim-width: invalid positive_int value: '1.5'"),
        (["--attacks", "blur"], "argument --attacks: invalid choice: 'blur'"),
    ],
)
def test_bad_option_values_are_named_by_argparse(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *argv])
    assert exit_info.value.code == 2 and words in capsys.readouterr().err
