"""Whole-scan prediction: sliding windows, Gaussian blending, mirroring, NIfTI export.

A network trained on 160x160x16 patches predicts a 240x240x155 scan window by
window. Windows overlap (50 % by default) and each window's prediction is
weighted by a Gaussian that trusts its centre more than its border (where
the network saw less context), as nnU-Net and MONAI do; the weighted sum
divided by the summed weights is seam-free. Test-time mirroring averages the
predictions of the flipped inputs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from ..data.datasets import check_geometry, load_case, read_nifti_header
from ..data.labels import regions_to_label
from ..evaluation.metrics import evaluate_cases
from ..preprocessing.crop import brain_bbox
from ..preprocessing.plan import Plan, PlanError, default_plan
from ..safety import atomic_path, check_target
from .postprocessing import PostProcessing, keep_largest_component

WEIGHTINGS = ("gaussian", "constant")


def gaussian_profiles(window, sigma_scale: float = 0.125) -> list[np.ndarray]:
    """The 1-D Gaussians whose outer product is :func:`gaussian_weights`.

    Each profile peaks at 1 at the window's centre, with sigma
    ``sigma_scale * w`` (nnU-Net: 1/8). Each is floored at the ``d``-th root
    of the smallest normal float32 (``d`` axes), so their product is a
    strictly positive float32 at every voxel.

    Returns:
        One float64 array of length ``w`` per axis of ``window``.
    """
    window = tuple(int(w) for w in window)
    floor = float(np.finfo(np.float32).tiny) ** (1.0 / max(len(window), 1))
    profiles = []
    for w in window:
        x = np.arange(w, dtype=np.float64)
        profile = np.exp(-0.5 * ((x - (w - 1) / 2.0) / max(w * sigma_scale, 1e-6)) ** 2)
        profiles.append(np.maximum(profile / profile.max(), floor))
    return profiles


def _outer(profiles) -> np.ndarray:
    result = np.asarray(profiles[0], np.float64)
    for p in profiles[1:]:
        result = np.multiply.outer(result, np.asarray(p, np.float64))
    return result


def gaussian_weights(window, sigma_scale: float = 0.125) -> np.ndarray:
    """Gaussian importance map of a window (peak 1, strictly positive).

    Args:
        window: ``(wx, wy, wz)``.
        sigma_scale: sigma as a fraction of the window size per axis (nnU-Net: 1/8).

    Returns:
        float32 array of shape ``window``: the outer product of the
        :func:`gaussian_profiles` of its axes.
    """
    return _outer(gaussian_profiles(window, sigma_scale)).astype(np.float32)


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Window starts along one axis, placed as nnU-Net places them.

    The target step is ``window * (1 - overlap)`` (a float, so an odd window
    gets no extra window); the fewest windows that keep at least that
    overlap are then spread evenly from ``0`` to ``size - window``
    (nnU-Net's ``compute_steps_for_sliding_window``).
    """
    if window >= size:
        return [0]
    target_step = window * (1.0 - overlap)
    count = math.ceil((size - window) / target_step) + 1
    step = (size - window) / (count - 1)
    return [round(step * i) for i in range(count)]


