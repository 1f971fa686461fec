"""A preprocessed training cache: crop, standardize, store once, memory-map forever.

Decoding a 240x240x155x4 ``.nii.gz`` takes about a second; a training run
draws thousands of patches. So each case is preprocessed once:

1. cropped to the bounding box of its brain (nonzero in any channel) plus a margin;
2. standardized over the brain (:func:`utils.preprocessing.standardize_nonzero`);
3. stored as ``<case>_image.npy`` (float16) and ``<case>_label.npy`` (uint8),
   which ``np.load(mmap_mode="r")`` maps without reading;
4. listed in ``manifest.json`` with its shape, crop box, spacing and class
   voxel counts, beside ``<case>_locations.npz``: up to
   :data:`MAX_LOCATIONS` voxel coordinates per tumour class, for foreground
   oversampling without scanning the label.

Each case is written atomically and the manifest after each case, so an
interrupted build resumes where it stopped. The manifest records the
preprocessing parameters: a cache built with other parameters is rebuilt,
never silently reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .data import list_cases, load_case
from .preprocessing import standardize_nonzero

CACHE_VERSION = 1
MANIFEST = "manifest.json"
MAX_LOCATIONS = 10_000


@dataclass(frozen=True)
class CacheParams:
    """Everything that changes what the cache holds."""

    margin: int = 2
    normalization: str = "nonzero_zscore"
    image_dtype: str = "float16"
    version: int = CACHE_VERSION


class CacheError(RuntimeError):
    """The cache is unusable (missing case, wrong parameters)."""


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _dataset_fingerprint(dataset_root: Path) -> str:
    meta = dataset_root / "dataset.json"
    text = meta.read_bytes() if meta.is_file() else str(sorted(p.name for p in dataset_root.iterdir())).encode()
    return hashlib.sha1(text).hexdigest()[:12]


def brain_bbox(image: np.ndarray, margin: int = 0) -> tuple[tuple[int, int], ...]:
    """``((x0, x1), (y0, y1), (z0, z1))`` of the nonzero voxels, widened by ``margin``."""
    brain = np.any(image != 0, axis=-1)
    if not brain.any():
        return tuple((0, s) for s in image.shape[:3])
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(brain.any(axis=other))
        box.append((max(int(present[0]) - margin, 0), min(int(present[-1]) + 1 + margin, image.shape[axis])))
    return tuple(box)


def class_locations(label: np.ndarray, rng: np.random.Generator, limit: int = MAX_LOCATIONS) -> dict[str, np.ndarray]:
    """Up to ``limit`` voxel coordinates ``(n, 3)`` of each tumour class."""
    out = {}
    for k in (1, 2, 3):
        coords = np.argwhere(label == k).astype(np.int32)
        if len(coords) > limit:
            coords = coords[np.sort(rng.choice(len(coords), limit, replace=False))]
        out[f"class{k}"] = coords
    return out


class TrainingCache:
    """A built cache: the manifest and memory-mapped arrays of each case."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise CacheError(f"no cache manifest in {self.folder}; build it with build_cache()")
        self.manifest = json.loads(path.read_text())
        self.cases = {c["case_id"]: c for c in self.manifest["cases"]}

    @property
    def case_ids(self) -> list[str]:
        return sorted(self.cases)

    def image(self, case_id: str) -> np.ndarray:
        """float16 ``(x, y, z, 4)`` memory map of the standardized, cropped image."""
        return np.load(self.folder / self._entry(case_id)["image"], mmap_mode="r")

    def label(self, case_id: str) -> np.ndarray:
        """uint8 ``(x, y, z)`` memory map of the cropped label."""
        return np.load(self.folder / self._entry(case_id)["label"], mmap_mode="r")

    def locations(self, case_id: str) -> dict[str, np.ndarray]:
        """Sampled voxel coordinates of each tumour class (``class1`` ... ``class3``)."""
        with np.load(self.folder / self._entry(case_id)["locations"]) as data:
            return {k: data[k] for k in data.files}

    def _entry(self, case_id: str) -> dict:
        if case_id not in self.cases:
            raise CacheError(f"case {case_id!r} is not in the cache {self.folder}")
        return self.cases[case_id]


