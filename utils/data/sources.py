"""Where a course dataset comes from: the phantom (built on first use), the MSD download, or a folder.

:func:`get_dataset` is the one place that maps a dataset name to a folder. It
sits above the loaders (:mod:`utils.data.datasets`) and the phantom
(:mod:`utils.data.phantom`, which reads its template through the loaders), so
neither imports the other's way back.
"""

from __future__ import annotations

from pathlib import Path

from ..config import msd_dir
from .datasets import DatasetError, detect_layout

DATASETS = ("phantom", "phantom-shifted", "msd")


def get_dataset(name: str | Path = "phantom", mode: str | None = None) -> Path:
    """Return the folder of a course dataset, building the phantom if needed.

    Args:
        name: ``"phantom"`` (built from the MNI template, no download, sized by
            ``mode``), ``"phantom-shifted"`` (a test set of the same generator
            with every scanner setting outside the training ranges, built on
            first use), ``"msd"`` (the real Task01_BrainTumour data under
            the data root; lesson 05 downloads it), or the path of a dataset
            folder in any layout of :data:`LAYOUTS` (e.g. BraTS 2021 or the
            BraTS 2023 GLI training data).
        mode: the course mode whose phantom to use (``"ci"``, ``"cpu"``,
            ``"gpu"``; default :func:`utils.config.course_mode`). Training
            passes its config's mode, so ``--mode cpu`` on a GPU machine
            trains on the cpu phantom. Only the phantom depends on it.

    Raises:
        DatasetError: for ``"msd"`` when the data is not there yet, or for a
            path that is not a dataset in a known layout.
    """
    if name == "phantom":
        from .phantom import ensure_phantom  # lazy: nilearn's atlas tools load only when the phantom is asked for

        return ensure_phantom(mode)
    if name == "phantom-shifted":
        from .phantom import ensure_shifted_phantom

        return ensure_shifted_phantom(mode)
    if name == "msd":
        root = msd_dir()
        if not (root / "dataset.json").is_file():
            raise DatasetError(
                f"the MSD Task01_BrainTumour data was not found in {root}: download and extract "
                "Task01_BrainTumour.tar there (see data/README.md), or set COURSE_DATA_DIR "
                "to the folder that holds Task01_BrainTumour/"
            )
        return root
    path = Path(str(name)).expanduser()
    if isinstance(name, Path) or path.is_dir() or "/" in str(name) or "\\" in str(name):
        if not path.is_dir():
            raise DatasetError(f"dataset folder not found: {path}")
        detect_layout(path)  # raises, listing the known layouts, if it is none of them
        return path.resolve()
    raise ValueError(f"dataset must be one of {DATASETS} or the path of a dataset folder; found {name!r}")