class WindowBlender:
    """Accumulates weighted window predictions into one volume.

    The one home of the blending rule ``sum_w(weight * pred) / sum_w(weight)``:
    :func:`blend_windows` (the lesson 06 exercise) and
    :func:`sliding_window_predict` both use it. It accumulates in float32
    (sums of a few dozen windows of values in [0, 1] stay accurate to about
    1e-6) and weights each window in place with the weights laid out like
    the prediction (a flat multiply; broadcasting them over the few channels
    of the last axis costs several times more).

    The normalizer ``sum_w(weight)`` depends only on where the windows are,
    so it is computed once, in :meth:`result`. With separable weights (given
    as one 1-D profile per axis, as the Gaussian is) and windows on a grid
    (every combination of the starts along each axis, as the sliding window
    places them), it is the outer product of three 1-D sums; otherwise the
    weights are summed window by window.
    """

    def __init__(self, volume_shape, window, channels: int, weights=None):
        """
        Args:
            volume_shape: ``(x, y, z)`` of the volume.
            window: ``(wx, wy, wz)``.
            channels: ``K``, the channels of each prediction.
            weights: ``None`` (all ones), a ``(wx, wy, wz)`` array, or three
                1-D profiles of lengths ``wx, wy, wz`` whose outer product is
                the weight (e.g. :func:`gaussian_profiles`).
        """
        self.window = tuple(int(w) for w in window)
        self.shape = tuple(int(s) for s in volume_shape)
        if weights is None:
            weights = [np.ones(w) for w in self.window]
        if isinstance(weights, (list, tuple)):
            self.profiles = [np.asarray(p, np.float64).ravel() for p in weights]
            if tuple(len(p) for p in self.profiles) != self.window:
                raise ValueError(
                    f"weight profiles of lengths {[len(p) for p in self.profiles]} do not match "
                    f"the window {self.window}"
                )
            self.weights = _outer(self.profiles).astype(np.float32)
        else:
            self.profiles = None
            self.weights = np.asarray(weights, np.float32)
            if self.weights.shape != self.window:
                raise ValueError(f"weights of shape {self.weights.shape} do not match the window {self.window}")
        self._weights_k = np.repeat(self.weights[..., None], channels, axis=-1)
        self.total = np.zeros((*self.shape, channels), np.float32)
        self.starts: list[tuple[int, int, int]] = []

    def add(self, start, prediction: np.ndarray) -> None:
        """Add one window's ``(wx, wy, wz, K)`` prediction whose corner is ``start``.

        ``prediction`` is overwritten (weighted in place) when it is a
        writeable float32 array; pass a copy to keep it.
        """
        a, b, c = (int(v) for v in start)
        pred = np.asarray(prediction)
        if pred.dtype != np.float32 or not pred.flags.writeable:
            pred = pred.astype(np.float32)
        if pred.shape != self._weights_k.shape:
            raise ValueError(
                f"a window prediction of shape {pred.shape} does not match the window and channels "
                f"{self._weights_k.shape}"
            )
        if min(a, b, c) < 0 or any(s + w > n for s, w, n in zip((a, b, c), self.window, self.shape)):
            raise ValueError(f"a window at {(a, b, c)} of size {self.window} leaves the volume {self.shape}")
        np.multiply(pred, self._weights_k, out=pred)
        self.total[a : a + self.window[0], b : b + self.window[1], c : c + self.window[2]] += pred
        self.starts.append((a, b, c))

    def _grid_sums(self) -> list[np.ndarray] | None:
        """The normalizer's 1-D factors, when the weights are separable and the windows form a grid."""
        if self.profiles is None:
            return None
        axes = [sorted({start[i] for start in self.starts}) for i in range(3)]
        if len(set(self.starts)) != len(self.starts) or len(self.starts) != math.prod(map(len, axes)):
            return None
        sums = []
        for starts, profile, size in zip(axes, self.profiles, self.shape):
            line = np.zeros(size, np.float64)
            for s in starts:
                line[s : s + len(profile)] += profile
            sums.append(line)
        return sums

    def result(self) -> np.ndarray:
        """Return the blended ``(x, y, z, K)`` float32 volume (the accumulator, divided in place)."""
        sums = self._grid_sums()
        if sums is not None:
            if any(np.any(line == 0) for line in sums):
                raise ValueError("some voxels are covered by no window")
            # divide by the outer product of the three sums: by the (y, z) plane, then by each x slab
            plane = 1.0 / np.multiply.outer(sums[1], sums[2])
            self.total *= np.repeat(plane.astype(np.float32)[..., None], self.total.shape[-1], axis=-1)
            self.total *= (1.0 / sums[0]).astype(np.float32)[:, None, None, None]
            return self.total
        norm = np.zeros(self.shape, np.float32)
        for a, b, c in self.starts:
            norm[a : a + self.window[0], b : b + self.window[1], c : c + self.window[2]] += self.weights
        if np.any(norm == 0):
            raise ValueError("some voxels are covered by no window")
        self.total /= norm[..., None]
        return self.total


