"""Loading MSD Task01 and BraTS 2020/2021 cases into one convention.

Both loaders return a :class:`Case`: the image ``(x, y, z, 4)`` float32 in the
MSD channel order (FLAIR, T1w, T1gd, T2w), the label ``(x, y, z)`` uint8 in the
MSD values (0 background, 1 edema, 2 non-enhancing, 3 enhancing), the affine
and the voxel size in mm. Loaders only read: nothing is written to the dataset.
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from .labels import LABEL_NAMES, MODALITIES, brats_to_msd

NIFTI_SUFFIXES = (".nii.gz", ".nii")
BRATS_SUFFIXES = {"FLAIR": "flair", "T1w": "t1", "T1gd": "t1ce", "T2w": "t2"}
"""BraTS file suffix for each channel, in the MSD channel order."""


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or not in the expected format."""


@dataclass
class Case:
    """One loaded case.

    Attributes:
        case_id: e.g. ``"BRATS_001"`` or ``"BraTS20_Training_001"``.
        image: float32 ``(x, y, z, 4)``, channels FLAIR, T1w, T1gd, T2w.
        label: uint8 ``(x, y, z)`` in MSD values, or None for unlabelled cases.
        affine: 4x4 voxel-to-world matrix of the image.
        spacing: voxel size in mm ``(sx, sy, sz)``.
        image_paths: the file(s) the image came from.
        label_path: the label file, if any.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    spacing: tuple[float, float, float]
    image_paths: tuple[Path, ...] = field(default_factory=tuple)
    label_path: Path | None = None

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 mL = 1000 mm^3)."""
        return float(np.prod(self.spacing)) / 1000.0


def is_hidden_file(path: Path | str) -> bool:
    """True for macOS resource forks (``._*``) and other dot files."""
    return Path(path).name.startswith(".")


