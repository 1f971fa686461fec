"""Loading MSD Task01 and BraTS 2020/2021/2023+ cases into one convention.

Three layouts are known (:data:`LAYOUTS`; :func:`detect_layout` names the one
a folder holds):

* ``msd`` - the Medical Segmentation Decathlon Task01 folder (``dataset.json``,
  ``imagesTr/``, ``labelsTr/``, ``imagesTs/``; one 4-D image per case);
* ``brats`` - BraTS 2020/2021 case folders (``BraTS20_Training_001_flair.nii``,
  ``BraTS2021_00000_t1ce.nii.gz`` ...; labels 1/2/4), including the Kaggle copy
  of BraTS 2020 with its quirks (CSV files beside the cases, ``__MACOSX/``,
  case 355's label named ``W39_1998.09.19_Segm.nii``);
* ``brats2023`` - BraTS 2023+ case folders (``BraTS-GLI-00000-000-t2f.nii.gz``
  ...; labels 1/2/3), for the sub-challenges that share the glioma naming and
  labels (:data:`BRATS2023_PREFIXES`).

Every loader returns a :class:`Case`: the image ``(x, y, z, 4)`` float32 in the
MSD channel order (FLAIR, T1w, T1gd, T2w), the label ``(x, y, z)`` uint8 in the
MSD values (0 background, 1 edema, 2 non-enhancing, 3 enhancing), the affine
and the voxel size in mm. Loaders only read: nothing is written to the dataset.
"""

from __future__ import annotations

import gzip
import json
import random
import zlib
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ..errors import CourseError
from .labels import CLASS_NAMES, LABEL_NAMES, MODALITIES, brats2023_to_msd, brats_to_msd
from .statistics import label_volume_table

NIFTI_SUFFIXES = (".nii.gz", ".nii")
BRATS_SUFFIXES = {"FLAIR": "flair", "T1w": "t1", "T1gd": "t1ce", "T2w": "t2"}
"""BraTS 2020/2021 file suffix for each channel, in the MSD channel order."""
BRATS2023_SUFFIXES = {"FLAIR": "t2f", "T1w": "t1n", "T1gd": "t1c", "T2w": "t2w"}
"""BraTS 2023+ file suffix for each channel, in the MSD channel order."""

BRATS2023_PREFIXES = {
    "GLI": "adult glioma",
    "SSA": "glioma, sub-Saharan Africa",
    "MEN": "meningioma",
    "MET": "brain metastases",
}
"""BraTS 2023+ sub-challenges whose files share the glioma naming and labels
(1 NETC, 2 SNFH/edema, 3 ET), so the course loads them."""

BRATS2023_REFUSED_PREFIXES = {
    "PED": "the paediatric data changed its label values in 2024 (1 enhancing, 2 non-enhancing, "
    "3 cyst, 4 edema), so a file cannot say which convention it follows",
    "GoAT": "the generalisability data mixes tumour types and label conventions",
}
"""BraTS 2023+ sub-challenges the course refuses rather than mislabel, with the reason."""

KAGGLE_SEG_ALIAS = "_segm"
"""The Kaggle copy of BraTS 2020 names case 355's label ``W39_1998.09.19_Segm.nii``
instead of ``BraTS20_Training_355_seg.nii``: a label file whose name ends in
``_Segm`` is accepted when the case has no ``*_seg`` file."""

SKIPPED_FOLDERS = ("__MACOSX",)
"""Folders that are never cases (macOS archive metadata)."""


class DatasetError(CourseError, ValueError):
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


def nifti_data_bytes(header: nib.Nifti1Header) -> int:
    """Bytes of voxel data a NIfTI header declares: product of the data shape times the dtype's size."""
    count = 1
    for n in header.get_data_shape():
        count *= int(n)
    return count * header.get_data_dtype().itemsize


def _megabytes(n: int) -> str:
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n:,} bytes"