def blend_windows(window_predictions, starts, volume_shape, weights=None) -> np.ndarray:
    """Stitch overlapping window predictions into one volume by weighted averaging.

    Taught in lesson 06, exercise 1.

    Each voxel gets ``sum_w(weight * prediction) / sum_w(weight)`` over the
    windows ``w`` that cover it.

    Args:
        window_predictions: ``(n_windows, wx, wy, wz, K)`` predictions.
        starts: ``n_windows`` corners ``(x, y, z)`` of the windows in the volume.
        volume_shape: ``(x, y, z)`` of the volume (every voxel covered by a window).
        weights: ``(wx, wy, wz)`` weight of each window voxel (default: all ones).

    Returns:
        float32 ``(x, y, z, K)``.
    """
    window_predictions = np.asarray(window_predictions)
    blender = WindowBlender(volume_shape, window_predictions.shape[1:4], window_predictions.shape[-1], weights)
    for start, pred in zip(starts, window_predictions):
        blender.add(start, pred.astype(np.float32))  # a copy: the caller's predictions stay as they were
    return blender.result()


def _model_window(model) -> tuple[tuple[int, ...] | None, int | None]:
    shape = getattr(model, "input_shape", None)
    if shape is None:
        return None, None
    if isinstance(shape, list):
        shape = shape[0]
    return tuple(shape[1:-1]), shape[-1]


def sliding_window_predict(
    model,
    image: np.ndarray,
    window=None,
    overlap: float = 0.5,
    weighting: str = "gaussian",
    batch_size: int = 4,
    mirror: bool = False,
    progress: bool = True,
    predict_fn: Callable | None = None,
) -> np.ndarray:
    """Predict a whole volume by overlapping windows.

    Args:
        model: a Keras model ``(B, *window, C) -> (B, *window, K)`` (or None
            with ``predict_fn``).
        image: ``(x, y, z, C)``; smaller axes are zero-padded up to the window.
        window: window shape (default: the model's input shape).
        overlap: fraction of a window shared with its neighbour, in [0, 1).
        weighting: ``"gaussian"`` (default) or ``"constant"``.
        batch_size: windows per model call.
        mirror: average over the 8 flips of the three axes (8x the work).
        progress: show a progress bar.
        predict_fn: ``fn(batch) -> predictions``, instead of ``model.predict``.

    Returns:
        float32 ``(x, y, z, K)`` blended predictions.

    Raises:
        ValueError: on a channel mismatch between model and image, a bad
            overlap or weighting, or no window.
    """
    image = np.asarray(image)
    if image.ndim != 4:
        raise ValueError(f"expected a channels-last volume (x, y, z, C); found shape {image.shape}")
    model_window, model_channels = _model_window(model) if model is not None else (None, None)
    if model_channels is not None and model_channels != image.shape[-1]:
        raise ValueError(f"the model expects {model_channels} input channels; the case has {image.shape[-1]}")
    window = tuple(int(w) for w in (window if window is not None else model_window or ()))
    if len(window) != 3 or min(window) < 1:
        raise ValueError(f"need a 3-D window (from the model's input shape or the window argument); found {window}")
    if model_window is not None and all(w is not None for w in model_window) and tuple(model_window) != window:
        raise ValueError(f"window {window} differs from the model's fixed input {tuple(model_window)}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1); found {overlap}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}; found {weighting!r}")
    if predict_fn is None:
        if model is None:
            raise ValueError("give a model or a predict_fn")
        predict_fn = model.predict_on_batch

    shape = image.shape[:3]
    pad = [max(w - s, 0) for w, s in zip(window, shape)]
    padded = np.pad(image, [(0, p) for p in pad] + [(0, 0)]) if any(pad) else image
    full = padded.shape[:3]
    weights = gaussian_profiles(window) if weighting == "gaussian" else None  # separable: see WindowBlender
    starts = list(itertools.product(*[window_starts(s, w, overlap) for s, w in zip(full, window)]))
    flips = [axes for r in range(4) for axes in itertools.combinations((1, 2, 3), r)] if mirror else [()]
    blender = None
    buffer = np.empty((batch_size, *window, padded.shape[-1]), np.float32)  # reused for every batch
    for i in tqdm(range(0, len(starts), batch_size), desc="windows", unit="batch", disable=not progress):
        chunk = starts[i : i + batch_size]
        batch = buffer[: len(chunk)]
        for j, (a, b, c) in enumerate(chunk):
            batch[j] = padded[a : a + window[0], b : b + window[1], c : c + window[2]]
        pred = None
        for axes in flips:
            flipped = np.flip(batch, axes) if axes else batch
            out = np.asarray(predict_fn(flipped), dtype=np.float32)
            out = np.flip(out, axes) if axes else out
            if pred is None:  # the model's own output array, or a copy to sum the mirrored ones into
                pred = out if len(flips) == 1 else np.array(out, np.float32)
            else:
                pred += out
        if len(flips) > 1:
            pred /= len(flips)
        if blender is None:
            blender = WindowBlender(full, window, pred.shape[-1], weights)
        for start, p in zip(chunk, pred):
            blender.add(start, p)
    output = blender.result()
    return output[: shape[0], : shape[1], : shape[2]]