def strip_nifti_suffix(name: str) -> str:
    """``"BRATS_001.nii.gz"`` -> ``"BRATS_001"``."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def load_nifti(path: Path | str, what: str = "image") -> nib.Nifti1Image:
    """Open a NIfTI file and check that its data can be read in full.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        what: what the file should hold, used in error messages.

    Returns:
        The nibabel image (data already read, so a truncated file fails here).

    Raises:
        DatasetError: if the file is missing, not NIfTI, or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} file not found: {path}")
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise DatasetError(f"expected a NIfTI {what} (.nii or .nii.gz); found {path.name!r} ({path})")
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise DatasetError(f"expected a NIfTI {what}; {path} is a {type(img).__name__}")
        np.asanyarray(img.dataobj)  # force the read: catches truncated archives
    except DatasetError:
        raise
    except (EOFError, zlib.error, OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise DatasetError(
            f"could not read {what} {path}: not a valid NIfTI file or truncated ({err})"
        ) from err
    return img


def _check_finite(data: np.ndarray, path: Path) -> None:
    bad = ~np.isfinite(data)
    if bad.any():
        raise DatasetError(
            f"expected finite intensities; found {int(bad.sum())} NaN/Inf voxels in {path}"
        )


def _check_label(label: np.ndarray, spatial_shape: tuple[int, ...], path: Path) -> np.ndarray:
    if label.shape != tuple(spatial_shape):
        raise DatasetError(
            f"label shape {label.shape} does not match image shape {tuple(spatial_shape)}: {path}"
        )
    if not np.all(np.isfinite(label)) or not np.all(label == np.round(label)):
        raise DatasetError(f"expected integer label values; found non-integers in {path}")
    values = np.unique(label)
    unexpected = sorted(set(values.astype(int).tolist()) - set(LABEL_NAMES))
    if unexpected:
        raise DatasetError(
            f"expected label values {sorted(LABEL_NAMES)}; found {unexpected} in {path}"
        )
    return label.astype(np.uint8)


def _spacing(img: nib.Nifti1Image) -> tuple[float, float, float]:
    return tuple(float(z) for z in img.header.get_zooms()[:3])


AFFINE_TOLERANCE_MM = 1e-3
"""Largest difference between two affines (mm) that still counts as the same grid."""


def check_same_grid(ref: nib.Nifti1Image, ref_what: str, img: nib.Nifti1Image, path: Path, what: str) -> None:
    """Refuse a file whose grid (spatial shape and affine) differs from the reference's.

    Args:
        ref, ref_what: the reference image (the case's image or FLAIR) and its name in messages.
        img, path, what: the file to check, its path and its name in messages.

    Raises:
        DatasetError: naming the file and how it differs (shape, flipped
            axis, shifted origin ...).
    """
    if tuple(img.shape[:3]) != tuple(ref.shape[:3]):
        raise DatasetError(f"{what} shape {tuple(img.shape[:3])} differs from {ref_what} shape "
                           f"{tuple(ref.shape[:3])}: {path}")
    diff = float(np.max(np.abs(img.affine - ref.affine)))
    if diff > AFFINE_TOLERANCE_MM:
        axes, ref_axes = "".join(nib.aff2axcodes(img.affine)), "".join(nib.aff2axcodes(ref.affine))
        how = f"orientation {axes} vs {ref_axes}" if axes != ref_axes else f"largest difference {diff:.3g} mm"
        raise DatasetError(f"{what} affine differs from the {ref_what} affine ({how}): {path}; image, label "
                           "and modalities must share one voxel grid")


# ----------------------------------------------------------------------------
# Medical Segmentation Decathlon layout
# ----------------------------------------------------------------------------

def read_dataset_json(root: Path | str) -> dict:
    """Read and check an MSD ``dataset.json``.

    Args:
        root: the dataset folder (holds ``dataset.json``, ``imagesTr/`` ...).

    Returns:
        The parsed dictionary with keys ``modality``, ``labels``, ``training``
        (list of ``{"image", "label"}`` relative paths) and ``test``.

    Raises:
        DatasetError: if the file is missing, not JSON, or lacks a key.
    """
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise DatasetError(
            f"dataset.json not found in {Path(root)}: expected the MSD Task01 layout "
            "(dataset.json, imagesTr/, labelsTr/, imagesTs/)"
        )
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise DatasetError(f"{path} should hold a JSON object; found a {type(meta).__name__}")
    missing = [key for key in ("modality", "labels", "training") if key not in meta]
    if missing:
        raise DatasetError(f"{path} lacks the key(s) {missing}")
    meta.setdefault("test", [])
    _check_dataset_types(meta, path)
    try:
        modalities = [meta["modality"][k] for k in sorted(meta["modality"], key=int)]
    except ValueError as err:
        raise DatasetError(f"{path}: 'modality' keys must be channel numbers '0'..'3'; found "
                           f"{list(meta['modality'])}") from err
    if [str(m).lower() for m in modalities] != [m.lower() for m in MODALITIES]:
        raise DatasetError(
            f"expected the {len(MODALITIES)} modalities {list(MODALITIES)} in this order in {path}; "
            f"found {modalities}"
        )
    return meta


def _check_dataset_types(meta: dict, path: Path) -> None:
    """Report a dataset.json field of the wrong JSON type, naming the field."""
    expected = {"modality": dict, "labels": dict, "training": list, "test": list}
    for key, kind in expected.items():
        if not isinstance(meta[key], kind):
            raise DatasetError(f"{path}: '{key}' should be a JSON {'object' if kind is dict else 'array'}; "
                               f"found {type(meta[key]).__name__} {str(meta[key])[:60]!r}")
    for i, entry in enumerate(meta["training"]):
        if not (isinstance(entry, dict) and isinstance(entry.get("image"), str)
                and isinstance(entry.get("label"), str)):
            raise DatasetError(f"{path}: training[{i}] should be an object with 'image' and 'label' paths; "
                               f"found {str(entry)[:80]!r}")
    for i, entry in enumerate(meta["test"]):
        if not (isinstance(entry, str) or (isinstance(entry, dict) and isinstance(entry.get("image"), str))):
            raise DatasetError(f"{path}: test[{i}] should be an image path; found {str(entry)[:80]!r}")


def _entry_id(entry: str) -> str:
    return strip_nifti_suffix(Path(entry).name)


def list_cases(root: Path | str, subset: str = "training") -> list[str]:
    """List the case ids of an MSD dataset (or of a BraTS folder of cases).

    Args:
        root: dataset folder.
        subset: ``"training"`` (labelled) or ``"test"`` (MSD only).

    Returns:
        Sorted case ids, macOS ``._*`` entries skipped.
    """
    root = Path(root)
    if detect_layout(root) == "brats":
        if subset != "training":
            raise DatasetError(f"a BraTS folder has no {subset!r} list: {root}")
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not is_hidden_file(p))
    meta = read_dataset_json(root)
    if subset == "training":
        entries = [e["image"] for e in meta["training"]]
    elif subset == "test":
        entries = [e if isinstance(e, str) else e["image"] for e in meta["test"]]
    else:
        raise ValueError(f"subset must be 'training' or 'test'; found {subset!r}")
    return sorted(_entry_id(e) for e in entries if not is_hidden_file(e))