def build_cache(dataset_root: Path | str, cache_dir: Path | str, case_ids: list[str] | None = None,
                params: CacheParams = CacheParams(), seed: int = 0, progress: bool = True) -> TrainingCache:
    """Preprocess labelled cases into ``cache_dir`` (resumable, idempotent).

    Args:
        dataset_root: an MSD dataset (or a folder of BraTS cases).
        cache_dir: where the cache lives.
        case_ids: cases to include (default: every training case).
        params: preprocessing parameters; a cache with others is rebuilt.
        seed: seed of the class-location subsampling.
        progress: show a progress bar.

    Returns:
        The :class:`TrainingCache`.
    """
    from tqdm.auto import tqdm

    dataset_root, cache_dir = Path(dataset_root), Path(cache_dir)
    case_ids = list_cases(dataset_root) if case_ids is None else list(case_ids)
    expected = {"params": asdict(params), "dataset": str(dataset_root.resolve()),
                "dataset_fingerprint": _dataset_fingerprint(dataset_root), "seed": seed}
    manifest_path = cache_dir / MANIFEST
    manifest = None
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if {k: manifest.get(k) for k in expected} != expected:
            old = {k: manifest.get(k) for k in expected if manifest.get(k) != expected[k]}
            print(f"cache {cache_dir} was built with other parameters {old}; rebuilding it")
            shutil.rmtree(cache_dir)
            manifest = None
    elif cache_dir.exists() and any(cache_dir.iterdir()):
        raise CacheError(f"{cache_dir} is not empty and holds no cache manifest; choose another folder")
    cache_dir.mkdir(parents=True, exist_ok=True)
    if manifest is None:
        manifest = dict(expected, cases=[])
    done = {c["case_id"] for c in manifest["cases"]
            if all((cache_dir / c[k]).is_file() for k in ("image", "label", "locations"))}
    manifest["cases"] = [c for c in manifest["cases"] if c["case_id"] in done]
    todo = [c for c in case_ids if c not in done]
    for case_id in tqdm(todo, desc="cache", unit="case", disable=not progress or not todo):
        case = load_case(dataset_root, case_id)
        if case.label is None:
            raise CacheError(f"case {case_id} has no label; the training cache needs labelled cases")
        box = brain_bbox(case.image, params.margin)
        window = tuple(slice(a, b) for a, b in box)
        image = standardize_nonzero(case.image[window]).astype(params.image_dtype)
        label = np.ascontiguousarray(case.label[window])
        rng = np.random.default_rng(np.random.SeedSequence([seed, int(hashlib.sha1(case_id.encode()).hexdigest()[:8], 16)]))
        entry = {"case_id": case_id, "shape": list(label.shape), "crop_box": [list(b) for b in box],
                 "original_shape": list(case.label.shape), "spacing": list(case.spacing),
                 "voxels": {str(k): int((label == k).sum()) for k in (1, 2, 3)},
                 "image": f"{case_id}_image.npy", "label": f"{case_id}_label.npy",
                 "locations": f"{case_id}_locations.npz"}
        _save_npy_atomic(cache_dir / entry["image"], image)
        _save_npy_atomic(cache_dir / entry["label"], label)
        tmp = cache_dir / f".{case_id}_locations.tmp-{os.getpid()}.npz"
        np.savez(tmp, **class_locations(label, rng))
        os.replace(tmp, cache_dir / entry["locations"])
        manifest["cases"].append(entry)
        _write_json_atomic(manifest_path, manifest)
    if not manifest_path.is_file():
        _write_json_atomic(manifest_path, manifest)
    cache = TrainingCache(cache_dir)
    missing = sorted(set(case_ids) - set(cache.case_ids))
    if missing:
        raise CacheError(f"cases missing from the cache after building: {missing}")
    return cache
