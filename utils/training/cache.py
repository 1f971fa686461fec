"""A preprocessed training cache: crop, standardize, store once, memory-map forever.

Decoding a 240x240x155x4 ``.nii.gz`` takes about a second; a training run
draws thousands of patches. So each case is preprocessed once:

1. cropped to the bounding box of its brain (nonzero in any channel) plus a margin;
2. standardized over the brain (:func:`utils.preprocessing.transforms.standardize_nonzero`);
3. stored as ``<case>_image.npy`` (float16) and ``<case>_label.npy`` (uint8),
   which ``np.load(mmap_mode="r")`` maps without reading;
4. listed in ``manifest.json`` with its shape, crop box, spacing and class
   voxel counts, beside ``<case>_locations.npz``: up to
   :data:`MAX_LOCATIONS` voxel coordinates per tumour class, for foreground
   oversampling without scanning the label.

Each case is written atomically and the manifest after each case, so an
interrupted build resumes where it stopped. The manifest records the
preprocessing parameters and, for each case, the size and mtime of the
dataset files it came from: a cache built with other parameters is rebuilt,
a case whose files changed is redone, never silently reused. Values are
checked when a case is built (a brain, finite intensities, labels 0-3) and
file sizes when the cache is opened (a truncated file is named).

The folder's ownership marker (:mod:`utils.safety`) lists every file the
build wrote; a rebuild deletes only those, never a folder's other files.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm  # text, not tqdm.auto's widget: a stored notebook or its HTML export keeps the line

from ..data.datasets import list_cases, load_case
from ..errors import CourseError
from ..parallel import default_workers, map_in_processes
from ..preprocessing.crop import CROP_MARGIN, brain_bbox
from ..preprocessing.transforms import DEFAULT_INTENSITY, INTENSITY_SCHEMES
from ..safety import (
    BOOKKEEPING,
    OwnedFiles,
    UnsafeWriteError,
    adopt_files,
    atomic_path,
    check_writable,
    folder_lock,
    read_json_object,
    stale_temporaries,
    write_json_atomic,
)

CACHE_VERSION = 2
MANIFEST = "manifest.json"
TOOL = "utils.cache"
FILE_KINDS = ("image", "label", "locations")
MAX_LOCATIONS = 10_000
CACHE_LOCK_WAIT = 3600.0
"""Seconds a build waits for another process building the same cache (then it finds the cases done)."""
PARALLEL_BYTES = 64 << 20
"""Dataset bytes to build from above which :func:`build_cache` uses several processes by default."""


@dataclass(frozen=True)
class CacheParams:
    """Everything that changes what the cache holds.

    Attributes:
        margin: voxels kept around the brain's bounding box.
        intensity: the intensity scheme, a key of
            :data:`utils.preprocessing.transforms.INTENSITY_SCHEMES` (the
            manifest stores it under its older name ``normalization``: see
            :meth:`stored`; the model's ``normalization`` is a layer).
        image_dtype: the stored images' dtype.
        version: :data:`CACHE_VERSION`, so a format change rebuilds old caches.
    """

    margin: int = CROP_MARGIN
    intensity: str = DEFAULT_INTENSITY
    image_dtype: str = "float16"
    version: int = CACHE_VERSION

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITY_SCHEMES:
            raise ValueError(f"intensity must be one of {sorted(INTENSITY_SCHEMES)}; found {self.intensity!r}")

    def stored(self) -> dict:
        """The parameters as a manifest records them (caches built before the rename still match)."""
        values = asdict(self)
        values["normalization"] = values.pop("intensity")
        return values


class CacheError(CourseError, RuntimeError):
    """The cache is unusable (missing case, wrong parameters)."""


def _dataset_fingerprint(dataset_root: Path) -> str:
    meta = dataset_root / "dataset.json"
    text = meta.read_bytes() if meta.is_file() else str(sorted(p.name for p in dataset_root.iterdir())).encode()
    return hashlib.sha1(text).hexdigest()[:12]


def _source_stats(paths) -> dict[str, list[int]]:
    """``{path: [size, mtime_ns]}`` of the dataset files a case was built from."""
    out = {}
    for path in paths:
        st = os.stat(path)
        out[str(Path(path).resolve())] = [st.st_size, st.st_mtime_ns]
    return out


def _source_changed(entry: dict) -> bool:
    source = entry.get("source")
    if not isinstance(source, dict) or not source:
        return True
    try:
        return _source_stats(source) != source
    except OSError:
        return True


def _read_manifest(path: Path) -> dict:
    """The manifest of a course cache.

    Raises:
        CacheError: it is not JSON, not an object, or not a cache manifest.
    """
    try:
        manifest = read_json_object(path, "cache manifest")
    except UnsafeWriteError as err:
        raise CacheError(f"{err}; the cache is corrupt") from err
    if not (isinstance(manifest.get("params"), dict) and isinstance(manifest.get("cases"), list)):
        raise CacheError(f"{path} is not a training-cache manifest (no 'params' and 'cases')")
    return manifest


def _entry_problem(folder: Path, entry: dict) -> str | None:
    """Why the cached files of ``entry`` are unusable (None when they are complete)."""
    sizes = entry.get("bytes") or {}
    for kind in FILE_KINDS:
        name = entry.get(kind)
        if not isinstance(name, str):
            return f"the manifest entry has no {kind} file"
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if kind in sizes and path.stat().st_size != sizes[kind]:
            return f"{path} is truncated or damaged ({path.stat().st_size} bytes, expected {sizes[kind]})"
    return None


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
        self.manifest = _read_manifest(path)
        self.cases = {c["case_id"]: c for c in self.manifest["cases"] if isinstance(c, dict) and "case_id" in c}
        for entry in self.cases.values():
            problem = _entry_problem(self.folder, entry)
            if problem:
                raise CacheError(f"cache case {entry['case_id']}: {problem}; run build_cache() again to redo it")

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

    def voxels(self, case_id: str) -> dict[int, int]:
        """Voxels of each tumour class (1, 2, 3) in the case's label."""
        return {int(k): int(v) for k, v in self._entry(case_id)["voxels"].items()}

    def _entry(self, case_id: str) -> dict:
        if case_id not in self.cases:
            raise CacheError(f"case {case_id!r} is not in the cache {self.folder}")
        return self.cases[case_id]


def _source_bytes(dataset_root: Path, case_ids: list[str]) -> int:
    """Estimated bytes of the dataset files of ``case_ids`` (the dataset's NIfTI bytes per case)."""
    total = sum(p.stat().st_size for p in dataset_root.rglob("*.nii*") if p.is_file())
    return total * len(case_ids) // max(len(list_cases(dataset_root)), 1)


def _build_case(task: tuple) -> dict:
    """Preprocess one case and write its files atomically (in a worker process); return its manifest entry."""
    dataset_root, cache_dir, case_id, names, params, seed = task
    case = load_case(dataset_root, case_id)
    where = case.image_paths[0] if case.image_paths else dataset_root
    if case.label is None:
        raise CacheError(f"case {case_id} has no label; the training cache needs labelled cases")
    if not np.any(case.image):
        raise CacheError(f"case {case_id}: the image is all zero (no brain to crop or standardize): {where}")
    box = brain_bbox(case.image, params.margin)
    window = tuple(slice(a, b) for a, b in box)
    image = INTENSITY_SCHEMES[params.intensity](case.image[window]).astype(params.image_dtype)
    label = np.ascontiguousarray(case.label[window])
    if not np.all(np.isfinite(image)):
        raise CacheError(
            f"case {case_id}: standardization gave NaN/Inf (a channel without contrast "
            f"or out of {params.image_dtype} range?): {where}"
        )
    if label.size and int(label.max()) > 3:
        raise CacheError(f"case {case_id}: label values must be 0-3; found {int(label.max())}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, int(hashlib.sha1(case_id.encode()).hexdigest()[:8], 16)]))
    entry = {
        "case_id": case_id,
        "shape": list(label.shape),
        "crop_box": [list(b) for b in box],
        "original_shape": list(case.label.shape),
        "spacing": list(case.spacing),
        "voxels": {str(k): int((label == k).sum()) for k in (1, 2, 3)},
        **names,
        "source": _source_stats([*case.image_paths, *([case.label_path] if case.label_path else [])]),
    }
    paths = [cache_dir / entry[kind] for kind in FILE_KINDS]
    for path, array in zip(paths[:2], (image, label)):
        with atomic_path(path) as tmp:
            np.save(tmp, array)
    with atomic_path(paths[2]) as tmp:
        np.savez(tmp, **class_locations(label, rng))
    entry["bytes"] = {kind: path.stat().st_size for kind, path in zip(FILE_KINDS, paths)}
    return entry


def build_cache(
    dataset_root: Path | str,
    cache_dir: Path | str,
    case_ids: list[str] | None = None,
    params: CacheParams = CacheParams(),
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
) -> TrainingCache:
    """Preprocess labelled cases into ``cache_dir`` (resumable, idempotent).

    Args:
        dataset_root: an MSD dataset (or a folder of BraTS cases).
        cache_dir: where the cache lives.
        case_ids: cases to include (default: every training case).
        params: preprocessing parameters; a cache with others is rebuilt.
        seed: seed of the class-location subsampling.
        progress: show a progress bar.
        workers: processes that build cases in parallel (default: up to 4,
            one per CPU, when the cases' files hold at least
            :data:`PARALLEL_BYTES`; below that one, as starting processes
            would cost more than it saves). The cache is the same whatever
            the number.

    Returns:
        The :class:`TrainingCache`.

    One build at a time per folder: the cache folder is locked for the build
    (:func:`utils.safety.folder_lock`); a second build waits up to
    :data:`CACHE_LOCK_WAIT` for the first and then reuses its cases.
    """
    dataset_root, cache_dir = Path(dataset_root), Path(cache_dir)
    if cache_dir.exists() and not cache_dir.is_dir():
        raise CacheError(f"the cache folder {cache_dir} is a file")
    _refuse_foreign(cache_dir)  # before the lock file is made there
    check_writable(cache_dir, "the training cache")
    with folder_lock(cache_dir, TOOL, wait=CACHE_LOCK_WAIT):
        return _build_cache(dataset_root, cache_dir, case_ids, params, seed, progress, workers)


def _refuse_foreign(cache_dir: Path) -> None:
    if (
        cache_dir.is_dir()
        and not (cache_dir / MANIFEST).is_file()
        and not OwnedFiles(cache_dir, TOOL).exists
        and any(p.name not in (".gitkeep", *BOOKKEEPING) for p in cache_dir.iterdir())
    ):
        raise CacheError(f"{cache_dir} is not empty and holds no cache manifest; choose another folder")


def _build_cache(
    dataset_root: Path,
    cache_dir: Path,
    case_ids: list[str] | None,
    params: CacheParams,
    seed: int,
    progress: bool,
    workers: int | None,
) -> TrainingCache:
    """:func:`build_cache` with the cache folder locked."""
    case_ids = list_cases(dataset_root) if case_ids is None else list(case_ids)
    expected = {
        "params": params.stored(),
        "dataset": str(dataset_root.resolve()),
        "dataset_fingerprint": _dataset_fingerprint(dataset_root),
        "seed": seed,
    }
    manifest_path = cache_dir / MANIFEST
    owned = OwnedFiles(cache_dir, TOOL, hashed=False)
    ours = owned.exists or manifest_path.is_file()
    manifest = None
    if manifest_path.is_file():
        try:
            manifest = _read_manifest(manifest_path)
        except CacheError as err:
            if not owned.exists:
                raise CacheError(
                    f"{err}; {cache_dir} is not a folder this course made, so nothing is deleted: choose another folder"
                ) from err
            print(f"{err}; rebuilding the cache in {cache_dir}")
        if manifest is not None and not owned.exists:
            if manifest.get("tool") not in (None, TOOL):
                raise CacheError(f"{manifest_path} was not written by {TOOL}; choose another folder")
            # a cache from before ownership markers: its manifest lists its files; only the names a
            # build gives its files are taken, so a forged manifest cannot hand over others
            names = [
                entry.get(kind)
                for entry in manifest["cases"]
                if isinstance(entry, dict)
                for kind, suffix in zip(FILE_KINDS, (".npy", ".npy", ".npz"))
                if entry.get(kind) == f"{entry.get('case_id')}_{kind}{suffix}" and "/" not in entry.get(kind)
            ]
            adopt_files(owned, [MANIFEST, *names])
        if manifest is not None and {k: manifest.get(k) for k in expected} != expected:
            old = {k: manifest.get(k) for k in expected if manifest.get(k) != expected[k]}
            print(f"cache {cache_dir} was built with other parameters {old}; rebuilding it")
            manifest = None
        if manifest is None:  # delete what the old build wrote, and only that
            for key in list(owned.files):
                if key != MANIFEST:
                    owned.remove(cache_dir / key, strict=False)
            owned.save()
    elif not ours:
        _refuse_foreign(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in stale_temporaries(cache_dir, owned.files):  # a killed build's temporary files of our files
        stale.unlink()
    if manifest is None:
        manifest = dict(expected, tool=TOOL, cases=[])
    owned.claim(manifest_path, strict=False)  # a listed file in a folder we made, even if damaged
    write_json_atomic(manifest_path, manifest)
    owned.record(manifest_path)

    done, redo = set(), []
    for entry in manifest["cases"]:
        if _entry_problem(cache_dir, entry) is None and not _source_changed(entry):
            done.add(entry["case_id"])
        elif entry["case_id"] in case_ids:
            redo.append(entry["case_id"])
    if redo:
        print(
            f"cache {cache_dir}: redoing {len(redo)} case(s) whose dataset files changed or whose cache "
            f"files are damaged: {redo[:5]}{' ...' if len(redo) > 5 else ''}"
        )
    manifest["cases"] = [c for c in manifest["cases"] if c["case_id"] in done]
    todo = [c for c in case_ids if c not in done]
    names = {
        c: {kind: f"{c}_{kind}{suffix}" for kind, suffix in zip(FILE_KINDS, (".npy", ".npy", ".npz"))} for c in todo
    }
    # the names are reserved first, so files a killed build leaves behind are still provably ours
    owned.claim(*(cache_dir / name for c in todo for name in names[c].values()), strict=False)
    if workers is None:
        workers = default_workers(len(todo)) if _source_bytes(dataset_root, todo) >= PARALLEL_BYTES else 1
    tasks = [(dataset_root, cache_dir, c, names[c], params, seed) for c in todo]
    bar = tqdm(total=len(todo), desc="cache", unit="case", disable=not progress or not todo, file=sys.stdout)
    try:
        for entry in map_in_processes(_build_case, tasks, workers):
            paths = [cache_dir / entry[kind] for kind in FILE_KINDS]
            owned.record(*paths)
            manifest["cases"].append(entry)
            write_json_atomic(manifest_path, manifest)
            owned.record(manifest_path)
            bar.update()
    finally:
        bar.close()
    cache = TrainingCache(cache_dir)
    missing = sorted(set(case_ids) - set(cache.case_ids))
    if missing:
        raise CacheError(f"cases missing from the cache after building: {missing}")
    return cache