def detect_layout(root: Path | str) -> str:
    """Return ``"msd"`` for a folder with ``dataset.json``, ``"brats"`` for a
    folder of BraTS case folders.

    Raises:
        DatasetError: if it is neither.
    """
    root = Path(root)
    if (root / "dataset.json").is_file():
        return "msd"
    if root.is_dir():
        for sub in root.iterdir():
            if sub.is_dir() and not is_hidden_file(sub) and _find_brats_file(sub, "flair"):
                return "brats"
    raise DatasetError(
        f"{root} is neither an MSD dataset (no dataset.json) nor a folder of BraTS cases "
        "(no sub-folder with a *_flair.nii(.gz) file)"
    )


def _find_msd_file(folder: Path, case_id: str) -> Path:
    for suffix in NIFTI_SUFFIXES:
        candidate = folder / f"{case_id}{suffix}"
        if candidate.is_file():
            return candidate
    raise DatasetError(f"case {case_id!r} not found: expected {folder / (case_id + '.nii.gz')}")


def load_msd_case(root: Path | str, case_id: str, subset: str = "training") -> Case:
    """Load one case of an MSD Task01 dataset.

    Args:
        root: dataset folder with ``dataset.json``, ``imagesTr/``, ``labelsTr/``.
        case_id: e.g. ``"BRATS_001"``.
        subset: ``"training"`` (image + label) or ``"test"`` (image only).

    Returns:
        A :class:`Case` in the shared convention.

    Raises:
        DatasetError: on a missing/unreadable file, an image that is not
            ``(x, y, z, 4)``, NaN/Inf intensities, or a bad label.
    """
    root = Path(root)
    read_dataset_json(root)
    images_dir = root / ("imagesTr" if subset == "training" else "imagesTs")
    image_path = _find_msd_file(images_dir, case_id)
    img = load_nifti(image_path, "image")
    if img.ndim != 4 or img.shape[3] != len(MODALITIES):
        raise DatasetError(
            f"expected a 4-D image (x, y, z, {len(MODALITIES)}) with channels {MODALITIES}; "
            f"found shape {img.shape} in {image_path}"
        )
    image = np.asarray(img.get_fdata(dtype=np.float32))
    _check_finite(image, image_path)
    label, label_path = None, None
    if subset == "training":
        label_path = _find_msd_file(root / "labelsTr", case_id)
        lab = load_nifti(label_path, "label")
        label = _check_label(np.asanyarray(lab.dataobj), image.shape[:3], label_path)
        check_same_grid(img, "image", lab, label_path, "label")
    return Case(case_id, image, label, img.affine.copy(), _spacing(img), (image_path,), label_path)


# ----------------------------------------------------------------------------
# BraTS 2020 / 2021 layout
# ----------------------------------------------------------------------------

def _find_brats_file(folder: Path, suffix: str) -> Path | None:
    for path in sorted(folder.iterdir()):
        if is_hidden_file(path):
            continue
        stem = strip_nifti_suffix(path.name)
        if stem != path.name and stem.lower().endswith(f"_{suffix}"):
            return path
    return None


