"""The 2D route of the BraTS 2020 notebooks: BraTS-layout export, axial slice
sampling from the training cache, and slice-by-slice whole-volume prediction.

The bonus lesson 07 trains a 2D U-Net (the same builder, a 2-D input) on
axial slices and compares it with the 3D U-Net on the same held-out cases.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from keras.utils import PyDataset

from ..data.datasets import BRATS_SUFFIXES, list_cases, load_msd_case
from ..data.labels import msd_to_brats, one_hot
from ..inference.sliding_window import preprocess_for_model, probabilities_to_labels
from ..preprocessing.crop import CROP_MARGIN, brain_bbox
from ..safety import OwnedFiles, UnsafeWriteError, adopt_files, check_target, foreign_files, install_folder
from .cache import TrainingCache

EXPORT_MARKER = "brats_export.json"
TOOL = "utils.slices"


def export_brats(
    msd_root: Path | str,
    out_dir: Path | str,
    prefix: str = "BraTS20_Training",
    case_ids: list[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write labelled MSD-layout cases in the BraTS 2020 layout.

    One folder per case, ``<prefix>_NNN/<prefix>_NNN_{flair,t1,t1ce,t2,seg}.nii.gz``,
    each sequence a 3-D volume on the case's grid, the labels in the BraTS
    values (1 necrotic/non-enhancing core, 2 edema, 4 enhancing).

    Args:
        msd_root: an MSD-layout dataset (e.g. the phantom).
        out_dir: target folder (refused if it holds anything else, unless ``overwrite``).
        prefix: case folder prefix.
        case_ids: cases to export (default: every training case).
        overwrite: write into a non-empty folder that is not an export made
            here (its files are kept; only files an export wrote are replaced).

    Returns:
        ``out_dir``. ``brats_export.json`` there maps BraTS folders to MSD case ids.
    """
    msd_root, out_dir = Path(msd_root), Path(out_dir).expanduser().resolve()
    case_ids = list_cases(msd_root) if case_ids is None else list(case_ids)
    check_target(out_dir, "the BraTS export folder", input_dirs=[msd_root])
    if out_dir.exists() and not out_dir.is_dir():
        raise UnsafeWriteError(f"the BraTS export folder {out_dir} is a file, not a folder")
    owned = _export_ownership(out_dir) if out_dir.is_dir() else None
    foreign = foreign_files(out_dir, owned) if owned is not None else []
    if foreign and not owned.files and not overwrite:
        raise FileExistsError(
            f"{out_dir} is not empty and is not a BraTS export made here (it holds "
            f"{', '.join(foreign[:3])}); choose another folder or pass overwrite=True to "
            "write beside those files (they are never touched)"
        )
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        _write_export(msd_root, partial, prefix, case_ids)
        install_folder(partial, out_dir, TOOL, owned, last=EXPORT_MARKER)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out_dir


def _export_ownership(out_dir: Path) -> OwnedFiles:
    """The files of ``out_dir`` an export can prove it wrote (an export from before markers: the
    files its ``brats_export.json`` names)."""
    owned = OwnedFiles(out_dir, TOOL)
    marker = out_dir / EXPORT_MARKER
    if owned.exists or not marker.is_file():
        return owned
    try:
        cases = json.loads(marker.read_text()).get("cases")
    except (OSError, ValueError, AttributeError):
        return owned
    if not isinstance(cases, dict):
        return owned
    names = [EXPORT_MARKER] + [
        f"{n}/{n}_{s}.nii.gz" for n in cases if isinstance(n, str) for s in (*BRATS_SUFFIXES.values(), "seg")
    ]
    return adopt_files(owned, names)


def _write_export(msd_root: Path, partial: Path, prefix: str, case_ids: list[str]) -> None:
    mapping = {}
    for i, case_id in enumerate(case_ids, start=1):
        case = load_msd_case(msd_root, case_id)
        name = f"{prefix}_{i:03d}"
        folder = partial / name
        folder.mkdir()
        for channel, suffix in enumerate(BRATS_SUFFIXES.values()):
            img = nib.Nifti1Image(case.image[..., channel].astype(np.float32), case.affine)
            img.header.set_xyzt_units("mm", "sec")
            nib.save(img, folder / f"{name}_{suffix}.nii.gz")
        seg = nib.Nifti1Image(msd_to_brats(case.label), case.affine)
        nib.save(seg, folder / f"{name}_seg.nii.gz")
        mapping[name] = case_id
    (partial / EXPORT_MARKER).write_text(json.dumps({"source": str(msd_root.resolve()), "cases": mapping}, indent=1))


