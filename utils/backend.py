"""Start the Keras backend without start-up noise, and count its GPUs.

TensorFlow 2.21 prints, before its logging is set up, lines that no
``TF_CPP_MIN_LOG_LEVEL`` silences: absl's "All log messages before
absl::InitializeLog() ..." warning, the oneDNN notice, "Could not find cuda
drivers" and, on a machine without a GPU driver, ``failed call to cuInit ...
(303)``. In a notebook they land in the first cell's output, twice, and alarm
a learner on a CPU. :func:`quiet_start` imports TensorFlow and lists its
devices with the process's standard error (file descriptor 2, where the C++
code writes) captured, then writes back every captured line that is not one
of those known notices - a real error still shows. It also sets
``TF_CPP_MIN_LOG_LEVEL=2`` (unless already set), which keeps TensorFlow's
INFO and WARNING lines out and its ERROR lines in.

``import utils`` calls it, so a lesson imports ``utils`` before ``keras``.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager

LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"

# Notices TensorFlow prints at start-up on every machine (kept out of lessons).
_NOTICES = (
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"port\.cc:\d+\] oneDNN custom operations are on",
    r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
    r"^To enable the following instructions: .* rebuild TensorFlow",
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine",
)
_NO_DRIVER = re.compile(r"cudart_stub\.cc:\d+\] Could not find cuda drivers")
# Only dropped when TensorFlow also said there is no CUDA driver (a CPU machine).
_CUINIT_NO_DRIVER = re.compile(r"failed call to cuInit: .*UNKNOWN ERROR \(303\)")
_NOTICE = re.compile("|".join(_NOTICES))

_started = False


def filter_startup_lines(text: str) -> str:
    """Return ``text`` without TensorFlow's start-up notices (every other line kept).

    The ``cuInit ... (303)`` error is dropped only when the same output says
    that the machine has no CUDA driver; with a driver it is a real error.
    """
    no_driver = bool(_NO_DRIVER.search(text))
    kept = [
        line
        for line in text.splitlines(keepends=True)
        if not _NOTICE.search(line) and not (no_driver and _CUINIT_NO_DRIVER.search(line))
    ]
    return "".join(kept)


@contextmanager
def _captured_stderr():
    """Capture file descriptor 2 and write back what :func:`filter_startup_lines` keeps."""
    try:
        fd = sys.__stderr__.fileno() if sys.__stderr__ else 2
    except (AttributeError, OSError, ValueError):  # no real stderr (embedded interpreter)
        yield
        return
    for stream in (sys.stderr, sys.__stderr__):
        if stream is not None:
            stream.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), fd)
        try:
            yield
        finally:
            if sys.__stderr__ is not None:
                sys.__stderr__.flush()
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            kept = filter_startup_lines(capture.read().decode(errors="replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def quiet_start() -> None:
    """Import the TensorFlow backend (if it is Keras's backend) and list its devices, quietly.

    Runs once per process; a no-op for the JAX and PyTorch backends.
    """
    global _started
    if _started:
        return
    _started = True
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow" or "tensorflow" in sys.modules:
        return
    os.environ.setdefault(LOG_LEVEL_ENV, "2")
    with _captured_stderr():
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")
        except ImportError:  # Keras on another backend: nothing to quiet
            pass


def gpu_count() -> int:
    """Number of GPUs the current Keras backend sees (0 if none, or the driver is broken)."""
    quiet_start()
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return len(tf.config.list_physical_devices("GPU"))
        if backend == "jax":
            import jax

            return len([d for d in jax.devices() if d.platform == "gpu"])
        if backend == "torch":
            import torch

            return torch.cuda.device_count()
    except Exception:  # pragma: no cover - a broken driver counts as no GPU
        return 0
    return 0