def load_brats_case(folder: Path | str) -> Case:
    """Load one BraTS 2020/2021 case folder.

    The folder holds ``*_flair``, ``*_t1``, ``*_t1ce``, ``*_t2`` and (for
    training cases) ``*_seg`` files, ``.nii`` or ``.nii.gz``. Channels are
    stacked in the MSD order and labels mapped 2 -> 1, 1 -> 2, 4 -> 3.

    Args:
        folder: the case folder; its name is the case id.

    Returns:
        A :class:`Case` in the shared convention (label None without a seg file).

    Raises:
        DatasetError: on a missing/unreadable file, mismatched grids, NaN/Inf,
            or label values other than 0, 1, 2, 4.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"BraTS case folder not found: {folder}")
    paths, channels, ref = [], [], None
    for modality, suffix in BRATS_SUFFIXES.items():
        path = _find_brats_file(folder, suffix)
        if path is None:
            raise DatasetError(f"{modality} file not found: expected {folder}/*_{suffix}.nii.gz")
        img = load_nifti(path, f"{modality} image")
        if img.ndim != 3:
            raise DatasetError(f"expected a 3-D {modality} volume; found shape {img.shape} in {path}")
        if ref is None:
            ref = img
        else:
            check_same_grid(ref, "FLAIR", img, path, modality)
        data = np.asarray(img.get_fdata(dtype=np.float32))
        _check_finite(data, path)
        paths.append(path)
        channels.append(data)
    image = np.stack(channels, axis=-1)
    label, label_path = None, _find_brats_file(folder, "seg")
    if label_path is not None:
        seg = load_nifti(label_path, "segmentation")
        check_same_grid(ref, "FLAIR", seg, label_path, "segmentation")
        raw = np.asanyarray(seg.dataobj)
        if raw.shape != image.shape[:3]:
            raise DatasetError(
                f"label shape {raw.shape} does not match image shape {image.shape[:3]}: {label_path}"
            )
        if not np.all(raw == np.round(raw)):
            raise DatasetError(f"expected integer label values; found non-integers in {label_path}")
        try:
            label = brats_to_msd(raw)
        except ValueError as err:
            raise DatasetError(f"{err} in {label_path}") from err
    return Case(folder.name, image, label, ref.affine.copy(), _spacing(ref), tuple(paths), label_path)


# ----------------------------------------------------------------------------
# Either layout
# ----------------------------------------------------------------------------

def load_case(root: Path | str, case_id: str, subset: str = "training") -> Case:
    """Load ``case_id`` from an MSD dataset or a folder of BraTS cases."""
    root = Path(root)
    if detect_layout(root) == "brats":
        return load_brats_case(root / case_id)
    return load_msd_case(root, case_id, subset)


def load_label(root: Path | str, case_id: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Load only the label map of a training case (fast: no image is read).

    Returns:
        ``(label, spacing)``: uint8 ``(x, y, z)`` in MSD values and the voxel size.
    """
    root = Path(root)
    if detect_layout(root) == "brats":
        path = _find_brats_file(root / case_id, "seg")
        if path is None:
            raise DatasetError(f"segmentation not found: expected {root / case_id}/*_seg.nii.gz")
        img = load_nifti(path, "segmentation")
        flair = _find_brats_file(root / case_id, "flair")
        if flair is not None:  # the header only: no image data is read
            check_same_grid(nib.load(str(flair)), "FLAIR", img, path, "segmentation")
        try:
            return brats_to_msd(np.asanyarray(img.dataobj)), _spacing(img)
        except ValueError as err:
            raise DatasetError(f"{err} in {path}") from err
    path = _find_msd_file(root / "labelsTr", case_id)
    img = load_nifti(path, "label")
    image_path = _find_msd_file(root / "imagesTr", case_id)
    label = np.asanyarray(img.dataobj)
    check_same_grid(nib.load(str(image_path)), "image", img, path, "label")  # header only
    return _check_label(label, label.shape, path), _spacing(img)


DATASETS = ("phantom", "msd")


def get_dataset(name: str = "phantom") -> Path:
    """Return the folder of a course dataset, building the phantom if needed.

    Args:
        name: ``"phantom"`` (built from the MNI template, no download, sized by
            ``COURSE_MODE``) or ``"msd"`` (the real Task01_BrainTumour data under
            the data root; lesson 05 downloads it).

    Raises:
        DatasetError: for ``"msd"`` when the data is not there yet.
    """
    from .config import msd_dir

    if name == "phantom":
        from .phantom import ensure_phantom

        return ensure_phantom()
    if name == "msd":
        root = msd_dir()
        if not (root / "dataset.json").is_file():
            raise DatasetError(
                f"the MSD Task01_BrainTumour data was not found in {root}: download and extract "
                "Task01_BrainTumour.tar there (see data/README.md), or set COURSE_DATA_DIR "
                "to the folder that holds Task01_BrainTumour/"
            )
        return root
    raise ValueError(f"dataset must be one of {DATASETS}; found {name!r}")


def split_cases(
    case_ids: list[str], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split.

    Args:
        case_ids: the cases to split (order does not matter).
        val_fraction: share of cases for validation, in (0, 1).
        seed: the same seed and cases always give the same split.

    Returns:
        ``(train_ids, val_ids)``, each sorted; at least one case in each when
        there are two or more cases.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1); found {val_fraction}")
    ids = sorted(set(case_ids))
    if len(ids) < 2:
        raise ValueError(f"need at least 2 cases to split; found {len(ids)}")
    shuffled = ids[:]
    random.Random(seed).shuffle(shuffled)
    n_val = min(max(1, round(len(ids) * val_fraction)), len(ids) - 1)
    return sorted(shuffled[n_val:]), sorted(shuffled[:n_val])