def fit_slice(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centre-crop or zero-pad the first two axes of ``array`` to ``shape``."""
    out = np.zeros((*shape, *array.shape[2:]), dtype=array.dtype)
    src, dst = [], []
    for size, target in zip(array.shape[:2], shape):
        if size >= target:
            start = (size - target) // 2
            src.append(slice(start, start + target))
            dst.append(slice(0, target))
        else:
            start = (target - size) // 2
            src.append(slice(0, size))
            dst.append(slice(start, start + size))
    out[tuple(dst)] = array[tuple(src)]
    return out


def unfit_slice(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Undo :func:`fit_slice`: back to the first two sizes ``shape`` (zeros where it cropped).

    Centre-padding undoes a centre-crop and the other way round, so this is
    :func:`fit_slice` towards the original size.
    """
    return fit_slice(array, shape)


class SliceSampler:
    """Axial slices from the training cache, mostly-empty ones skipped.

    A slice with tumour is always kept; a slice without tumour (or with
    fewer than ``min_tumour_voxels``) is kept with probability
    ``empty_keep_rate`` - the BraTS 2020 notebooks' way to balance the data.

    Args:
        cache: a :class:`utils.training.cache.TrainingCache`.
        case_ids: cases to draw from.
        slice_shape: ``(sx, sy)`` every slice is centre-cropped / padded to.
        empty_keep_rate: probability of keeping a slice without tumour, in [0, 1].
        min_tumour_voxels: fewer tumour voxels than this counts as empty.
        augment: random flips of both in-plane axes.
    """

    def __init__(
        self,
        cache: TrainingCache,
        case_ids: list[str],
        slice_shape=(160, 192),
        empty_keep_rate: float = 0.1,
        min_tumour_voxels: int = 1,
        augment: bool = True,
    ):
        if not 0.0 <= empty_keep_rate <= 1.0:
            raise ValueError(f"empty_keep_rate must be in [0, 1]; found {empty_keep_rate}")
        self.cache, self.case_ids = cache, list(case_ids)
        self.slice_shape = tuple(int(s) for s in slice_shape)
        self.empty_keep_rate, self.min_tumour_voxels, self.augment = empty_keep_rate, min_tumour_voxels, augment
        self._images = {c: cache.image(c) for c in self.case_ids}
        self._labels = {c: cache.label(c) for c in self.case_ids}
        self.tumour_slices, self.empty_slices = [], []
        for case_id in self.case_ids:
            label = self._labels[case_id]
            counts = (np.asarray(label) > 0).sum(axis=(0, 1))
            brain = np.asarray(self._images[case_id][..., 0] != 0).any(axis=(0, 1))
            for z in range(label.shape[2]):
                if counts[z] >= self.min_tumour_voxels:
                    self.tumour_slices.append((case_id, z))
                elif brain[z]:
                    self.empty_slices.append((case_id, z))

    def epoch_slices(self, rng: np.random.Generator) -> list[tuple[str, int]]:
        """The slices of one pass: every tumour slice and a random share of the others, shuffled."""
        keep = rng.random(len(self.empty_slices)) < self.empty_keep_rate
        chosen = self.tumour_slices + [s for s, k in zip(self.empty_slices, keep) if k]
        order = rng.permutation(len(chosen))
        return [chosen[i] for i in order]

    def slice(self, case_id: str, z: int, rng: np.random.Generator | None = None):
        """``X`` float32 ``(sx, sy, 4)`` and one-hot ``y`` float32 ``(sx, sy, 3)`` of one slice."""
        X = fit_slice(np.asarray(self._images[case_id][:, :, z], dtype=np.float32), self.slice_shape)
        lab = fit_slice(np.asarray(self._labels[case_id][:, :, z]), self.slice_shape)
        if self.augment and rng is not None:
            for axis in (0, 1):
                if rng.random() < 0.5:
                    X, lab = np.flip(X, axis), np.flip(lab, axis)
        y = one_hot(lab)
        return np.ascontiguousarray(X), y


class SliceDataset(PyDataset):
    """Batches of axial slices for ``model.fit``, deterministic by ``(seed, epoch)``."""

    def __init__(
        self,
        sampler: SliceSampler,
        batch_size: int,
        steps: int | None = None,
        seed: int = 0,
        fixed: bool = False,
        workers: int = 1,
    ):
        super().__init__(workers=workers, use_multiprocessing=False)
        self.sampler, self.batch_size, self.seed, self.fixed, self.epoch = sampler, batch_size, seed, fixed, 0
        self._order = None
        self._order_epoch = None
        n = len(self._slices())
        self.steps = steps if steps is not None else max(1, n // batch_size)

    def _slices(self):
        epoch = 0 if self.fixed else self.epoch
        if self._order_epoch != epoch:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))
            self._order, self._order_epoch = self.sampler.epoch_slices(rng), epoch
        return self._order

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int):
        if not 0 <= index < self.steps:
            raise IndexError(f"batch {index} out of range 0..{self.steps - 1}")
        slices = self._slices()
        epoch = 0 if self.fixed else self.epoch
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, index, 1]))
        picks = [slices[(index * self.batch_size + j) % len(slices)] for j in range(self.batch_size)]
        pairs = [self.sampler.slice(c, z, rng) for c, z in picks]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def on_epoch_end(self) -> None:
        if not self.fixed:
            self.epoch += 1


def predict_slices(model, image: np.ndarray, batch_size: int = 16, threshold=0.5, largest_component: bool = False):
    """Predict a raw case slice by slice with a 2D model.

    The case is cropped to its brain and standardized like the training cache,
    each axial slice is fitted to the model's input, predicted, and put back.

    Returns:
        ``(label, probabilities)`` on the case's grid.
    """
    shape2d = tuple(model.input.shape[1:3])
    box = brain_bbox(image, margin=CROP_MARGIN)
    window = tuple(slice(a, b) for a, b in box)
    cropped = preprocess_for_model(image[window])
    slices = np.stack([fit_slice(cropped[:, :, z], shape2d) for z in range(cropped.shape[2])])
    out = np.concatenate(
        [np.asarray(model.predict_on_batch(slices[i : i + batch_size])) for i in range(0, len(slices), batch_size)]
    )
    probs_crop = np.stack([unfit_slice(out[z], cropped.shape[:2]) for z in range(cropped.shape[2])], axis=2)
    probabilities = np.zeros((*image.shape[:3], probs_crop.shape[-1]), np.float32)
    probabilities[window] = probs_crop
    return probabilities_to_labels(probabilities, threshold, largest_component), probabilities
