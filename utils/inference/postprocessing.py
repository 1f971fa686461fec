"""BraTS post-processing of a predicted label map, and how a run chooses it on validation cases.

A network's label map has two kinds of cheap-to-fix errors that the BraTS
winners removed after prediction:

* small, scattered connected components (false positives far from the
  tumour, specks inside it): the BraTS 2023 winner removed, per region,
  components smaller than 250 / 150 / 100 voxels (WT / TC / ET) at 1 mm
  isotropic, i.e. 250 / 150 / 100 mm^3 (:data:`BRATS2023_MIN_SIZES_MM3`). Sizes
  here are volumes, so a scan with other voxels gets the same physical
  threshold (:func:`min_voxels`);
* a few voxels of enhancing tumour in a case that has none: such a case
  scores ET Dice 0 instead of 1. nnU-Net (BraTS 2020) relabels a predicted
  enhancing tumour smaller in total than a threshold as tumour core
  (non-enhancing, label 2), so it stays in WT and TC (:func:`relabel_small_enhancing`).

Both thresholds, and whether to keep only the largest tumour
(:func:`keep_largest_component`, the course's earlier rule), are CHOSEN on
validation cases, never the held-out ones (:func:`choose_postprocessing`):
each candidate is applied to the validation predictions and the one with the
best mean region Dice wins (ties: the lighter touch). The choice is written
to the run folder (``postprocessing.json``, :func:`write_postprocessing`) and
the predict command applies it (:func:`read_postprocessing`);
:func:`utils.inference.predict.choose_for_run` predicts a run's validation
cases and makes the choice (``python -m utils.inference.predict --model M
--choose-postprocessing VALIDATION_DATASET``).

Removing a component from a region keeps the hierarchy: the voxels of a
removed TC component stay whole tumour (edema, 1), those of a removed ET
component stay core (non-enhancing, 2), those of a removed WT component
become background.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..config import msd_dir, phantom_dir
from ..data.labels import REGION_ORDER, REGIONS
from ..errors import CourseError
from ..evaluation.metrics import region_dice
from ..safety import read_json_object, write_json_atomic

POSTPROCESSING_FILE = "postprocessing.json"
TOOL = "utils.inference.postprocessing"
BRATS2023_MIN_SIZES_MM3 = {"WT": 250.0, "TC": 150.0, "ET": 100.0}
"""Smallest component kept per region by the BraTS 2023 winner: 250 / 150 / 100 voxels at 1 mm (mm^3)."""
REMOVED_TO = {"WT": 0, "TC": 1, "ET": 2}
"""The label a voxel of a removed component of each region gets (the enclosing region's)."""
SIZE_SCALES = (0.0, 0.5, 1.0, 2.0, 4.0)
"""Candidate multiples of :data:`BRATS2023_MIN_SIZES_MM3` (0: no component removal)."""
ET_THRESHOLDS_MM3 = (0.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
"""Candidate totals (mm^3) below which a predicted enhancing tumour becomes core (0: never)."""
STRUCTURE = np.ones((3, 3, 3), bool)
"""26-connectivity: voxels touching by a corner belong to one component."""


class PostProcessingError(CourseError, ValueError):
    """A ``postprocessing.json`` that cannot be used, or validation cases that may not choose one."""


@dataclass(frozen=True)
class PostProcessing:
    """The post-processing of a run's label maps.

    Attributes:
        largest_component: keep only the largest connected tumour first.
        min_sizes_mm3: per region (WT, TC, ET), the smallest component kept,
            in mm^3 (0: keep every component).
        et_to_core_mm3: a predicted enhancing tumour smaller than this in total
            becomes tumour core (0: never).
    """

    largest_component: bool = False
    min_sizes_mm3: dict = field(default_factory=lambda: dict.fromkeys(REGION_ORDER, 0.0))
    et_to_core_mm3: float = 0.0

    def __post_init__(self) -> None:
        if set(self.min_sizes_mm3) != set(REGION_ORDER):
            raise PostProcessingError(
                f"min_sizes_mm3 needs the regions {REGION_ORDER}; found {sorted(self.min_sizes_mm3)}"
            )
        values = [*self.min_sizes_mm3.values(), self.et_to_core_mm3]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values):
            raise PostProcessingError(f"post-processing sizes must be finite and >= 0; found {values}")

    def apply(self, label: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
        """``label`` (MSD values 0-3) post-processed; ``spacing`` (mm) scales the sizes to voxels."""
        if self.largest_component:
            label = keep_largest_component(label)
        label = remove_small_components(label, self.min_sizes_mm3, spacing)
        return relabel_small_enhancing(label, self.et_to_core_mm3, spacing)

    def describe(self) -> str:
        """One line for people."""
        parts = ["largest tumour only"] if self.largest_component else []
        if any(self.min_sizes_mm3.values()):
            sizes = " / ".join(f"{self.min_sizes_mm3[r]:g}" for r in REGION_ORDER)
            parts.append(f"components below {sizes} mm^3 (WT / TC / ET) removed")
        if self.et_to_core_mm3:
            parts.append(f"enhancing tumour under {self.et_to_core_mm3:g} mm^3 relabelled core")
        return "; ".join(parts) or "none"


NONE = PostProcessing()
"""No post-processing."""


def min_voxels(size_mm3: float, spacing=(1.0, 1.0, 1.0)) -> int:
    """The number of voxels of ``spacing`` (mm) that make up at least ``size_mm3`` mm^3."""
    return math.ceil(float(size_mm3) / float(np.prod(spacing)) - 1e-9) if size_mm3 > 0 else 0


def keep_largest_component(label: np.ndarray) -> np.ndarray:
    """Keep the largest connected tumour (labels > 0, 26-connected); zero the rest.

    nnU-Net's most common post-processing: a glioma is one connected lesion,
    so small far-away false positives are dropped.
    """
    components, count = ndimage.label(label > 0, structure=np.ones((3,) * label.ndim))
    if count <= 1:
        return label
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return np.where(components == sizes.argmax(), label, 0).astype(label.dtype)


def remove_small_components(label: np.ndarray, min_sizes_mm3: dict, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Remove, region by region (WT, then TC, then ET), the components smaller than its size.

    Args:
        label: MSD label map 0-3 ``(x, y, z)``.
        min_sizes_mm3: ``{"WT": mm^3, "TC": ..., "ET": ...}``; 0 keeps every component.
        spacing: voxel size in mm: a size of ``v`` mm^3 is ``ceil(v / prod(spacing))`` voxels.

    Returns:
        A new label map; a removed component's voxels get the label of the
        enclosing region (:data:`REMOVED_TO`).
    """
    label = np.array(label, copy=True)
    for region in REGION_ORDER:
        limit = min_voxels(min_sizes_mm3.get(region, 0.0), spacing)
        if limit <= 1:
            continue
        components, count = ndimage.label(np.isin(label, REGIONS[region]), structure=STRUCTURE)
        if not count:
            continue
        sizes = np.bincount(components.ravel())
        small = np.flatnonzero(sizes < limit)
        small = small[small > 0]
        if len(small):
            label[np.isin(components, small)] = REMOVED_TO[region]
    return label


def relabel_small_enhancing(label: np.ndarray, threshold_mm3: float, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """nnU-Net's BraTS rule: an enhancing tumour (3) smaller in total than ``threshold_mm3`` becomes core (2)."""
    limit = min_voxels(threshold_mm3, spacing)
    enhancing = label == 3
    count = int(enhancing.sum())
    if not count or count >= limit:
        return label
    return np.where(enhancing, np.uint8(2), label).astype(label.dtype)


def _mean_region_dice(cases, post: PostProcessing) -> float:
    scores = [region_dice(truth, post.apply(pred, spacing)) for truth, pred, spacing in cases]
    return float(np.mean([[s[r] for r in REGION_ORDER] for s in scores]))


def choose_postprocessing(cases, size_scales=SIZE_SCALES, et_thresholds_mm3=ET_THRESHOLDS_MM3, tolerance=1e-4):
    """Choose the post-processing that scores best on validation cases (greedy, as nnU-Net does).

    Three steps, each keeping the best so far: keep the largest tumour or
    not; then the multiple of the BraTS 2023 component sizes; then the
    enhancing-to-core threshold. A candidate replaces the current choice only
    if it raises the mean region Dice (WT, TC, ET over the cases) by more
    than ``tolerance``: on a tie the lighter touch stays.

    Args:
        cases: ``[(truth_label, predicted_label, spacing)]`` of VALIDATION cases
            (the raw label maps of the network, before any post-processing).
        size_scales: multiples of :data:`BRATS2023_MIN_SIZES_MM3` to try.
        et_thresholds_mm3: enhancing-to-core thresholds to try.
        tolerance: the gain a heavier candidate needs.

    Returns:
        ``(choice, trials)``: the :class:`PostProcessing` and one dict per
        candidate tried (its settings and mean region Dice).
    """
    cases = list(cases)
    if not cases:
        raise PostProcessingError("choose_postprocessing needs at least one validation case")
    trials = []

    def score(post):
        value = _mean_region_dice(cases, post)
        trials.append({**asdict(post), "mean_region_dice": round(value, 5)})
        return value

    best, best_score = NONE, score(NONE)
    steps = (
        lambda post: [replace(post, largest_component=True)],
        lambda post: [
            replace(post, min_sizes_mm3={r: s * BRATS2023_MIN_SIZES_MM3[r] for r in REGION_ORDER})
            for s in size_scales
            if s > 0
        ],
        lambda post: [replace(post, et_to_core_mm3=float(t)) for t in et_thresholds_mm3 if t > 0],
    )
    for candidates in steps:
        for candidate in candidates(best):
            value = score(candidate)
            if value > best_score + tolerance:
                best, best_score = candidate, value
    return best, trials


def write_postprocessing(run_folder: Path | str, choice: PostProcessing, chosen_on: dict, trials: list) -> Path:
    """Record ``choice`` in ``run_folder/postprocessing.json`` (atomically), with what it was chosen on.

    Refuses to replace a ``postprocessing.json`` this module did not write.
    """
    path = Path(run_folder) / POSTPROCESSING_FILE
    if path.exists():
        old = read_json_object(path, "post-processing choice")
        if old.get("tool") != TOOL:
            raise PostProcessingError(f"refusing to replace {path}: {TOOL} did not write it")
    write_json_atomic(path, {"tool": TOOL, **asdict(choice), "chosen_on": chosen_on, "trials": trials})
    return path


def read_postprocessing(run_folder: Path | str) -> PostProcessing | None:
    """The post-processing recorded in ``run_folder`` (None when it has no ``postprocessing.json``)."""
    path = Path(run_folder) / POSTPROCESSING_FILE
    if not path.is_file():
        return None
    try:
        data = read_json_object(path, "post-processing choice")
        return PostProcessing(
            largest_component=bool(data["largest_component"]),
            min_sizes_mm3={r: float(data["min_sizes_mm3"][r]) for r in REGION_ORDER},
            et_to_core_mm3=float(data["et_to_core_mm3"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise PostProcessingError(f"{path} is not a post-processing choice: {err}") from None


def run_dataset_folder(plan) -> Path | None:
    """The dataset folder a run's ``plan.json`` names (None when it names none); builds nothing."""
    if not plan.dataset:
        return None
    if plan.dataset == "phantom":
        return phantom_dir(plan.mode).resolve()
    if plan.dataset == "msd":
        return msd_dir().resolve()
    return Path(plan.dataset).expanduser().resolve()


def check_validation_cases(plan, data_dir: Path | str, case_ids) -> None:
    """Refuse to choose post-processing on cases of the run's own dataset that it trained or is judged on.

    The run's ``validation_cases`` are the course's held-out cases (lessons 05-07 score them): a choice
    made on them would flatter the held-out scores. Its ``train_cases`` the network has seen.
    Validation cases for post-processing come from another dataset folder (e.g. a phantom built with
    another seed).

    Raises:
        PostProcessingError: a case is held-out or a training case of the run.
    """
    if plan is None:
        return
    own = run_dataset_folder(plan)
    if own is None or Path(data_dir).expanduser().resolve() != own:
        return
    held_out = sorted(set(case_ids) & set(plan.validation_cases))
    seen = sorted(set(case_ids) & set(plan.train_cases))
    if held_out or seen:
        raise PostProcessingError(
            f"refusing to choose post-processing on {held_out + seen} of {data_dir}: "
            + (f"{held_out} are the run's held-out cases" if held_out else f"{seen} are its training cases")
            + "; use labelled cases it never saw and is not scored on (another dataset folder)"
        )
