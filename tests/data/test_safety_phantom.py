"""The phantom generator replaces and deletes only files it can prove it wrote (issue 11)."""

from __future__ import annotations

import json

import pytest

from utils.config import TINY_SHAPE
from utils.data.datasets import list_cases
from utils.data.phantom import MARKER_FILE, main, make_phantom_dataset
from utils.safety import OWNER_FILE, UnsafeWriteError

SMALL = dict(n_train=1, n_test=0, shape=TINY_SHAPE, progress=False, workers=1)


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _cli(*args):
    return main(["--train", "1", "--test", "0", "--tiny", "--workers", "1", *map(str, args)])


def test_rebuild_with_another_seed_keeps_the_users_files(tmp_path, capsys):
    root = make_phantom_dataset(tmp_path / "p", seed=0, **SMALL)
    first = (root / "imagesTr" / "PHANTOM_001.nii.gz").read_bytes()
    (root / "my_predictions").mkdir()
    (root / "my_predictions" / "PHANTOM_001.nii.gz").write_bytes(b"weeks of work")
    (root / "notes.txt").write_text("mine")
    make_phantom_dataset(root, seed=1, **{**SMALL, "progress": True})
    assert (root / "my_predictions" / "PHANTOM_001.nii.gz").read_bytes() == b"weeks of work"
    assert (root / "notes.txt").read_text() == "mine"
    assert (root / "imagesTr" / "PHANTOM_001.nii.gz").read_bytes() != first, "rebuilt with the new seed"
    assert json.loads((root / MARKER_FILE).read_text())["seed"] == 1
    assert "kept 2 file(s)" in capsys.readouterr().out
    assert not list(tmp_path.glob(".p.*")), "no partial folder left"


def test_fewer_cases_delete_only_our_old_cases(tmp_path):
    root = make_phantom_dataset(tmp_path / "p", **{**SMALL, "n_train": 3})
    make_phantom_dataset(root, **SMALL)
    assert list_cases(root) == ["PHANTOM_001"]
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == ["PHANTOM_001.nii.gz"]


def test_a_folder_with_only_a_phantom_json_is_not_ours(tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("precious")
    for fake in ('{"generator": "utils.phantom"}', "[1, 2, 3]", '"a string"', "not json"):
        (folder / MARKER_FILE).write_text(fake)
        before = _tree(folder)
        with pytest.raises(FileExistsError, match="not a phantom made by utils.phantom"):
            make_phantom_dataset(folder, **SMALL)
        assert _cli("--out", folder) == 2
        assert _tree(folder) == before


def test_overwrite_never_replaces_a_file_it_did_not_write(tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "imagesTr" / "PHANTOM_001.nii.gz").write_bytes(b"a real scan that happens to have this name")
    (folder / "dataset.json").write_text('{"mine": true}')
    before = _tree(folder)
    assert _cli("--out", folder, "--overwrite") == 2
    assert "refusing to replace" in capsys.readouterr().err
    assert _tree(folder) == before
    assert not list(tmp_path.glob(".mine.*")), "no partial folder left"


def test_a_phantom_file_the_user_edited_is_not_replaced(tmp_path):
    root = make_phantom_dataset(tmp_path / "p", **SMALL)
    (root / "dataset.json").write_text('{"edited": "by the learner"}')
    with pytest.raises(UnsafeWriteError, match=r"refusing to replace .*dataset.json"):
        make_phantom_dataset(root, seed=5, **SMALL)
    assert (root / "dataset.json").read_text() == '{"edited": "by the learner"}'


@pytest.mark.parametrize("where", ["checkout", "home", "root"])
def test_protected_folders_are_refused_even_with_overwrite(tmp_path, monkeypatch, capsys, where):
    checkout = tmp_path / "repo"
    (checkout / ".git").mkdir(parents=True)
    (checkout / "README.md").write_text("course")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    target = {"checkout": checkout, "home": tmp_path / "home", "root": "/"}[where]
    if where == "checkout":
        monkeypatch.chdir(checkout)
        target = "."
    before = _tree(checkout)
    assert _cli("--out", target, "--overwrite") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: refusing to write the phantom folder") and err.count("\n") == 1
    assert _tree(checkout) == before and (checkout / ".git").is_dir()


def test_out_pointing_at_a_file(tmp_path, capsys):
    afile = tmp_path / "data.csv"
    afile.write_text("a,b\n1,2\n")
    assert _cli("--out", afile) == 2 and _cli("--out", afile, "--overwrite") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert afile.read_text() == "a,b\n1,2\n"


def test_marker_lists_every_file_with_its_hash(tmp_path):
    root = make_phantom_dataset(tmp_path / "p", **SMALL)
    files = json.loads((root / OWNER_FILE).read_text())["files"]
    assert set(files) == {"dataset.json", MARKER_FILE, "imagesTr/PHANTOM_001.nii.gz", "labelsTr/PHANTOM_001.nii.gz"}
    assert all(len(r["sha256"]) == 64 and r["size"] > 0 for r in files.values())


def test_a_phantom_from_before_markers_is_rebuilt_keeping_other_files(tmp_path):
    root = make_phantom_dataset(tmp_path / "p", **SMALL)
    (root / OWNER_FILE).unlink()  # as written by earlier versions: phantom.json only
    (root / "my_notes.txt").write_text("mine")
    make_phantom_dataset(root, seed=3, **SMALL)
    assert json.loads((root / MARKER_FILE).read_text())["seed"] == 3
    assert (root / "my_notes.txt").read_text() == "mine" and (root / OWNER_FILE).is_file()


def test_brats_export_deletes_only_its_own_files(phantom_root, tmp_path, capsys):
    from utils.training.slices import EXPORT_MARKER, export_brats

    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / EXPORT_MARKER).write_text("{}")
    (fake / "thesis.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a BraTS export made here"):
        export_brats(phantom_root, fake, case_ids=["PHANTOM_001"])
    assert (fake / "thesis.txt").read_text() == "keep"
    out = export_brats(phantom_root, tmp_path / "export", case_ids=["PHANTOM_001", "PHANTOM_002"])
    (out / "my_notes.txt").write_text("mine")
    export_brats(phantom_root, out, case_ids=["PHANTOM_003"])
    assert (out / "my_notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["BraTS20_Training_001"]
    assert json.loads((out / EXPORT_MARKER).read_text())["cases"] == {"BraTS20_Training_001": "PHANTOM_003"}
    with pytest.raises(UnsafeWriteError, match="inside the input folder"):
        export_brats(phantom_root, phantom_root / "brats", case_ids=["PHANTOM_001"])