def tile_predict(
    model, image: np.ndarray, window=None, progress: bool = False, predict_fn: Callable | None = None
) -> np.ndarray:
    """The original assignment's approach: non-overlapping tiles, one per call.

    Kept as the baseline of the benchmark and to show the seams in lesson 06.
    The volume is zero-padded to a multiple of the window.
    """
    window = tuple(window if window is not None else _model_window(model)[0])
    if predict_fn is None:
        predict_fn = model.predict_on_batch
    shape = image.shape[:3]
    full = [math.ceil(s / w) * w for s, w in zip(shape, window)]
    padded = np.pad(image, [(0, f - s) for f, s in zip(full, shape)] + [(0, 0)])
    output = None
    for a in range(0, full[0], window[0]):
        for b in range(0, full[1], window[1]):
            for c in range(0, full[2], window[2]):
                tile = padded[a : a + window[0], b : b + window[1], c : c + window[2]][None].astype(np.float32)
                pred = np.asarray(predict_fn(tile), dtype=np.float32)[0]
                if output is None:
                    output = np.zeros((*full, pred.shape[-1]), dtype=np.float32)
                output[a : a + window[0], b : b + window[1], c : c + window[2]] = pred
    return output[: shape[0], : shape[1], : shape[2]]


def probabilities_to_labels(
    probabilities: np.ndarray, threshold=0.5, largest_component: bool = False, output_kind: str = "classes"
) -> np.ndarray:
    """Turn the three sigmoid channels into one label map 0-3.

    ``output_kind`` (the run's ``plan.json``) says what the channels are.

    * ``"classes"`` (edema, non-enhancing, enhancing): the channels overlap
      (each is an independent sigmoid). The rule follows the nesting of the
      tumour: a voxel above threshold for enhancing tumour is 3, else above
      threshold for non-enhancing tumour is 2, else above threshold for
      edema is 1, else 0. Enhancing wins over non-enhancing wins over edema.
    * ``"regions"`` (WT, TC, ET): hierarchical, as nnU-Net's
      ``regions_class_order`` (:func:`utils.data.labels.regions_to_label`):
      tumour where WT passes, core where TC passes too, enhancing where ET
      passes as well.

    Args:
        probabilities: ``(..., 3)``.
        threshold: one value or one per channel.
        largest_component: keep only the largest connected tumour
            (:func:`utils.inference.postprocessing.keep_largest_component`).
        output_kind: ``"classes"`` or ``"regions"``.

    Returns:
        uint8 label map of shape ``probabilities.shape[:-1]``.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.shape[-1] != 3:
        what = "region" if output_kind == "regions" else "class"
        raise ValueError(f"expected 3 {what} channels on the last axis; found shape {probabilities.shape}")
    threshold = np.broadcast_to(np.asarray(threshold, dtype=np.float32), (3,))
    if output_kind == "regions":
        label = regions_to_label(probabilities, threshold)
    elif output_kind == "classes":
        label = np.zeros(probabilities.shape[:-1], dtype=np.uint8)
        for k in (0, 1, 2):  # edema, then non-enhancing, then enhancing overwrite
            label[probabilities[..., k] > threshold[k]] = k + 1
    else:
        raise ValueError(f"output_kind must be 'classes' or 'regions'; found {output_kind!r}")
    return keep_largest_component(label) if largest_component else label


def save_segmentation(
    label: np.ndarray, reference, out_path: Path | str, overwrite: bool = False, probabilities: np.ndarray | None = None
) -> Path:
    """Write a label map as NIfTI on the grid of the input image.

    Args:
        label: ``(x, y, z)`` integer label map (MSD values).
        reference: the input image (path or nibabel image): its affine and
            header are copied, so viewers overlay the result on it.
        out_path: ``.nii.gz`` (or ``.nii``) to write.
        overwrite: replace an existing output (never the reference itself).
        probabilities: optional ``(x, y, z, 3)``; written beside it as
            ``<name>_probabilities.nii.gz`` (float32).

    Returns:
        ``out_path``.

    Raises:
        ValueError: if ``out_path`` is the input file or the label does not
            match the input grid. FileExistsError: if it exists and not ``overwrite``.
    """
    out_path = Path(out_path)
    if isinstance(reference, (str, Path)):
        ref_path = Path(reference)
        ref = read_nifti_header(ref_path, "reference image")
    else:
        ref = reference
        ref_path = Path(ref.get_filename()) if ref.get_filename() else None
        check_geometry(ref, ref_path or "(in memory)", "reference image")  # never write a NaN or singular affine
    if not out_path.name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"the output must be a .nii or .nii.gz file; found {out_path.name!r}")
    if tuple(label.shape) != tuple(ref.shape[:3]):
        raise ValueError(f"label shape {label.shape} does not match the input grid {ref.shape[:3]}")
    prob_path = probabilities_path(out_path) if probabilities is not None else None
    for path in (out_path, prob_path):
        if path is None:
            continue
        check_target(path, "the output", inputs=[ref_path] if ref_path else [])
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    header = ref.header.copy()
    header.set_data_shape(label.shape)
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1, 0)
    header["cal_min"], header["cal_max"] = 0, 3
    header.set_intent("label")
    header["descrip"] = b"utils.predict segmentation"
    seg = nib.Nifti1Image(label.astype(np.uint8), ref.affine, header)
    seg.set_sform(ref.affine, code=int(ref.header["sform_code"]) or 1)
    seg.set_qform(ref.affine, code=int(ref.header["qform_code"]) or 1)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:
        nib.save(seg, str(tmp))
    if prob_path is not None:
        with atomic_path(prob_path) as tmp:
            nib.save(nib.Nifti1Image(probabilities.astype(np.float32), ref.affine), str(tmp))
    return out_path


def probabilities_path(out_path: Path | str) -> Path:
    """Where :func:`save_segmentation` writes the probability maps of ``out_path``."""
    out_path = Path(out_path)
    stem = out_path.name[: -len(".nii.gz")] if out_path.name.endswith(".nii.gz") else out_path.stem
    return out_path.with_name(f"{stem}_probabilities.nii.gz")


def preprocess_for_model(image: np.ndarray, plan: Plan | None = None) -> np.ndarray:
    """The intensity preprocessing a run trained with (its plan's), else the course's: brain-mask z-score."""
    return (plan or default_plan()).preprocess(image)


def ensemble_kind(plans) -> str:
    """The output kind every plan of an ensemble shares.

    Raises:
        PlanError: the members were trained for different outputs (their
            probabilities mean different things and cannot be averaged).
    """
    kinds = [p.output_kind for p in plans]
    if len(set(kinds)) > 1:
        raise PlanError(
            f"cannot ensemble models with different output kinds {kinds} (classes: edema, non-enhancing, "
            "enhancing; regions: WT, TC, ET); ensemble runs trained with the same TrainConfig.outputs"
        )
    return kinds[0]


def predict_probabilities(
    model,
    image: np.ndarray,
    overlap: float = 0.5,
    weighting: str = "gaussian",
    mirror: bool = False,
    batch_size: int = 4,
    progress: bool = True,
    plan: Plan | None = None,
) -> np.ndarray:
    """Preprocess a raw case and predict it whole: float32 ``(x, y, z, 3)`` probabilities.

    The prediction covers the brain's bounding box (nonzero voxels plus the
    crop margin, the crop the training cache used); outside it the
    probabilities are 0. ``plan`` (the run's ``plan.json``, see
    :func:`utils.preprocessing.plan.plan_for_model`) gives the crop margin,
    the intensity scheme and the window; without one, the course's defaults.
    """
    # Windows only over the brain (nonzero voxels): the zeros around a
    # skull-stripped brain need no prediction, and a quarter of the windows go.
    plan = plan or default_plan()
    box = brain_bbox(image, margin=plan.crop_margin)
    window = tuple(slice(a, b) for a, b in box)
    cropped = sliding_window_predict(
        model,
        preprocess_for_model(image[window], plan),
        window=plan.window,
        overlap=overlap,
        weighting=weighting,
        mirror=mirror,
        batch_size=batch_size,
        progress=progress,
    )
    probabilities = np.zeros((*image.shape[:3], cropped.shape[-1]), dtype=np.float32)
    probabilities[window] = cropped
    return probabilities


def predict_case(
    model,
    image: np.ndarray,
    overlap: float = 0.5,
    weighting: str = "gaussian",
    mirror: bool = False,
    batch_size: int = 4,
    threshold=0.5,
    largest_component: bool = False,
    progress: bool = True,
    plan: Plan | None = None,
    postprocessing: PostProcessing | None = None,
    spacing=(1.0, 1.0, 1.0),
):
    """Preprocess a raw case, predict it whole, and merge to a label map.

    See :func:`predict_probabilities`. ``model`` may be a list of models (an
    ensemble: the mean of their probabilities, as nnU-Net ensembles) with
    ``plan`` the list of their plans; they must share the output kind
    (:func:`ensemble_kind`). The label map follows the plan's output kind
    (:func:`probabilities_to_labels`), then ``postprocessing`` (a run's
    choice, :mod:`utils.inference.postprocessing`), whose sizes ``spacing``
    (mm) turns into voxels.

    Returns:
        ``(label, probabilities)``: uint8 ``(x, y, z)`` and float32 ``(x, y, z, 3)``.
    """
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    plans = list(plan) if isinstance(plan, (list, tuple)) else [plan] * len(models)
    if len(plans) != len(models):
        raise ValueError(f"an ensemble of {len(models)} models needs as many plans; found {len(plans)}")
    plans = [p or default_plan() for p in plans]
    kind = ensemble_kind(plans)
    probabilities = None
    for member, member_plan in zip(models, plans):
        probs = predict_probabilities(member, image, overlap, weighting, mirror, batch_size, progress, member_plan)
        probabilities = probs if probabilities is None else np.add(probabilities, probs, out=probabilities)
    if len(models) > 1:
        probabilities /= len(models)
    label = probabilities_to_labels(probabilities, threshold, largest_component, kind)
    if postprocessing is not None:
        label = postprocessing.apply(label, spacing)
    return label, probabilities


def evaluate_model(
    model,
    data_dir,
    case_ids,
    overlap: float = 0.5,
    mirror: bool = False,
    largest_component: bool = False,
    with_hd95: bool = True,
    progress: bool = True,
    lesion_wise: bool = True,
    plan: Plan | None = None,
    postprocessing: PostProcessing | None = None,
):
    """Predict whole labelled cases and score them (BraTS regions and classes).

    Args:
        model: a trained Keras model.
        data_dir: the dataset (MSD layout or BraTS folders).
        case_ids: the cases to evaluate (e.g. the held-out validation cases).
        overlap, mirror: sliding-window settings.
        largest_component: post-process with :func:`keep_largest_component`.
        with_hd95: also compute HD95 (a few seconds per case).
        progress: progress bar over the cases.
        lesion_wise: also the lesion-wise Dice (and HD95) of the regions.
        plan: the run's plan (:func:`predict_case`; a list for an ensemble, with a list of models).
        postprocessing: applied to each label map (:func:`predict_case`).

    Returns:
        ``(table, predictions)``: a DataFrame with one row per case (region
        Dice / IoU / HD95, lesion-wise ``LW`` scores and the per-class Dice)
        plus mean and median rows,
        and ``{case_id: (label, prediction)}``.
    """
    pairs, predictions = [], {}
    for case_id in tqdm(list(case_ids), desc="evaluate", unit="case", disable=not progress):
        case = load_case(data_dir, case_id)
        if case.label is None:
            raise ValueError(f"case {case_id} has no label to evaluate against")
        pred, _ = predict_case(
            model,
            case.image,
            overlap=overlap,
            mirror=mirror,
            largest_component=largest_component,
            progress=False,
            plan=plan,
            postprocessing=postprocessing,
            spacing=case.spacing,
        )
        pairs.append((case_id, case.label, pred, case.spacing))
        predictions[case_id] = (case.label, pred)
    return evaluate_cases(pairs, with_hd95, lesion_wise, with_classes=True), predictions
