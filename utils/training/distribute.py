"""Training on several GPUs and on several machines (TensorFlow's ``tf.distribute``).

:func:`train <utils.training.train.train>` picks the strategy the way TensorFlow's
guides do (:func:`strategy_kind`):

* ``TF_CONFIG`` names several workers (a cluster, a Slurm job, a Kubernetes
  operator such as Kubeflow's TFJob sets it in every process) ->
  ``tf.distribute.MultiWorkerMirroredStrategy``: one process per machine,
  each with its GPUs (or CPU), gradients all-reduced over the network;
* no such ``TF_CONFIG`` and several GPUs -> ``tf.distribute.MirroredStrategy``
  (one process, one replica per GPU);
* otherwise no strategy (one device).

Under a strategy ``batch_size`` is the batch of each replica (GPU or worker):
a step trains on ``batch_size x replicas`` patches. Each replica draws its
own batches of the single-device stream (:func:`distributed_patches`), so
no two replicas see the same patches and a resumed run continues the stream.

Only the chief (task ``chief``, else worker 0) writes the run folder; the
other workers run the same callbacks into a temporary folder of their own
that is removed afterwards (:class:`Cluster`), as TensorFlow's multi-worker
guide recommends (saving may need every worker). All workers must see the
same run folder and data folder (a shared filesystem), and they check that
they resume from the same epoch (:func:`check_same`).

Keras 3.15's ``model.fit`` does not run under ``MultiWorkerMirroredStrategy``
as it ships (keras-team/keras#20585): its symbolic build reduces an eager
``PerReplica`` batch, and its step reduces scalar metrics with ``axis=0``.
:func:`patch_keras_for_multi_worker` works around both, only in a
multi-worker run.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CourseError

TF_CONFIG = "TF_CONFIG"
KINDS = ("multi_worker", "mirrored", "default")


@dataclass(frozen=True)
class Cluster:
    """This process's place in a multi-worker cluster (from ``TF_CONFIG``).

    Attributes:
        workers: number of training processes (``chief`` + ``worker`` tasks).
        task_type: ``"chief"`` or ``"worker"``.
        task_index: index of this task within its type.
    """

    workers: int
    task_type: str
    task_index: int
    has_chief: bool = False

    @property
    def is_chief(self) -> bool:
        """True for the task that writes: ``chief``, or worker 0 when the cluster has no chief."""
        return self.task_type == "chief" or (not self.has_chief and self.task_index == 0)

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.task_index}"

    def scratch_dir(self) -> Path:
        """A new temporary folder for what a non-chief worker writes (removed by :meth:`remove_scratch`)."""
        return Path(tempfile.mkdtemp(prefix=f"course-train-{self.task_type}{self.task_index}-"))

    @staticmethod
    def remove_scratch(folder: Path) -> None:
        """Delete a folder made by :meth:`scratch_dir` (and nothing else)."""
        folder = Path(folder)
        if folder.parent == Path(tempfile.gettempdir()) and folder.name.startswith("course-train-"):
            shutil.rmtree(folder, ignore_errors=True)


def parse_tf_config(text: str | None) -> Cluster | None:
    """The cluster ``TF_CONFIG`` describes, or None when it names fewer than two training tasks.

    Raises:
        ValueError: ``TF_CONFIG`` is not the JSON TensorFlow expects, or it
            makes this process a task type the course does not run
            (parameter server, evaluator).
    """
    if not text or not text.strip():
        return None
    try:
        config = json.loads(text)
        cluster, task = config.get("cluster") or {}, config.get("task") or {}
        workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    except (json.JSONDecodeError, AttributeError, TypeError) as err:
        raise ValueError(
            f'{TF_CONFIG} must be JSON like {{"cluster": {{"worker": ["host:port", ...]}}, '
            f'"task": {{"type": "worker", "index": 0}}}}; found {text!r} ({err})'
        ) from err
    if workers < 2:
        return None
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in ("chief", "worker") or not isinstance(index, int):
        raise ValueError(
            f"{TF_CONFIG}: the course trains with chief/worker tasks "
            f"(MultiWorkerMirroredStrategy); this process is task {task!r}"
        )
    if cluster.get("ps") or task_type not in cluster or not 0 <= index < len(cluster[task_type]):
        raise ValueError(
            f"{TF_CONFIG}: task {task!r} is not in the cluster {cluster!r} (parameter servers are not used)"
        )
    return Cluster(workers, task_type, index, has_chief=bool(cluster.get("chief")))


def current_cluster() -> Cluster | None:
    """:func:`parse_tf_config` of ``$TF_CONFIG``."""
    return parse_tf_config(os.environ.get(TF_CONFIG))


def strategy_kind(cluster: Cluster | None, gpus: int, backend: str = "tensorflow") -> str:
    """``"multi_worker"``, ``"mirrored"`` or ``"default"`` (see the module docstring).

    Raises:
        ValueError: a cluster is configured but the Keras backend is not TensorFlow.
    """
    if cluster is not None:
        if backend != "tensorflow":
            raise ValueError(
                f"{TF_CONFIG} names {cluster.workers} workers, but multi-worker training needs the "
                f"TensorFlow backend; KERAS_BACKEND is {backend!r}"
            )
        return "multi_worker"
    if backend == "tensorflow" and gpus > 1:
        return "mirrored"
    return "default"


@functools.cache
def make_strategy(kind: str):
    """The ``tf.distribute`` strategy of ``kind`` (None for ``"default"``); one per process.

    Raises:
        RuntimeError: ``MultiWorkerMirroredStrategy`` was asked for after
            TensorFlow had started running (its collectives must be set up
            first): start training in a fresh process (``python -m utils.training.train``).
    """
    if kind == "default":
        return None
    import tensorflow as tf

    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind != "multi_worker":
        raise ValueError(f"kind must be one of {KINDS}; found {kind!r}")
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as err:
        raise RuntimeError(
            f"{TF_CONFIG} asks for multi-worker training, but TensorFlow was already running in "
            f"this process ({err}); start it in a fresh process: python -m utils.training.train ..."
        ) from err
    patch_keras_for_multi_worker()
    return strategy


def _reduce_metrics_across_workers(values, strategy):
    import tensorflow as tf
    from keras import tree

    def reduce(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.reduce("MEAN", value, axis=None)
        return value

    return tree.map_structure(reduce, values)


def patch_keras_for_multi_worker() -> None:
    """Let Keras 3's TensorFlow trainer reduce step results under ``MultiWorkerMirroredStrategy``.

    Keras 3.15 reduces the per-replica metric values of a step with
    ``strategy.reduce("MEAN", v, axis=0)``, which fails on scalars
    ("Invalid reduction dimension 0 for input with 0 dimensions",
    keras-team/keras#20585). The replicas' values are averaged with
    ``axis=None`` instead (the mean across replicas, any shape). The epoch's
    logs come from the metrics' synchronised variables, summed over every
    worker, so every worker logs the same numbers. Idempotent.
    """
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer.reduce_per_replica, "course_patch", False):
        return
    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        import tensorflow as tf

        if reduction in ("auto", "mean") and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return _reduce_metrics_across_workers(values, strategy)
        return original(values, strategy, reduction)

    reduce_per_replica.course_patch = True
    trainer.reduce_per_replica = reduce_per_replica


def build_on_local_batch(model, strategy) -> None:
    """Make ``model.fit`` build the model from this worker's first batch.

    Keras 3.15 builds a model created under a strategy from the mean of the
    first distributed batch over the replicas, an eager ``strategy.reduce``
    that ``MultiWorkerMirroredStrategy`` cannot run ("Attempt to convert a
    value (PerReplica ...) to a Tensor"). Only the shapes matter for the
    build, so this worker's first replica's batch is used instead.
    """
    import tensorflow as tf
    from keras import tree

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tree.map_structure(local, next(it))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build


class ClusterError(CourseError, RuntimeError):
    """The workers of a cluster could not meet, or disagree on the run."""


def check_same(strategy, value: int, what: str) -> None:
    """Check that every worker holds the same ``value`` (a collective: every worker must call it).

    Also a barrier: no worker returns before all have called it.

    Raises:
        ClusterError: the workers disagree (they do not see the same run
            folder), or one of them stopped (its own output says why).
    """
    import tensorflow as tf

    @tf.function
    def gather():
        return strategy.gather(strategy.run(lambda: tf.constant([float(value)])), axis=0)

    try:
        values = gather().numpy()
    except tf.errors.OpError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if "aborted" in line), lines[0] if lines else type(err).__name__)
        raise ClusterError(
            f"the workers could not meet at {what}: {reason}. Another worker stopped "
            "(the chief, worker 0, refuses a bad run folder or data): see its output"
        ) from err
    if values.min() != values.max():
        raise ClusterError(
            f"the workers disagree on {what} ({values.min():g} to {values.max():g}; this worker: "
            f"{value}): every worker must see the same run folder and data (a shared filesystem)"
        )


def distributed_patches(strategy, batches, steps: int, initial_epoch: int = 0, parallel: int = 1):
    """A distributed dataset: each replica draws its own batches of ``batches``' stream.

    ``batches`` is a :class:`utils.training.pipeline.PatchDataset` of ``steps x
    replicas`` batches per epoch; replica ``r`` of step ``s`` gets batch
    ``s x replicas + r`` of the epoch, so the replicas together consume the
    single-device stream of a run with ``replicas`` times the steps, and a
    resumed run (``initial_epoch``) continues it. A ``fixed`` dataset
    (validation) repeats its batches every epoch.

    Args:
        strategy: the ``tf.distribute`` strategy.
        batches: where batch ``i`` of epoch ``e`` comes from (``batches.batch(i, e)``).
        steps: steps per epoch.
        initial_epoch: the first epoch (for resumed runs).
        parallel: batches prepared in parallel by each input pipeline.

    Returns:
        A ``tf.distribute`` dataset for ``model.fit``.
    """
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    x0, y0 = batches.batch(0, initial_epoch)
    signature = (tf.TensorSpec(x0.shape, tf.float32), tf.TensorSpec(y0.shape, tf.float32))

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local

        def load(k) -> tuple[np.ndarray, np.ndarray]:
            count, replica = divmod(int(k), local)
            epoch, step = divmod(count, steps)
            x, y = batches.batch(step * replicas + first + replica, epoch)
            return x.astype(np.float32), y.astype(np.float32)

        if batches.fixed:
            counter = tf.data.Dataset.range(steps * local).repeat()
        else:
            counter = tf.data.Dataset.range(initial_epoch * steps * local, np.iinfo(np.int64).max)
        data = counter.map(
            lambda k: tf.numpy_function(load, [k], (tf.float32, tf.float32)),
            num_parallel_calls=max(int(parallel), 1),
            deterministic=True,
        )
        data = data.map(lambda x, y: (tf.ensure_shape(x, signature[0].shape), tf.ensure_shape(y, signature[1].shape)))
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return data.with_options(options).prefetch(2)

    return strategy.distribute_datasets_from_function(dataset_fn)


def describe(strategy, cluster: Cluster | None, batch_size: int) -> str:
    """One line: the replicas and the global batch."""
    replicas = strategy.num_replicas_in_sync
    where = f"{cluster.workers} workers ({cluster.name} here)" if cluster else type(strategy).__name__
    return (
        f"distributed training on {where}: {replicas} replicas, batch_size {batch_size} per replica, "
        f"{batch_size * replicas} patches per step"
    )
