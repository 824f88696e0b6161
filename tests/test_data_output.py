"""Where ``dvae-purify purify`` writes (``data/output.py``): checked before the work, written whole, replacing only
its own output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_files import listing, write_files

from dvae_transform.data.output import MARKER, check_apart, check_output, write_folder


@pytest.fixture
def source(tmp_path) -> Path:
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def test_write_folder_lists_what_it_wrote_and_replaces_an_earlier_output_whole(tmp_path, source) -> None:
    out = tmp_path / "out"
    write_folder(out, write_files({"cat/0.png": "a", "dog/1.png": "b"}))
    assert json.loads((out / MARKER).read_text()) == {"tool": "dvae-purify", "files": ["cat/0.png", "dog/1.png"]}
    check_output(out, source, is_file=False, overwrite=True)  # its own output: may be replaced
    write_folder(out, write_files({"cat/0.png": "c"}))
    assert set(listing(out)) == {"cat/0.png", MARKER} and listing(out)["cat/0.png"] == "c"  # no stale class folder
    assert json.loads((out / MARKER).read_text())["files"] == ["cat/0.png"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "out"]  # no staging folder left


def test_a_failed_write_names_the_output_and_leaves_it_as_it_was(tmp_path) -> None:
    out = tmp_path / "out"
    write_folder(out, write_files({"a.png": "kept"}))
    before = listing(out)

    def full_disk(folder: Path) -> None:
        (folder / "a.png").write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match=r"writing .*out failed \(No space left on device\); what was there is left as"):
        write_folder(out, full_disk)
    assert listing(out) == before and sorted(path.name for path in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("place", ["data", "data/out", "."])
def test_an_output_that_is_holds_or_lies_in_the_input_is_refused(tmp_path, source, place) -> None:
    target = tmp_path / place
    with pytest.raises(ValueError, match=r"--out .* (is the input \(--data\)|and the input \(--data\) .* lie one "
                                         r"inside the other); choose another --out"):
        check_output(target, source, is_file=False, overwrite=True)


def test_check_apart_compares_what_the_paths_are_not_how_they_are_written(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ValueError, match="--report link/r.json and the input .*real lie one inside the other"):
        check_apart(Path("link/r.json"), "--report", {"the input": tmp_path / "real"})
    with pytest.raises(ValueError, match=r"--report real/../real is the output; choose another --report"):
        check_apart(Path("real/../real"), "--report", {"the output": Path("link")})
    check_apart(tmp_path / "real-2", "--report", {"the input": tmp_path / "real"})  # a shared prefix is apart


def test_a_file_output(tmp_path, source) -> None:
    npz = tmp_path / "out.npz"
    check_output(npz, source, is_file=True, overwrite=False)
    npz.write_bytes(b"earlier")
    with pytest.raises(FileExistsError, match=r"out.npz exists; choose another --out or pass --overwrite"):
        check_output(npz, source, is_file=True, overwrite=False)
    check_output(npz, source, is_file=True, overwrite=True)
    (tmp_path / "folder.npz").mkdir()
    with pytest.raises(FileExistsError, match="folder.npz is a folder; name the .npz file or its folder with --out"):
        check_output(tmp_path / "folder.npz", source, is_file=True, overwrite=True)


def test_a_folder_output(tmp_path, source) -> None:
    out = tmp_path / "out"
    check_output(out, source, is_file=False, overwrite=False)  # absent
    out.mkdir()
    check_output(out, source, is_file=False, overwrite=False)  # empty
    (out / "a.png").write_text("x")
    with pytest.raises(FileExistsError, match="out exists and is not empty; choose another --out or pass --overwrite"):
        check_output(out, source, is_file=False, overwrite=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="file is a file, not a folder; choose another --out"):
        check_output(tmp_path / "file", source, is_file=False, overwrite=True)


@pytest.mark.parametrize("marker", [None, "{", '{"files": "a.png"}', '{"tool": "dvae-purify"}', "[]"])
def test_overwrite_refuses_a_folder_it_did_not_write(tmp_path, source, marker) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_text("x")
    if marker is not None:
        (out / MARKER).write_text(marker)
    with pytest.raises(FileExistsError, match=rf"out was not written by dvae-purify \(no {MARKER}\); --overwrite "
                                              "replaces only a previous output of dvae-purify"):
        check_output(out, source, is_file=False, overwrite=True)


def test_overwrite_refuses_an_output_holding_files_it_did_not_list(tmp_path, source) -> None:
    out = tmp_path / "out"
    write_folder(out, write_files({"a.png": "x"}))
    for name in ("notes.txt", "b/1.png", "b/2.png", "c.png"):
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_text("theirs")
    with pytest.raises(FileExistsError, match=r"holds files that dvae-purify did not write \(b/1.png, b/2.png, c.png "
                                              r"and 1 more\); --overwrite replaces only"):
        check_output(out, source, is_file=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "theirs"
