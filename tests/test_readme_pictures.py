"""scripts/readme_pictures.py (``make pictures``): the README's pictures from a trained run, written safely.

A tiny ci-mode run stands in for the cpu run the committed pictures come from; nothing here writes
into the checkout.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from utils.config import preset
from utils.data.labels import CLASS_COLORS
from utils.safety import OWNER_FILE, UnsafeWriteError
from utils.training.train import train

import readme_pictures


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, phantom_root):
    """A finished one-epoch ci run on the tests' tiny phantom: ``(run folder, data folder)``."""
    root = tmp_path_factory.mktemp("pictures")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COURSE_DATA_DIR", str(root / "data"))
        config = preset("ci", dataset=str(phantom_root), output_dir=str(root / "run"), epochs=1, verbose=0)
        train(config, progress=False)
    return root / "run", phantom_root


def _colour_pixels(path, colour) -> int:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    return int((np.abs(pixels - np.asarray(colour) * 255).max(axis=-1) <= 3).sum())


def test_pictures_in_the_course_colours_and_a_rerun_that_keeps_other_files(tiny_run, tmp_path, capsys):
    run, data = tiny_run
    before = {p: p.stat().st_mtime_ns for p in [*run.rglob("*"), *data.rglob("*")] if p.is_file()}
    out = tmp_path / "docs" / "pictures"
    paths = readme_pictures.build(run, data, out)
    assert [p.name for p in paths] == list(readme_pictures.NAMES)
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300
            assert np.asarray(image.convert("L")).std() > 10, f"{path.name} is blank"
        assert path.stat().st_size < 200_000, f"{path.name}: {path.stat().st_size} bytes"
    for name in ("sequences.png", "prediction.png"):
        counts = [_colour_pixels(out / name, colour) for colour in CLASS_COLORS]
        assert min(counts) > 0, f"{name}: pixels of edema, non-enhancing, enhancing {counts}"
    assert "Dice WT" in capsys.readouterr().out
    owned = json.loads((out / OWNER_FILE).read_text())["files"]
    assert set(readme_pictures.NAMES) <= set(owned), "the pictures are recorded as the script's own"
    after = {p: p.stat().st_mtime_ns for p in [*run.rglob("*"), *data.rglob("*")] if p.is_file()}
    assert before == after, "the run and the data are only read"

    # a second run: a picture edited by hand is refused (before any drawing), other files stay
    (out / "notes.md").write_text("mine")
    (out / "sequences.png").write_bytes(b"edited by hand")
    with pytest.raises(UnsafeWriteError, match="refusing to replace .*sequences.png"):
        readme_pictures.build(run, data, out)
    assert (out / "sequences.png").read_bytes() == b"edited by hand"
    (out / "sequences.png").unlink()
    old = (out / "prediction.png").stat().st_mtime_ns
    readme_pictures.build(run, data, out)
    assert (out / "notes.md").read_text() == "mine"
    assert (out / "sequences.png").stat().st_size > 1000 and (out / "prediction.png").stat().st_mtime_ns != old
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".pictures-")], "no staging folder left"


def test_an_unfinished_run_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    code = readme_pictures.main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "is not a finished training run: best.keras is missing" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
