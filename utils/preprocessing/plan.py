"""The run-folder contract: ``plan.json``, everything prediction needs to treat a scan as training did.

Training writes it at the start of a run (:func:`write_plan`), beside
``config.json``; prediction, evaluation, the report and lessons 05-07 read it
(:func:`plan_for_model`, :func:`read_plan`) instead of assuming today's
defaults or recomputing the split - as nnU-Net's ``plans.json`` and
``splits_final.json`` do. It records:

* ``channels``: the input channels, in the order the network takes them;
* ``intensity`` and ``intensity_params``: the intensity scheme (a key of
  :data:`utils.preprocessing.transforms.INTENSITY_SCHEMES`) and its parameters;
* ``crop_margin``: voxels kept around the brain's bounding box;
* ``patch_shape`` and ``window``: the training patch and the sliding window;
* ``output_kind`` and ``labels``: what the output channels mean (``"classes"``:
  one sigmoid per tumour class, channel ``k`` for label ``labels[k]``;
  ``"regions"``: one sigmoid per nested BraTS region, channel ``k`` for
  ``REGION_ORDER[k]`` (WT, TC, ET), the label map rebuilt by
  :func:`utils.data.labels.regions_to_label`). A ``plan.json`` without the
  field (none was written so) means ``"classes"``;
* ``mode``, ``dataset``, ``train_cases`` and ``validation_cases``: which data
  and which split;
* ``course_version``: the course that wrote it.

A model without a ``plan.json`` beside it (trained before the file existed,
or copied alone) is predicted as before, with the current defaults
(:func:`default_plan`), and one line says so.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .. import __version__
from ..data.labels import CLASS_NAMES, MODALITIES
from ..errors import CourseError
from ..safety import read_json_object, write_json_atomic
from . import crop, transforms
from .transforms import INTENSITY_SCHEMES

PLAN_FILE = "plan.json"
OUTPUT_KINDS = ("classes", "regions")
"""What the output channels can mean: ``"classes"``, one sigmoid per tumour class (labels 1, 2, 3);
``"regions"``, one per nested region (WT, TC, ET; :data:`utils.data.labels.REGION_ORDER`)."""


class PlanError(CourseError, ValueError):
    """A ``plan.json`` that cannot be used (unreadable, or asks for what this course cannot do)."""


@dataclass(frozen=True)
class Plan:
    """The settings a run was trained with, as prediction needs them (see the module docstring)."""

    channels: tuple[str, ...]
    intensity: str
    intensity_params: dict
    crop_margin: int
    patch_shape: tuple[int, int, int] | None
    window: tuple[int, int, int] | None
    output_kind: str
    labels: tuple[int, ...]
    mode: str | None
    dataset: str | None
    train_cases: tuple[str, ...]
    validation_cases: tuple[str, ...]
    course_version: str

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITY_SCHEMES:
            raise PlanError(
                f"intensity scheme {self.intensity!r} is unknown; expected one of {sorted(INTENSITY_SCHEMES)}"
            )
        if self.output_kind not in OUTPUT_KINDS:
            raise PlanError(f"output kind {self.output_kind!r} is unknown; expected one of {OUTPUT_KINDS}")
        if tuple(self.channels) != MODALITIES:
            raise PlanError(f"the course reads the channels {MODALITIES}; the plan asks for {tuple(self.channels)}")

    def preprocess(self, image):
        """The recorded intensity scheme applied to ``image`` ``(x, y, z, C)``."""
        return INTENSITY_SCHEMES[self.intensity](image, **self.intensity_params)

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def default_plan(patch_shape=None, window=None) -> Plan:
    """What the course assumes without a ``plan.json``: today's defaults (read when called)."""
    return Plan(
        channels=MODALITIES,
        intensity=transforms.DEFAULT_INTENSITY,
        intensity_params={},
        crop_margin=crop.CROP_MARGIN,
        patch_shape=tuple(patch_shape) if patch_shape else None,
        window=tuple(window or patch_shape) if (window or patch_shape) else None,
        output_kind="classes",
        labels=tuple(range(1, len(CLASS_NAMES) + 1)),
        mode=None,
        dataset=None,
        train_cases=(),
        validation_cases=(),
        course_version=__version__,
    )


def make_plan(config, train_cases, validation_cases) -> Plan:
    """The plan of a training run of ``config`` (a :class:`utils.config.TrainConfig`) on this split."""
    base = default_plan(config.patch_shape)
    values = asdict(base) | dict(
        output_kind=getattr(config, "outputs", "classes"),
        mode=config.mode,
        dataset=str(config.dataset),
        train_cases=tuple(sorted(train_cases)),
        validation_cases=tuple(sorted(validation_cases)),
    )
    return Plan(**values)


def write_plan(folder: Path | str, plan: Plan) -> Path:
    """Write ``folder/plan.json`` atomically; return its path."""
    path = Path(folder) / PLAN_FILE
    write_json_atomic(path, plan.to_json())
    return path


def read_plan(folder: Path | str) -> Plan | None:
    """The plan in run folder ``folder`` (None when it has none).

    Raises:
        PlanError: the file is not a plan, or asks for what this course cannot do.
    """
    path = Path(folder) / PLAN_FILE
    if not path.is_file():
        return None
    try:
        data = read_json_object(path, "run plan")
    except ValueError as err:
        raise PlanError(str(err)) from None
    names = [f.name for f in fields(Plan)]
    data.setdefault("output_kind", "classes")  # the kind every run had before "regions" existed
    missing = [n for n in names if n not in data]
    if missing:
        raise PlanError(f"{path} is not a course run plan: it lacks {missing}")
    tuples = ("channels", "patch_shape", "window", "labels", "train_cases", "validation_cases")
    values = {n: (tuple(data[n]) if n in tuples and data[n] is not None else data[n]) for n in names}
    if not isinstance(values["intensity_params"], dict):
        raise PlanError(f"{path}: intensity_params should be an object; found {values['intensity_params']!r}")
    try:
        return Plan(**values)
    except PlanError as err:
        raise PlanError(f"{path}: {err}") from None


def plan_for_model(model_path: Path | str, window=None, quiet: bool = False) -> Plan:
    """The plan of the run a model file belongs to (``plan.json`` beside it), else the defaults.

    Args:
        model_path: the ``.keras`` file.
        window: the model's window, for the default plan of a model without one.
        quiet: no note when the defaults are used.
    """
    model_path = Path(model_path)
    plan = read_plan(model_path.parent)
    if plan is None:
        plan = default_plan(window=window)
        if not quiet:
            print(
                f"note: no {PLAN_FILE} beside {model_path}: predicting with the course defaults "
                f"({plan.intensity}, crop margin {plan.crop_margin})"
            )
    return plan