def _check_data_size(img: nib.Nifti1Image, path: Path, what: str, read: bool) -> None:
    """Refuse a file whose header declares more voxel data than the file holds or than the limit allows.

    Uncompressed files are compared with their size on disk. A ``.nii.gz`` is
    decompressed as a stream, 1 MB at a time, and never beyond
    :data:`utils.config.NIFTI_MAX_MB` (``read=False``: the header is checked,
    the stream is not read).
    """
    from .. import config  # the limit is read at each call, so a test or a notebook can lower it

    limit = int(config.NIFTI_MAX_MB) << 20
    header = img.header
    declared = nifti_data_bytes(header)
    offset = int(getattr(img.dataobj, "offset", header.get_data_offset()))  # where nibabel will read from
    shape, dtype = tuple(header.get_data_shape()), header.get_data_dtype()
    declares = f"its header declares {_megabytes(declared)} of voxel data (shape {shape}, {dtype})"
    if not path.name.endswith(".gz"):
        size = path.stat().st_size
        if offset + declared > size:
            raise DatasetError(
                f"could not read {what} {path}: truncated or not a valid NIfTI file ({declares}, but the "
                f"file holds {_megabytes(max(size - offset, 0))} after the header)"
            )
        if declared > limit:
            raise DatasetError(
                f"refusing to read {what} {path}: {declares}, more than the limit of {config.NIFTI_MAX_MB} MB "
                "(utils.config.NIFTI_MAX_MB)"
            )
        return
    if declared <= limit and not read:
        return
    need = offset + declared
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while total < need:
                block = stream.read(min(1 << 20, need - total, limit + 1 - total) or 1)
                if not block:
                    break
                total += len(block)
                if total > limit:
                    raise DatasetError(
                        f"refusing to read {what} {path}: it decompresses to more than {config.NIFTI_MAX_MB} MB "
                        f"(utils.config.NIFTI_MAX_MB; {declares})"
                    )
    except (EOFError, zlib.error, OSError) as err:
        raise DatasetError(f"could not read {what} {path}: not a valid NIfTI file or truncated ({err})") from err
    if total < need:
        raise DatasetError(
            f"could not read {what} {path}: truncated or not a valid NIfTI file ({declares}, but the "
            f"file decompresses to only {_megabytes(max(total - offset, 0))} after the header)"
        )


