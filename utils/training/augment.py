"""Training-patch augmentation: the course's basic one, and nnU-Net's from MIC-DKFZ's batchgenerators.

Two pipelines, named by ``TrainConfig.augmentation`` (:data:`utils.config.AUGMENTATIONS`):

* ``"basic"`` (:func:`basic_augmentation`): a random flip on each axis and a
  random intensity scale and shift per channel, inside the brain.
* ``"nnunet"`` (:class:`NnUNetAugmentation`): the transforms nnU-Net trains
  with, from MIC-DKFZ's `batchgenerators <https://github.com/MIC-DKFZ/batchgenerators>`_
  (the NumPy library nnU-Net v1 used; nnU-Net v2 moved the same transforms to
  PyTorch). In nnU-Net's order and with its probabilities: rotation (+-30
  degrees; about the short axis only when the patch is anisotropic, more than
  3:1) and scaling (0.7 to 1.4), each on a fifth of the patches; elastic
  deformation (off by default, as in nnU-Net v2: it costs the most); Gaussian
  noise and blur; multiplicative brightness; contrast; simulated low
  resolution; gamma (also on the inverted image); mirroring on every axis.
  Every intensity transform draws its own value for each channel: four MRI
  sequences from another scanner do not change contrast together, and a model
  that has seen them vary independently is more robust to that.

Conventions at the boundary. The course's patches are channels-last float32
``(x, y, z, 4)`` with an integer label map ``(x, y, z)``; batchgenerators
works channels-first on a batch ``(b, c, x, y, z)``. The label travels as a
segmentation channel interpolated with order 0 (nearest), so it stays a label
map that the sampler then turns into binary targets, and every spatial
transform moves image and label together. A spatial transform needs image
beyond the patch (a rotated patch's corners come from outside it), so for the
patches that get one :meth:`NnUNetAugmentation.sample` draws the transform
first (batchgenerators' coordinate functions), then cuts from the case just
the box its grid reaches, around the same centre.
The course's inputs are skull-stripped (zero outside the brain, at
prediction too): the brain mask travels as a second segmentation channel and
the voxels outside it are set back to zero after the intensity transforms.

Determinism. batchgenerators draws from NumPy's and Python's global random
generators. :class:`NnUNetAugmentation` seeds both from the sample's own
generator under a lock and restores them afterwards, so a patch depends only
on that generator (the pipeline's ``(seed, epoch, index)``), whatever the
number of worker threads. Only those calls hold the lock (the intensity
transforms, an elastic deformation's noise field); cutting and interpolating
run in parallel threads.
"""

from __future__ import annotations

import random
import threading
from contextlib import contextmanager

import numpy as np

from ..config import AUGMENTATIONS
from ..preprocessing.transforms import cut_patch

ROTATION_DEGREES = 30.0
"""Largest rotation about each axis (nnU-Net: +-30 degrees)."""
SCALE_RANGE = (0.7, 1.4)
"""Zoom range (nnU-Net v2); above 1 a patch covers more of the case (objects look smaller)."""
P_ROTATION, P_SCALE = 0.2, 0.2
"""Share of patches rotated, and scaled (drawn independently, as nnU-Net does)."""
ANISOTROPY = 3.0
"""A patch longer than this ratio of its shortest side is rotated in-plane only (nnU-Net's 'dummy 2-D' rule)."""
ELASTIC_ALPHA, ELASTIC_SIGMA = (0.0, 900.0), (9.0, 13.0)
"""Elastic deformation's magnitude and smoothness (nnU-Net v1's)."""
DATA_ORDER = 1
"""Spline order used to interpolate the image: linear, as nnU-Net v2 (trilinear ``grid_sample``; v1 used cubic splines,
which cost several times more on a CPU); the label is always nearest (0)."""

_GLOBAL_RANDOM = threading.Lock()


def check_augmentation(name: str) -> str:
    """Return ``name`` if it names an augmentation pipeline.

    Raises:
        ValueError: otherwise, listing the names.
    """
    if name not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}; found {name!r}")
    return name


