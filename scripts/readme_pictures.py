"""The README's pictures, drawn by the course's own figure functions from a real trained run.

``python scripts/readme_pictures.py [--run RUN] [--data DATA] [--out docs/pictures]`` (``make pictures``)
reads a finished training run (``best.keras``, ``log.csv``, ``plan.json``) and the dataset it was trained
on, and writes three small PNG files:

* ``sequences.png``: the four MRI sequences of one validation case and its labels on FLAIR
  (:func:`utils.visualization.figures.show_sequences`);
* ``learning_curves.png``: the run's loss and validation Dice per class
  (:func:`utils.visualization.figures.plot_learning_curves`);
* ``prediction.png``: the whole-scan prediction of that case beside the truth, three planes
  (:func:`utils.inference.sliding_window.predict_case`, :func:`utils.visualization.figures.draw_slice`).

Defaults: the checkout's cpu run (``runs/cpu``, where ``make demo`` trains) and the dataset its
``plan.json`` names. The run and the data are only read. The pictures are drawn in a private folder
beside ``--out`` and installed with :func:`utils.safety.install_folder`: files of a previous run of
this script (listed in ``--out``'s ``.course-files.json``) are replaced, any other file is left alone,
and a name held by a file the script did not write is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's utils, run from anywhere

from utils.backend import quiet_start  # noqa: E402  (before Keras: no start-up log noise)

quiet_start()

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

TOOL = "scripts/readme_pictures.py"
NAMES = ("sequences.png", "learning_curves.png", "prediction.png")


def _save(fig, path: Path, dpi: int) -> Path:
    """Save ``fig`` as an RGB PNG, compressed as far as PNG goes without changing a colour."""
    fig.savefig(path, dpi=dpi, facecolor="white", bbox_inches="tight")
    plt.close(fig)
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    rgb.save(path, optimize=True)
    return path


def learning_curves(run: Path, out: Path, dpi: int) -> Path:
    from utils.visualization.figures import plot_learning_curves

    history = pd.read_csv(run / "log.csv")
    config = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
    best_epoch = int(history["val_pooled_dice"].idxmax()) + 1  # as lesson 05 marks best.keras
    fig = plot_learning_curves(history, config.get("loss", "loss"), best_epoch)
    fig.suptitle(f"training run {run.name}: {len(history)} epochs", y=1.02)
    return _save(fig, out / "learning_curves.png", dpi)


def sequences(case, out: Path, dpi: int) -> Path:
    from utils.visualization.figures import show_sequences

    fig = show_sequences(case.image, case.label, spacing=case.spacing)
    fig.suptitle(f"{case.case_id}: the four MRI sequences and the labels", y=1.02)
    return _save(fig, out / "sequences.png", dpi)


def prediction(case, model_path: Path, out: Path, dpi: int) -> tuple[Path, dict]:
    import utils
    from utils.evaluation.metrics import region_scores
    from utils.inference.sliding_window import predict_case
    from utils.preprocessing.plan import plan_for_model
    from utils.visualization.figures import AXIS_NAMES, draw_slice, label_legend, tumour_center

    model = utils.load_model(model_path, compile=False)
    plan = plan_for_model(model_path, quiet=True)
    predicted, _ = predict_case(model, case.image, largest_component=True, progress=False, plan=plan)
    scores = region_scores(case.label, predicted, case.spacing)
    centre = tumour_center(case.label, case.label.shape)
    fig, axes = plt.subplots(2, 3, figsize=(11, 7.4))
    for col, axis in enumerate((2, 1, 0)):
        for row, (label, what) in enumerate(((case.label, "truth"), (predicted, "prediction"))):
            draw_slice(axes[row, col], case.image[..., 0], axis, centre[axis], case.spacing, label)
            axes[row, col].set_title(f"{what}, {AXIS_NAMES[axis]} {centre[axis]}", fontsize=10)
            axes[row, col].set_axis_off()
    label_legend(axes[0, 2])
    dice = ", ".join(f"{region} {scores[f'Dice {region}']:.2f}" for region in ("WT", "TC", "ET"))
    fig.suptitle(f"{case.case_id}, whole scan predicted by {model_path.parent.name}/{model_path.name}: Dice {dice}")
    fig.tight_layout()
    return _save(fig, out / "prediction.png", dpi), scores


def build(run: Path, data: Path | None, out: Path, dpi: int = 72) -> list[Path]:
    """Draw the pictures of ``run`` (its first validation case from ``data``) and install them in ``out``."""
    from utils.data.datasets import load_case
    from utils.preprocessing.plan import read_plan
    from utils.safety import OwnedFiles, check_target, folder_lock, install_folder

    run, out = Path(run), Path(out)
    for name in ("best.keras", "log.csv", "plan.json"):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run} is not a finished training run: {name} is missing (train with `make demo`)")
    plan = read_plan(run)
    if data is None:
        from utils.data.sources import get_dataset

        data = get_dataset(plan.dataset, plan.mode)
    if not plan.validation_cases:
        raise ValueError(f"{run / 'plan.json'} lists no validation cases")
    case = load_case(Path(data), plan.validation_cases[0])
    check_target(out, "the pictures folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(out.parent, TOOL), tempfile.TemporaryDirectory(dir=out.parent, prefix=".pictures-") as tmp:
        owned = OwnedFiles(out, TOOL)
        for name in NAMES:  # refuse a file not ours before the slow part (install_folder checks again)
            owned.check_free(out / name, overwrite=True)
        staged = Path(tmp) / "pictures"
        staged.mkdir()
        sequences(case, staged, dpi)
        learning_curves(run, staged, dpi)
        _, scores = prediction(case, run / "best.keras", staged, dpi)
        install_folder(staged, out, TOOL, owned)
    print(f"{case.case_id}: Dice " + ", ".join(f"{r} {scores[f'Dice {r}']:.3f}" for r in ("WT", "TC", "ET")))
    return [out / name for name in NAMES]


def main(argv: list[str] | None = None) -> int:
    from utils.config import phantom_dir, run_dir
    from utils.safety import one_line

    parser = argparse.ArgumentParser(prog=TOOL, description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=None, help="training run folder (default: the cpu run)")
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: the cpu phantom)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: docs/pictures)")
    parser.add_argument("--dpi", type=int, default=72)
    args = parser.parse_args(argv)
    from utils.config import preset

    run = args.run or run_dir(preset("cpu"))
    data = args.data or (phantom_dir("cpu") if args.run is None else None)
    out = args.out or Path(__file__).resolve().parents[1] / "docs" / "pictures"
    try:
        paths = build(run, data, out, args.dpi)
    except (OSError, ValueError) as err:
        print(f"{TOOL}: {one_line(err)}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