def check_geometry(img: nib.Nifti1Image, path: Path | str, what: str, ndim: tuple[int, ...] = (3, 4)) -> None:
    """Refuse a NIfTI whose voxel grid cannot be placed in space, before any work is done with it.

    Checked: ``ndim`` dimensions, each at least 1; a finite, invertible affine;
    positive, finite voxel sizes; and, when the header codes both a qform and
    an sform, that they place the volume's corners within one voxel of each
    other.

    Raises:
        DatasetError: naming the file and what is wrong with its geometry.
    """
    shape = tuple(int(n) for n in img.shape)
    if len(shape) not in ndim or min(shape, default=0) < 1:
        expected = " or ".join(f"{n}-D" for n in ndim)
        raise DatasetError(f"expected a {expected} {what}; found shape {shape} in {path}")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise DatasetError(
            f"the {what} {path} has no valid voxel-to-world matrix (its affine holds NaN or Inf): "
            "a file whose voxels cannot be placed in space is refused"
        )
    columns = np.linalg.norm(affine[:3, :3], axis=0)
    det = float(np.linalg.det(affine[:3, :3]))
    if np.any(columns == 0) or abs(det) <= 1e-6 * float(np.prod(columns)):
        raise DatasetError(
            f"the {what} {path} has a singular affine (determinant {det:.3g}: two voxel axes point the same "
            "way or one has length 0), so its voxels cannot be placed in space"
        )
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
    if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        raise DatasetError(f"expected positive voxel sizes in {what} {path}; found {tuple(zooms.tolist())}")
    sform, scode = img.header.get_sform(coded=True)
    qform, qcode = img.header.get_qform(coded=True)
    if scode and qcode:
        corners = np.array(
            [[i, j, k, 1] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
        )
        apart = (
            np.linalg.norm((corners @ sform.T - corners @ qform.T)[:, :3], axis=1)
            if np.all(np.isfinite(qform))
            else [np.inf]
        )
        if float(np.max(apart)) > float(np.max(columns)):
            raise DatasetError(
                f"the {what} {path} places its voxels in two different ways: its qform and sform disagree "
                f"by {float(np.max(apart)):.3g} mm at a corner of the volume (more than one voxel)"
            )


def read_nifti_header(path: Path | str, what: str = "image", ndim: tuple[int, ...] = (3, 4)) -> nib.Nifti1Image:
    """Open a NIfTI file for its header and grid only (no voxel data is read), checked as :func:`load_nifti` does."""
    return _open_nifti(Path(path), what, ndim, read=False)


def load_nifti(path: Path | str, what: str = "image", ndim: tuple[int, ...] = (3, 4)) -> nib.Nifti1Image:
    """Open a NIfTI file and check that its data can be read in full, within bounded memory.

    Every course command reads NIfTI through here (or :func:`read_nifti_header`).
    Before anything is allocated, the size the header declares is compared with
    the file (a ``.nii`` must hold it; a ``.nii.gz`` is decompressed as a stream
    and must reach it) and with :data:`utils.config.NIFTI_MAX_MB`; the geometry
    is checked by :func:`check_geometry`.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        what: what the file should hold, used in error messages.
        ndim: the number of dimensions allowed.

    Returns:
        The nibabel image (its data proven readable; read it with ``get_fdata`` or ``dataobj``).

    Raises:
        DatasetError: if the file is missing, not NIfTI, truncated, larger than
            the limit, or its geometry is broken; one line naming the file.
    """
    return _open_nifti(Path(path), what, ndim, read=True)


def _open_nifti(path: Path, what: str, ndim: tuple[int, ...], read: bool) -> nib.Nifti1Image:
    if not path.is_file():
        raise DatasetError(f"{what} file not found: {path}")
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise DatasetError(f"expected a NIfTI {what} (.nii or .nii.gz); found {path.name!r} ({path})")
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise DatasetError(f"expected a NIfTI {what}; {path} is a {type(img).__name__}")
        _check_data_size(img, path, what, read)
    except DatasetError:
        raise
    except (EOFError, zlib.error, OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise DatasetError(f"could not read {what} {path}: not a valid NIfTI file or truncated ({err})") from err
    except nib.spatialimages.HeaderDataError as err:
        raise DatasetError(f"could not read {what} {path}: its NIfTI header is not valid ({err})") from err
    check_geometry(img, path, what, ndim)
    return img


def _check_finite(data: np.ndarray, path: Path) -> None:
    bad = ~np.isfinite(data)
    if bad.any():
        raise DatasetError(f"expected finite intensities; found {int(bad.sum())} NaN/Inf voxels in {path}")


def check_label(label: np.ndarray, spatial_shape: tuple[int, ...], path: Path) -> np.ndarray:
    """``label`` as uint8 after checking its shape and values (0-3, integers); DatasetError naming ``path`` else."""
    if label.shape != tuple(spatial_shape):
        raise DatasetError(f"label shape {label.shape} does not match image shape {tuple(spatial_shape)}: {path}")
    if not np.all(np.isfinite(label)) or not np.all(label == np.round(label)):
        raise DatasetError(f"expected integer label values; found non-integers in {path}")
    values = np.unique(label)
    unexpected = sorted(set(values.astype(int).tolist()) - set(LABEL_NAMES))
    if unexpected:
        raise DatasetError(f"expected label values {sorted(LABEL_NAMES)}; found {unexpected} in {path}")
    return label.astype(np.uint8)


def voxel_spacing(img: nib.Nifti1Image) -> tuple[float, float, float]:
    """Voxel size in mm along x, y, z from a NIfTI header."""
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
        raise DatasetError(
            f"{what} shape {tuple(img.shape[:3])} differs from {ref_what} shape {tuple(ref.shape[:3])}: {path}"
        )
    diff = float(np.max(np.abs(img.affine - ref.affine)))
    if diff > AFFINE_TOLERANCE_MM:
        axes, ref_axes = "".join(nib.aff2axcodes(img.affine)), "".join(nib.aff2axcodes(ref.affine))
        how = f"orientation {axes} vs {ref_axes}" if axes != ref_axes else f"largest difference {diff:.3g} mm"
        raise DatasetError(
            f"{what} affine differs from the {ref_what} affine ({how}): {path}; image, label "
            "and modalities must share one voxel grid"
        )


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
        raise DatasetError(
            f"{path}: 'modality' keys must be channel numbers '0'..'3'; found {list(meta['modality'])}"
        ) from err
    if [str(m).lower() for m in modalities] != [m.lower() for m in MODALITIES]:
        raise DatasetError(
            f"expected the {len(MODALITIES)} modalities {list(MODALITIES)} in this order in {path}; found {modalities}"
        )
    return meta


def _check_dataset_types(meta: dict, path: Path) -> None:
    """Report a dataset.json field of the wrong JSON type, naming the field."""
    expected = {"modality": dict, "labels": dict, "training": list, "test": list}
    for key, kind in expected.items():
        if not isinstance(meta[key], kind):
            raise DatasetError(
                f"{path}: '{key}' should be a JSON {'object' if kind is dict else 'array'}; "
                f"found {type(meta[key]).__name__} {str(meta[key])[:60]!r}"
            )
    for i, entry in enumerate(meta["training"]):
        if not (
            isinstance(entry, dict) and isinstance(entry.get("image"), str) and isinstance(entry.get("label"), str)
        ):
            raise DatasetError(
                f"{path}: training[{i}] should be an object with 'image' and 'label' paths; found {str(entry)[:80]!r}"
            )
    for i, entry in enumerate(meta["test"]):
        if not (isinstance(entry, str) or (isinstance(entry, dict) and isinstance(entry.get("image"), str))):
            raise DatasetError(f"{path}: test[{i}] should be an image path; found {str(entry)[:80]!r}")


def _entry_id(entry: str) -> str:
    return strip_nifti_suffix(Path(entry).name)


# ----------------------------------------------------------------------------
# Which layout a folder holds
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseFolderLayout:
    """A layout with one folder per case and one file per modality.

    Attributes:
        name: the layout name :func:`detect_layout` returns.
        separator: the character before the suffix (``_`` or ``-``).
        suffixes: the file suffix of each channel, in the MSD channel order.
        label_suffix: the suffix of the label file.
        example: a FLAIR file name, for messages.
    """

    name: str
    separator: str
    suffixes: dict[str, str]
    label_suffix: str
    example: str

    def to_msd(self, raw: np.ndarray) -> np.ndarray:
        """Map this layout's label values to the MSD values."""
        return brats2023_to_msd(raw) if self.name == "brats2023" else brats_to_msd(raw)


BRATS_LAYOUT = CaseFolderLayout("brats", "_", BRATS_SUFFIXES, "seg", "BraTS20_Training_001_flair.nii")
BRATS2023_LAYOUT = CaseFolderLayout("brats2023", "-", BRATS2023_SUFFIXES, "seg", "BraTS-GLI-00000-000-t2f.nii.gz")
CASE_FOLDER_LAYOUTS = {layout.name: layout for layout in (BRATS_LAYOUT, BRATS2023_LAYOUT)}

LAYOUTS = {
    "msd": "MSD Task01: dataset.json, imagesTr/, labelsTr/, imagesTs/",
    "brats": "BraTS 2020/2021 case folders: <case>/<case>_{flair,t1,t1ce,t2,seg}.nii(.gz), labels 1/2/4 "
    "(also the Kaggle BraTS 2020 copy)",
    "brats2023": "BraTS 2023+ case folders: <case>/<case>-{t2f,t1n,t1c,t2w,seg}.nii.gz, labels 1/2/3, "
    f"prefixes {', '.join('BraTS-' + p for p in BRATS2023_PREFIXES)}",
}
"""Every layout the course loads, with what identifies it."""


def _is_skipped(path: Path) -> bool:
    return is_hidden_file(path) or path.name in SKIPPED_FOLDERS


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not _is_skipped(p) and p.name.endswith(NIFTI_SUFFIXES))


def _matching_files(folder: Path, layout: CaseFolderLayout, suffix: str) -> list[Path]:
    """The NIfTI files of ``folder`` whose name ends in ``<sep><suffix>.nii(.gz)``."""
    end = f"{layout.separator}{suffix}".lower()
    return [p for p in _nifti_files(folder) if strip_nifti_suffix(p.name).lower().endswith(end)]


def _one_file(folder: Path, layout: CaseFolderLayout, suffix: str, what: str) -> Path | None:
    """The single file of ``folder`` for ``suffix``; None if there is none.

    Raises:
        DatasetError: if two or more files match (both names are given).
    """
    found = _matching_files(folder, layout, suffix)
    if not found and suffix == layout.label_suffix and layout is BRATS_LAYOUT:
        found = [p for p in _nifti_files(folder) if strip_nifti_suffix(p.name).lower().endswith(KAGGLE_SEG_ALIAS)]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DatasetError(
            f"expected one {what} file (*{layout.separator}{suffix}.nii or .nii.gz) in {folder}; "
            f"found {len(found)}: {names}. Remove or rename the extra one(s)"
        )
    return found[0] if found else None


def _folder_layout(folder: Path) -> CaseFolderLayout | None:
    """The case-folder layout whose files ``folder`` holds, if any."""
    if not folder.is_dir() or _is_skipped(folder):
        return None
    names = [strip_nifti_suffix(p.name).lower() for p in _nifti_files(folder)]
    for layout in CASE_FOLDER_LAYOUTS.values():
        ends = [f"{layout.separator}{s}".lower() for s in (*layout.suffixes.values(), layout.label_suffix)]
        if any(name.endswith(end) for name in names for end in ends):
            return layout
    return None


def detect_layout(root: Path | str) -> str:
    """Name the layout of a dataset folder: a key of :data:`LAYOUTS`.

    ``msd`` for a folder with ``dataset.json``; ``brats`` or ``brats2023`` for
    a folder of case folders (``__MACOSX/``, hidden entries, CSV files and
    folders without NIfTI files of a case are ignored).

    Raises:
        DatasetError: if it is none of them (the message lists the layouts and
            what was looked for), or if case folders of two layouts are mixed.
    """
    root = Path(root)
    if (root / "dataset.json").is_file():
        return "msd"
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    found = {}
    for sub in sorted(root.iterdir()):
        layout = _folder_layout(sub)
        if layout is not None:
            found.setdefault(layout.name, sub.name)
    if len(found) > 1:
        raise DatasetError(
            f"{root} mixes case folders of two layouts ({', '.join(f'{k}: {v}' for k, v in found.items())}); "
            "keep one layout per dataset folder"
        )
    if found:
        return next(iter(found))
    known = "\n".join(f"  - {name}: {text}" for name, text in LAYOUTS.items())
    hint = ""
    nested = [
        sub.name
        for sub in sorted(root.iterdir())
        if sub.is_dir()
        and not _is_skipped(sub)
        and ((sub / "dataset.json").is_file() or any(_folder_layout(c) for c in sub.iterdir()))
    ]
    if nested:
        hint = f"\nThe dataset seems to be one level down: try {root / nested[0]}"
    raise DatasetError(
        f"{root} is not a dataset the course knows: no dataset.json, and no sub-folder holding "
        f"*_flair/_t1/_t1ce/_t2/_seg or *-t2f/-t1n/-t1c/-t2w/-seg .nii(.gz) files.\n"
        f"Known layouts:\n{known}{hint}"
    )


def list_cases(root: Path | str, subset: str = "training") -> list[str]:
    """List the case ids of a dataset in any known layout.

    Args:
        root: dataset folder.
        subset: ``"training"`` (labelled) or ``"test"`` (MSD only).

    Returns:
        Sorted case ids: macOS ``._*`` entries, ``__MACOSX/``, CSV files and
        folders that hold no case files are skipped.
    """
    root = Path(root)
    layout = detect_layout(root)
    if layout != "msd":
        if subset != "training":
            raise DatasetError(f"a {layout} folder of cases has no {subset!r} list: {root}")
        return sorted(sub.name for sub in root.iterdir() if _folder_layout(sub) is not None)
    meta = read_dataset_json(root)
    if subset == "training":
        entries = [e["image"] for e in meta["training"]]
    elif subset == "test":
        entries = [e if isinstance(e, str) else e["image"] for e in meta["test"]]
    else:
        raise ValueError(f"subset must be 'training' or 'test'; found {subset!r}")
    return sorted(_entry_id(e) for e in entries if not is_hidden_file(e))


def find_msd_file(folder: Path, case_id: str) -> Path:
    """``folder/<case_id>.nii.gz`` (or ``.nii``); DatasetError naming the expected path when absent."""
    for suffix in NIFTI_SUFFIXES:
        candidate = folder / f"{case_id}{suffix}"
        if candidate.is_file():
            return candidate
    raise DatasetError(f"case {case_id!r} not found: expected {folder / (case_id + '.nii.gz')}")


def load_msd_image(path: Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Read one MSD image file: the NIfTI and its float32 ``(x, y, z, 4)`` intensities.

    Raises:
        DatasetError: naming ``path`` when it is not 4-D with the four MSD channels or holds NaN/Inf.
    """
    img = load_nifti(path, "image")
    if img.ndim != 4 or img.shape[3] != len(MODALITIES):
        raise DatasetError(
            f"expected a 4-D image (x, y, z, {len(MODALITIES)}) with channels {MODALITIES}; "
            f"found shape {img.shape} in {path}"
        )
    image = np.asarray(img.get_fdata(dtype=np.float32))
    _check_finite(image, path)
    return img, image


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
    image_path = find_msd_file(images_dir, case_id)
    img, image = load_msd_image(image_path)
    label, label_path = None, None
    if subset == "training":
        label_path = find_msd_file(root / "labelsTr", case_id)
        lab = load_nifti(label_path, "label")
        label = check_label(np.asanyarray(lab.dataobj), image.shape[:3], label_path)
        check_same_grid(img, "image", lab, label_path, "label")
    return Case(case_id, image, label, img.affine.copy(), voxel_spacing(img), (image_path,), label_path)


# ----------------------------------------------------------------------------
# BraTS case folders (2020/2021 and 2023+)
# ----------------------------------------------------------------------------


def _brats2023_prefix_check(folder: Path, flair: Path) -> None:
    """Refuse BraTS 2023+ sub-challenges whose labels the course cannot map."""
    parts = strip_nifti_suffix(flair.name).split("-")
    prefix = parts[1] if len(parts) > 2 and parts[0].lower() == "brats" else ""
    if prefix in BRATS2023_REFUSED_PREFIXES:
        raise DatasetError(f"BraTS-{prefix} cases are not supported: {BRATS2023_REFUSED_PREFIXES[prefix]} ({folder})")
    if prefix not in BRATS2023_PREFIXES:
        known = ", ".join(f"BraTS-{p} ({text})" for p, text in BRATS2023_PREFIXES.items())
        raise DatasetError(
            f"expected a BraTS 2023+ file named BraTS-<prefix>-<id>-<timepoint>-t2f.nii.gz with prefix one of "
            f"{known}; found {flair.name} in {folder}"
        )


def _read_case_label(
    folder: Path, layout: CaseFolderLayout
) -> tuple[np.ndarray | None, Path | None, nib.Nifti1Image | None]:
    path = _one_file(folder, layout, layout.label_suffix, "segmentation")
    if path is None:
        return None, None, None
    img = load_nifti(path, "segmentation")
    raw = np.asanyarray(img.dataobj)
    if not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw)):
        raise DatasetError(f"expected integer label values; found non-integers in {path}")
    try:
        return layout.to_msd(raw), path, img
    except ValueError as err:
        raise DatasetError(f"{err} in {path}") from err


def load_brats_case(folder: Path | str) -> Case:
    """Load one BraTS case folder, 2020/2021 or 2023+ naming.

    2020/2021: ``*_flair``, ``*_t1``, ``*_t1ce``, ``*_t2`` and (training cases)
    ``*_seg``; labels 1/2/4 mapped 2 -> 1, 1 -> 2, 4 -> 3. 2023+:
    ``*-t2f``, ``*-t1n``, ``*-t1c``, ``*-t2w``, ``*-seg``; labels 1/2/3 mapped
    2 -> 1, 1 -> 2, 3 -> 3 (label 4, the resection cavity, is refused).
    ``.nii`` or ``.nii.gz``; channels stacked in the MSD order.

    Args:
        folder: the case folder; its name is the case id.

    Returns:
        A :class:`Case` in the shared convention (label None without a seg file).

    Raises:
        DatasetError: on a missing, doubled or unreadable file, mismatched
            grids, NaN/Inf, or label values outside the layout's.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"BraTS case folder not found: {folder}")
    layout = _folder_layout(folder)
    if layout is None:
        raise DatasetError(
            f"no BraTS case files in {folder}: expected e.g. {BRATS_LAYOUT.example} (2020/2021) "
            f"or {BRATS2023_LAYOUT.example} (2023+)"
        )
    paths, channels, ref = [], [], None
    for modality, suffix in layout.suffixes.items():
        path = _one_file(folder, layout, suffix, f"{modality} image")
        if path is None:
            raise DatasetError(f"{modality} file not found: expected {folder}/*{layout.separator}{suffix}.nii.gz")
        if layout is BRATS2023_LAYOUT and modality == "FLAIR":
            _brats2023_prefix_check(folder, path)
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
    label, label_path, seg = _read_case_label(folder, layout)
    if label is not None and label.shape != image.shape[:3]:
        raise DatasetError(f"label shape {label.shape} does not match image shape {image.shape[:3]}: {label_path}")
    if seg is not None:
        check_same_grid(ref, "FLAIR", seg, label_path, "segmentation")
    return Case(folder.name, image, label, ref.affine.copy(), voxel_spacing(ref), tuple(paths), label_path)


# ----------------------------------------------------------------------------
# Any layout
# ----------------------------------------------------------------------------


def load_case(root: Path | str, case_id: str, subset: str = "training") -> Case:
    """Load ``case_id`` from a dataset in any known layout (:data:`LAYOUTS`)."""
    root = Path(root)
    if not (root / "dataset.json").is_file():  # the case folder says which BraTS naming it uses
        if not (root / case_id).is_dir():
            detect_layout(root)  # not a dataset at all: the error lists the known layouts
        return load_brats_case(root / case_id)
    return load_msd_case(root, case_id, subset)


def load_label(root: Path | str, case_id: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Load only the label map of a training case (fast: no image is read).

    Returns:
        ``(label, spacing)``: uint8 ``(x, y, z)`` in MSD values and the voxel size.
    """
    root = Path(root)
    if not (root / "dataset.json").is_file():
        layout = _folder_layout(root / case_id)
        if layout is None:
            detect_layout(root)  # not a dataset at all: the error lists the known layouts
            raise DatasetError(f"case {case_id!r} not found: expected a case folder {root / case_id}")
        label, path, img = _read_case_label(root / case_id, layout)
        if label is None:
            raise DatasetError(
                f"segmentation not found: expected {root / case_id}/*{layout.separator}{layout.label_suffix}.nii.gz"
            )
        flair = _one_file(root / case_id, layout, layout.suffixes["FLAIR"], "FLAIR image")
        if flair is not None:  # the header only: no image data is read
            check_same_grid(read_nifti_header(flair, "FLAIR image"), "FLAIR", img, path, "segmentation")
        return label, voxel_spacing(img)
    path = find_msd_file(root / "labelsTr", case_id)
    img = load_nifti(path, "label")
    image_path = find_msd_file(root / "imagesTr", case_id)
    label = np.asanyarray(img.dataobj)
    check_same_grid(read_nifti_header(image_path), "image", img, path, "label")  # header only
    return check_label(label, label.shape, path), voxel_spacing(img)


MSD_FOLDERS = ("imagesTr", "labelsTr", "imagesTs")
"""The folders of an MSD dataset; prediction never writes into them."""


def load_input(path: Path):
    """``(case_id, image, reference NIfTI path, label or None, spacing, input files, input folders)``.

    ``path`` is an MSD 4-D file or a BraTS case folder. The input files (every
    modality and the label) and folders are what prediction must never write.
    """
    path = Path(path)
    if path.is_dir():
        case = load_brats_case(path)
        files = [*case.image_paths, *([case.label_path] if case.label_path else [])]
        return case.case_id, case.image, case.image_paths[0], case.label, case.spacing, files, [path]
    img, image = load_msd_image(path)
    dirs = []
    if path.parent.name in MSD_FOLDERS and (path.parent.parent / "dataset.json").is_file():
        dirs = [path.parent.parent / name for name in MSD_FOLDERS]  # an image of an MSD dataset
    return strip_nifti_suffix(path.name), image, path, None, voxel_spacing(img), [path], dirs


def split_cases(
    case_ids: list[str], val_fraction: float = 0.2, seed: int = 0, strata: Mapping[str, Hashable] | None = None
) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split, stratified when ``strata`` is given.

    Args:
        case_ids: the cases to split (order does not matter).
        val_fraction: share of cases for validation, in (0, 1).
        seed: the same seed and cases always give the same split.
        strata: a group for every case (e.g. whether it has enhancing
            tumour). Each group then gives validation cases in proportion to
            its size (largest remainder), so the held-out cases mix the groups
            as the data does; a random split of 16 cases can put three of four
            tumours without enhancing tumour among 6 held-out cases.

    Returns:
        ``(train_ids, val_ids)``, each sorted; at least one case in each when
        there are two or more cases.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1); found {val_fraction}")
    ids = sorted(set(case_ids))
    if len(ids) < 2:
        raise ValueError(f"need at least 2 cases to split; found {len(ids)}")
    n_val = min(max(1, round(len(ids) * val_fraction)), len(ids) - 1)
    if strata is None:
        shuffled = ids[:]
        random.Random(seed).shuffle(shuffled)
        return sorted(shuffled[n_val:]), sorted(shuffled[:n_val])
    missing = [c for c in ids if c not in strata]
    if missing:
        raise ValueError(f"strata must give a group for every case; missing {missing[:5]}")
    groups: dict[str, list[str]] = {}
    for c in ids:
        groups.setdefault(repr(strata[c]), []).append(c)
    quota = {g: len(members) * n_val / len(ids) for g, members in groups.items()}
    take = {g: int(q) for g, q in quota.items()}
    by_remainder = sorted(groups, key=lambda g: (-(quota[g] - take[g]), g))
    for g in by_remainder[: n_val - sum(take.values())]:
        take[g] += 1
    val: list[str] = []
    for g in sorted(groups):
        members = groups[g][:]
        random.Random(f"{seed}:{g}").shuffle(members)
        val += members[: take[g]]
    return sorted(set(ids) - set(val)), sorted(val)


def dataset_volume_table(root, case_ids: list[str] | None = None) -> pd.DataFrame:
    """One row per training case: volume in mL of each class and the whole tumour.

    Args:
        root: an MSD dataset or a folder of BraTS cases.
        case_ids: the cases to list (default: every training case).

    Returns:
        DataFrame indexed by case id, with ``mean`` and ``median`` rows after them.
    """
    case_ids = list_cases(root) if case_ids is None else case_ids
    rows = {}
    for case_id in case_ids:
        label, spacing = load_label(root, case_id)
        rows[case_id] = label_volume_table(label, spacing)["volume_mL"].iloc[:4].to_numpy()
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=[*CLASS_NAMES, "Whole tumour"])
    frame = pd.concat([frame, frame.agg(["mean", "median"]).round(2)])
    frame.index.name = "case"
    return frame