def basic_augmentation(
    X: np.ndarray, lab: np.ndarray, rng: np.random.Generator, scale_range: float = 0.1, shift_range: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """The ``"basic"`` pipeline: random flips on every axis, a random scale and shift per channel in the brain.

    Args:
        X: float32 ``(x, y, z, C)`` patch. lab: its label map ``(x, y, z)``.
        rng: numpy Generator.
        scale_range, shift_range: ``x * U(1 - s, 1 + s) + U(-t, t)`` per channel on brain voxels.

    Returns:
        ``(X, lab)`` augmented, the same shapes; X float32, zero outside the brain.
    """
    for axis in range(3):
        if rng.random() < 0.5:
            X = np.flip(X, axis)
            lab = np.flip(lab, axis)
    brain = np.any(X != 0, axis=-1)
    scale = rng.uniform(1 - scale_range, 1 + scale_range, size=X.shape[-1]).astype(np.float32)
    shift = rng.uniform(-shift_range, shift_range, size=X.shape[-1]).astype(np.float32)
    X = np.where(brain[..., None], X * scale + shift, 0.0).astype(np.float32)
    return X, lab


def rotation_angles(patch_shape) -> tuple[float, float, float]:
    """Largest rotation (radians) about each axis for ``patch_shape``: +-30 degrees, in-plane only when anisotropic."""
    patch = np.asarray(patch_shape, dtype=float)
    limit = np.deg2rad(ROTATION_DEGREES)
    if patch.max() / patch.min() > ANISOTROPY:  # rotate within the plane of the two long axes
        short = int(np.argmin(patch))
        return tuple(limit if axis == short else 0.0 for axis in range(3))
    return (limit, limit, limit)


class NnUNetAugmentation:
    """nnU-Net's training augmentation from batchgenerators, on one channels-last patch at a time.

    Args:
        patch_shape: ``(x, y, z)`` of the patches it returns.
        elastic_probability: share of patches elastically deformed (nnU-Net's trainers: 0). Slow: 0.13 to 0.24 s
            for one 64x64x32 patch on the course's 2-core machine, where a whole nnunet patch averages 0.05 s.
        data_order: spline order for the image (the label is nearest-neighbour).
    """

    def __init__(self, patch_shape, elastic_probability: float = 0.0, data_order: int = DATA_ORDER):
        from batchgenerators.transforms.abstract_transforms import Compose
        from batchgenerators.transforms.color_transforms import (
            BrightnessMultiplicativeTransform,
            ContrastAugmentationTransform,
            GammaTransform,
        )
        from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
        from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
        from batchgenerators.transforms.spatial_transforms import MirrorTransform

        if not 0.0 <= elastic_probability <= 1.0:
            raise ValueError(f"elastic_probability must be in [0, 1]; found {elastic_probability}")
        self.patch_shape = tuple(int(p) for p in patch_shape)
        if len(self.patch_shape) != 3 or min(self.patch_shape) < 1:
            raise ValueError(f"patch_shape must be 3 positive sizes; found {patch_shape}")
        self.elastic_probability, self.data_order = float(elastic_probability), int(data_order)
        self.angles = rotation_angles(self.patch_shape)
        anisotropic = max(self.patch_shape) / min(self.patch_shape) > ANISOTROPY
        ignore_axes = (int(np.argmin(self.patch_shape)),) if anisotropic else None
        self.intensity = Compose(
            [
                GaussianNoiseTransform(noise_variance=(0.0, 0.1), p_per_sample=0.1, per_channel=True),
                GaussianBlurTransform(
                    (0.5, 1.0), different_sigma_per_channel=True, p_per_sample=0.2, p_per_channel=0.5
                ),
                BrightnessMultiplicativeTransform(multiplier_range=(0.75, 1.25), per_channel=True, p_per_sample=0.15),
                ContrastAugmentationTransform(contrast_range=(0.75, 1.25), per_channel=True, p_per_sample=0.15),
                SimulateLowResolutionTransform(
                    zoom_range=(0.5, 1.0),
                    per_channel=True,
                    p_per_channel=0.5,
                    order_downsample=0,
                    order_upsample=1,
                    p_per_sample=0.25,
                    ignore_axes=ignore_axes,
                ),
                GammaTransform((0.7, 1.5), invert_image=True, per_channel=True, retain_stats=True, p_per_sample=0.1),
                GammaTransform((0.7, 1.5), invert_image=False, per_channel=True, retain_stats=True, p_per_sample=0.3),
                MirrorTransform(axes=(0, 1, 2)),
            ]
        )

    def spatial_coordinates(self, rng: np.random.Generator) -> np.ndarray | None:
        """Draw this patch's spatial transform: where each output voxel samples the input (None: no transform).

        With nnU-Net's probabilities: elastic deformation, rotation, zoom (half
        the zooms shrink, half enlarge), each applied with batchgenerators'
        coordinate functions to a grid centred on the patch's centre.

        Returns:
            float ``(3, *patch)`` offsets from the patch centre in voxels, or None.
        """
        from batchgenerators.augmentations.utils import (
            create_matrix_rotation_x_3d,
            create_matrix_rotation_y_3d,
            create_matrix_rotation_z_3d,
            create_zero_centered_coordinate_mesh,
            elastic_deform_coordinates,
            scale_coords,
        )

        elastic = bool(self.elastic_probability) and rng.random() < self.elastic_probability
        rotate, zoom = rng.random() < P_ROTATION, rng.random() < P_SCALE
        if not (elastic or rotate or zoom):
            return None
        coords = create_zero_centered_coordinate_mesh(self.patch_shape)
        if elastic:  # its noise field comes from NumPy's global generator
            alpha, sigma = rng.uniform(*ELASTIC_ALPHA), rng.uniform(*ELASTIC_SIGMA)
            with _global_random(int(rng.integers(2**32))):
                coords = elastic_deform_coordinates(coords, alpha, sigma)
        if rotate:  # batchgenerators' rotate_coords_3d, with the product taken on contiguous rows (20x faster)
            ax, ay, az = (rng.uniform(-a, a) if a else 0.0 for a in self.angles)
            matrix = create_matrix_rotation_z_3d(az, create_matrix_rotation_y_3d(ay, create_matrix_rotation_x_3d(ax)))
            coords = (matrix.T @ coords.reshape(3, -1)).reshape(coords.shape)
        if zoom:
            low, high = SCALE_RANGE
            coords = scale_coords(coords, rng.uniform(low, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, high))
        return coords

    def sample(self, image, label, start, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Cut the patch at corner ``start`` of a case and augment it.

        A rotated, zoomed or deformed patch samples the case around the same
        centre: the box its grid reaches is cut (zero padded outside the case)
        and interpolated, the image with ``data_order``, the label and the
        brain mask with nearest neighbour.

        Args:
            image: ``(X, Y, Z, C)`` case (a memory map is fine). label: ``(X, Y, Z)`` label map.
            start: corner of the patch (may lie outside the case: zero padded).
            rng: numpy Generator; the result depends only on it.

        Returns:
            ``(X float32 (*patch, C), label uint8 (*patch))``, zero outside the brain.
        """
        from batchgenerators.augmentations.utils import interpolate_img

        seed = int(rng.integers(2**32))
        coords = self.spatial_coordinates(rng)
        if coords is None:
            X, lab = cut_patch(image, label, start, self.patch_shape)
            return self.augment(X, lab, seed)
        coords += (np.asarray(start) + (np.asarray(self.patch_shape) - 1) / 2.0).reshape(3, 1, 1, 1)
        low = np.floor(coords.reshape(3, -1).min(axis=1)).astype(int) - 1
        high = np.ceil(coords.reshape(3, -1).max(axis=1)).astype(int) + 2
        source, source_label = cut_patch(image, label, low, high - low)
        coords -= low.reshape(3, 1, 1, 1)
        X = np.stack(
            [
                interpolate_img(source[..., c], coords, self.data_order, "constant", cval=0.0)
                for c in range(source.shape[-1])
            ],
            axis=-1,
        )
        lab = interpolate_img(source_label, coords, 0, "constant", cval=0)
        brain = interpolate_img(np.any(source != 0, axis=-1).astype(np.uint8), coords, 0, "constant", cval=0)
        return self.augment(X, lab, seed, brain=brain.astype(bool))

    def augment(self, X: np.ndarray, lab: np.ndarray, seed: int, brain: np.ndarray | None = None):
        """The intensity transforms and mirroring on one patch; ``brain`` defaults to the voxels not zero in ``X``."""
        data = np.ascontiguousarray(np.moveaxis(X, -1, 0)[None], dtype=np.float32)  # (1, C, x, y, z)
        brain = np.any(X != 0, axis=-1) if brain is None else brain
        seg = np.stack([lab, brain]).astype(np.float32)[None]  # the label and the brain mask travel together
        with _global_random(seed):
            batch = self.intensity(data=data, seg=seg)
        seg = batch["seg"][0]
        X = np.where(seg[1][..., None] > 0.5, np.moveaxis(batch["data"][0], 0, -1), 0.0).astype(np.float32)
        return np.ascontiguousarray(X), np.rint(seg[0]).astype(np.uint8)


@contextmanager
def _global_random(seed: int):
    """Seed NumPy's and Python's global generators (batchgenerators draws from them), then restore them.

    Other threads wait meanwhile, so each patch sees only its own seed.
    """
    with _GLOBAL_RANDOM:
        numpy_state, python_state = np.random.get_state(), random.getstate()
        np.random.seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)
