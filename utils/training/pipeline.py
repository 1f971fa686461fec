"""The training input pipeline: random patches from the cache, augmented, in batches.

:class:`PatchSampler` cuts one patch from a memory-mapped cached case:
nnU-Net-style foreground oversampling (a share of patches centred on a voxel
of a randomly chosen tumour class, the rest anywhere, up to half a patch
beyond the border so that voxels near it are not starved), zero padding where
a patch leaves the cropped case, then augmentation (:mod:`utils.training.augment`):
``"basic"``, random flips on every axis and a random intensity scale and shift
per channel (inside the brain), or ``"nnunet"``, nnU-Net's transforms from
batchgenerators (rotation, scaling, noise, blur, brightness, contrast, low
resolution, gamma, mirroring).

:class:`PatchDataset` is a ``keras.utils.PyDataset``: Keras fetches its batches
in parallel worker threads and keeps a queue of them ready. Batch ``i`` of
epoch ``e`` depends only on ``(seed, e, i)``, so the stream is the same
whatever the number of workers or the order they finish in, and a resumed
run continues with the batches it would have seen.
"""

from __future__ import annotations

import numpy as np
from keras.utils import PyDataset

from ..config import ASSIGNMENT_PATCH, FOREGROUND_FRACTION, TrainConfig
from ..data.labels import label_to_regions, one_hot
from ..preprocessing.transforms import check_foreground_fraction, cut_patch, patch_corner
from .augment import NnUNetAugmentation, basic_augmentation, check_augmentation
from .cache import TrainingCache

TARGETS = {"classes": one_hot, "regions": label_to_regions}
"""The training targets of each output kind (``TrainConfig.outputs``)."""


class PatchSampler:
    """Draw training patches from cached cases.

    Args:
        cache: a :class:`utils.training.cache.TrainingCache`.
        case_ids: the cases to draw from.
        patch_shape: ``(px, py, pz)``.
        foreground_fraction: share of patches centred on tumour.
        augment: augment the patches (False: cut them as they are).
        scale_range, shift_range: the ``"basic"`` intensity augmentation per channel:
            ``x * U(1 - s, 1 + s) + U(-t, t)`` on brain voxels.
        augmentation: the pipeline, one of :data:`utils.config.AUGMENTATIONS`.
        outputs: the targets: ``"classes"`` (one channel per tumour class,
            :func:`utils.data.labels.one_hot`) or ``"regions"`` (WT, TC, ET,
            :func:`utils.data.labels.label_to_regions`).
    """

    def __init__(
        self,
        cache: TrainingCache,
        case_ids: list[str],
        patch_shape=ASSIGNMENT_PATCH,
        foreground_fraction: float = FOREGROUND_FRACTION,
        augment: bool = True,
        scale_range: float = 0.1,
        shift_range: float = 0.1,
        augmentation: str = TrainConfig.augmentation,
        outputs: str = TrainConfig.outputs,
    ):
        if outputs not in TARGETS:
            raise ValueError(f"outputs must be one of {sorted(TARGETS)}; found {outputs!r}")
        if not case_ids:
            raise ValueError("PatchSampler needs at least one case")
        missing = sorted(set(case_ids) - set(cache.case_ids))
        if missing:
            raise ValueError(f"cases not in the cache {cache.folder}: {missing}")
        check_foreground_fraction(foreground_fraction)
        self.cache, self.case_ids = cache, list(case_ids)
        self.patch_shape = tuple(int(p) for p in patch_shape)
        self.foreground_fraction, self.augment = foreground_fraction, augment
        self.scale_range, self.shift_range = scale_range, shift_range
        self.targets = TARGETS[outputs]
        self.augmentation = check_augmentation(augmentation)
        self._nnunet = NnUNetAugmentation(self.patch_shape) if augment and augmentation == "nnunet" else None
        self._images = {c: cache.image(c) for c in self.case_ids}
        self._labels = {c: cache.label(c) for c in self.case_ids}
        self._locations = {c: cache.locations(c) for c in self.case_ids}

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One patch: ``X`` float32 ``(*patch, 4)`` and ``y`` float32 ``(*patch, 3)`` (classes or regions)."""
        case_id = self.case_ids[rng.integers(len(self.case_ids))]
        image, label = self._images[case_id], self._labels[case_id]
        locations = [v for v in self._locations[case_id].values() if len(v)]

        def draw_centre(rng):  # a stored voxel of a tumour class chosen at random among those present
            coords = locations[rng.integers(len(locations))]
            return coords[rng.integers(len(coords))]

        # random patches may overhang the border by half a patch (zero-padded): see patch_corner
        start = patch_corner(
            label.shape, self.patch_shape, rng, self.foreground_fraction, draw_centre if locations else None, True
        )
        if self._nnunet is not None:  # cuts a larger patch for the ones it rotates or zooms
            X, lab = self._nnunet.sample(image, label, start, rng)
        else:
            X, lab = cut_patch(image, label, start, self.patch_shape)
            if self.augment:
                X, lab = basic_augmentation(X, lab, rng, self.scale_range, self.shift_range)
        return np.ascontiguousarray(X), self.targets(lab)


class PatchDataset(PyDataset):
    """Batches of patches for ``model.fit``, deterministic by ``(seed, epoch, index)``.

    Args:
        sampler: a :class:`PatchSampler`.
        batch_size: patches per batch.
        steps: batches per epoch.
        seed: base seed.
        fixed: the same batches every epoch (for validation).
        initial_epoch: the epoch the first pass counts as (for resumed runs).
        workers: parallel threads that prepare batches (Keras ``PyDataset``).
        max_queue_size: batches kept ready.
    """

    def __init__(
        self,
        sampler: PatchSampler,
        batch_size: int,
        steps: int,
        seed: int = 0,
        fixed: bool = False,
        initial_epoch: int = 0,
        workers: int = 1,
        max_queue_size: int = 8,
    ):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
        if batch_size < 1 or steps < 1:
            raise ValueError(f"batch_size and steps must be >= 1; found {batch_size}, {steps}")
        self.sampler, self.batch_size, self.steps = sampler, batch_size, steps
        self.seed, self.fixed, self.epoch = seed, fixed, initial_epoch

    def __len__(self) -> int:
        return self.steps

    def batch(self, index: int, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``index`` of ``epoch`` (default: the current one)."""
        epoch = 0 if self.fixed else (self.epoch if epoch is None else epoch)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, index]))
        pairs = [self.sampler.sample(rng) for _ in range(self.batch_size)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def __getitem__(self, index: int):
        if not 0 <= index < self.steps:
            raise IndexError(f"batch {index} out of range 0..{self.steps - 1}")
        return self.batch(index)

    def on_epoch_end(self) -> None:
        if not self.fixed:
            self.epoch += 1
