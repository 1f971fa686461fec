"""The shifted test set (issue 26): the phantom generator with every scanner setting outside the training ranges.

Ranges really outside the training ones, the same anatomy and tumour with another scanner, deterministic
by seed, its own folder with marker and ownership, the ``phantom-shifted`` dataset name and the ``--shifted``
command line, and no overwriting of a folder it did not write.
"""

import json

import nibabel as nib
import numpy as np
import pytest

from utils.config import TINY_SHAPE, shifted_phantom_dir
from utils.data.datasets import list_cases
from utils.data.phantom import (
    INTENSITY_SCALE,
    MARKER_FILE,
    SCANNER_RANGES,
    SHIFTED_RANGES,
    SHIFTED_SEED,
    TOOL,
    ensure_shifted_phantom,
    main,
    make_phantom_case,
    make_phantom_dataset,
)
from utils.data.phantom.scanner import TEXTURE_RANGE, _scanner
from utils.data.sources import get_dataset
from utils.safety import OwnedFiles

from conftest import snapshot


def test_shifted_intervals_lie_outside_the_training_ranges():
    assert set(SHIFTED_RANGES) == set(SCANNER_RANGES)
    for name, intervals in SHIFTED_RANGES.items():
        low, high = SCANNER_RANGES[name]
        for a, b in intervals:
            assert a < b and (b < low or a > high), f"{name}: {a}-{b} overlaps the training {low}-{high}"


def test_every_drawn_setting_is_outside_the_training_range():
    sides = {name: set() for name in SHIFTED_RANGES}
    for seed in range(300):
        trained = _scanner(np.random.default_rng(seed), "training")
        shifted = _scanner(np.random.default_rng(seed), "shifted")
        for name, (low, high) in SCANNER_RANGES.items():
            t, s = (np.atleast_1d(np.asarray(d[name], dtype=float)) for d in (trained, shifted))
            if name == "scale":
                t, s = t / INTENSITY_SCALE, s / INTENSITY_SCALE
            assert np.all((t >= low) & (t <= high)), name
            assert np.all((s < low) | (s > high)), f"{name}: {s[(s >= low) & (s <= high)]} inside {low}-{high}"
            sides[name] |= {"below" if v < low else "above" for v in s.ravel()}
        assert TEXTURE_RANGE[0] <= shifted["texture"] <= TEXTURE_RANGE[1], "the tumour's texture is not the scanner's"
    for name, intervals in SHIFTED_RANGES.items():
        assert len(sides[name]) == len(intervals), f"{name}: drew only {sides[name]}"
    with pytest.raises(ValueError, match="scanner must be one of training, shifted"):
        _scanner(np.random.default_rng(0), "other")


def test_same_anatomy_and_tumour_another_scanner():
    image, label, affine = make_phantom_case(11, TINY_SHAPE, "shifted")
    image0, label0, affine0 = make_phantom_case(11, TINY_SHAPE)
    np.testing.assert_array_equal(label, label0)
    np.testing.assert_array_equal(affine, affine0)
    assert image.dtype == image0.dtype and image.shape == image0.shape
    for c in range(4):
        assert not np.array_equal(image[..., c], image0[..., c]), f"channel {c} looks the same"


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    """The ci-size shifted test set, built as the course builds it (``phantom-shifted``, ci mode)."""
    data = tmp_path_factory.mktemp("shifted-data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COURSE_DATA_DIR", str(data))
        folder = ensure_shifted_phantom("ci", progress=False)
        assert folder == shifted_phantom_dir("ci") == data / "phantom-ci-shifted"
        before = snapshot(folder)
        assert get_dataset("phantom-shifted", "ci") == folder
        assert snapshot(folder) == before, "found complete: nothing rewritten"
    return folder


def test_shifted_set_has_its_marker_and_ownership(shifted, phantom_root):
    marker = json.loads((shifted / MARKER_FILE).read_text())
    assert marker["scanner"] == "shifted" and marker["seed"] == SHIFTED_SEED
    assert (marker["n_train"], marker["n_test"], marker["shape"]) == (2, 0, list(TINY_SHAPE))
    assert marker["scanner_ranges"] == {k: [list(b) for b in v] for k, v in SHIFTED_RANGES.items()}
    assert "scanner" not in json.loads((phantom_root / MARKER_FILE).read_text()), "training phantoms are unchanged"
    assert "shifted" in json.loads((shifted / "dataset.json").read_text())["description"]
    assert list_cases(shifted) == ["PHANTOM_001", "PHANTOM_002"]
    owned = OwnedFiles(shifted, TOOL)
    assert owned.exists and owned.owns(shifted / "imagesTr" / "PHANTOM_002.nii.gz")
    assert owned.owns(shifted / "labelsTr" / "PHANTOM_001.nii.gz") and owned.owns(shifted / MARKER_FILE)


def test_command_line_builds_the_same_cases(shifted, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--shifted", "--tiny", "--train", "1", "--workers", "1"]) == 0
    assert "shifted-scanner phantom test set ready" in capsys.readouterr().out
    assert list_cases(out) == ["PHANTOM_001"]
    for sub in ("imagesTr", "labelsTr"):
        a = np.asarray(nib.load(out / sub / "PHANTOM_001.nii.gz").dataobj)
        b = np.asarray(nib.load(shifted / sub / "PHANTOM_001.nii.gz").dataobj)
        np.testing.assert_array_equal(a, b, err_msg=f"{sub}: deterministic by seed")


def test_refuses_to_overwrite_a_folder_it_did_not_write(tmp_path):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("my thesis")
    with pytest.raises(FileExistsError, match="not empty and is not a phantom"):
        make_phantom_dataset(precious, 1, 0, TINY_SHAPE, SHIFTED_SEED, progress=False, scanner="shifted")
    assert main(["--out", str(precious), "--shifted", "--tiny", "--train", "1"]) == 2
    assert sorted(p.name for p in precious.iterdir()) == ["notes.txt"]
    assert (precious / "notes.txt").read_text() == "my thesis"
    with pytest.raises(ValueError, match="scanner must be one of training, shifted"):
        make_phantom_dataset(tmp_path / "x", 1, 0, TINY_SHAPE, scanner="other")


def test_a_training_phantom_is_never_turned_into_a_shifted_set(phantom_root, shifted, tmp_path, capsys):
    before = snapshot(phantom_root)
    with pytest.raises(FileExistsError, match="made with the training scanner model, not the shifted one"):
        make_phantom_dataset(phantom_root, 5, 1, TINY_SHAPE, 7, progress=False, scanner="shifted")
    assert main(["--out", str(phantom_root), "--shifted", "--tiny", "--train", "5", "--test", "1", "--seed", "7"]) == 2
    assert "training scanner model" in capsys.readouterr().err
    assert snapshot(phantom_root) == before
    shifted_before = snapshot(shifted)
    with pytest.raises(FileExistsError, match="made with the shifted scanner model, not the training one"):
        make_phantom_dataset(shifted, 2, 0, TINY_SHAPE, SHIFTED_SEED, progress=False)  # same numbers, other kind
    assert snapshot(shifted) == shifted_before
