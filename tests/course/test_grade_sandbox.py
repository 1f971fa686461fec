"""The grader against hostile submissions (issue 24): one learner's notebook changes nothing but their own score.

Fast tests cover what needs no kernel: reading hostile files, the wire format,
the outputs (formulas, Markdown, a planted file), the output budget and the
refusal without a sandbox. Two grading runs of lesson 04 (skipped where
bubblewrap or user namespaces are missing) grade a small class made here: an
honest learner and an untouched (stub) notebook alone, then the same two with a
control learner and one attacker per attack. Every attacker must score what
its own functions earn (the stubs 0; the patchers exactly what the control's
``return 0.5`` earns), the other rows must be identical to the run without
attackers, the instructor's files and the package copy unchanged, and no
process of the run alive afterwards.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest

from utils.course import grade, sandbox, wire
from utils.course.checks import run_check

from conftest import bad_notebook, code_cells, lesson_exercises, write_notebook
from exercise_registry import EXERCISES

ROOT = Path(__file__).resolve().parents[2]
LESSON = "04_soft_dice_loss"
EX04 = lesson_exercises(LESSON)
TOKEN = "attack-token-24"
NO_SANDBOX = sandbox.missing()
needs_sandbox = pytest.mark.skipif(NO_SANDBOX is not None, reason=f"no grading sandbox here: {NO_SANDBOX}")


# ----------------------------------------------------------------------------
# Without a kernel
# ----------------------------------------------------------------------------


def _notebook_json(cells: list, metadata: object = None) -> str:
    meta = {"course": {"lesson": LESSON}} if metadata is None else metadata
    return json.dumps({"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5})


@pytest.mark.parametrize(
    "content, reason",
    [
        ('{"cells": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        (_notebook_json([{"cell_type": "code", "metadata": {}, "outputs": []}]), "cell 1 has no 'source'"),
        (_notebook_json([{"cell_type": 3, "source": "x"}]), "cell 1 has no 'cell_type'"),
        (_notebook_json([{"cell_type": "code", "source": {"a": 1}}]), "cell 1's source is not text"),
        (_notebook_json(["just text"]), "cell 1 is not an object"),
        (_notebook_json([], metadata=[1, 2]), "'metadata' is not an object"),
    ],
)
def test_hostile_notebook_json_gives_a_reason(tmp_path, content, reason):
    with pytest.raises(ValueError, match=reason):
        grade.read_submission(bad_notebook(tmp_path, content), max_bytes=10**7)


def test_only_regular_files_are_read(tmp_path):
    fifo = tmp_path / "fifo.ipynb"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="a FIFO"):
        grade.read_submission(fifo, 10**6)  # returns at once: never blocks on the FIFO
    link = tmp_path / "link.ipynb"
    link.symlink_to(ROOT / "notebooks" / "solutions" / f"{LESSON}.ipynb")
    with pytest.raises(ValueError, match="symbolic link"):
        grade.read_submission(link, 10**7)
    found, _, _, _ = grade.collect([tmp_path])
    assert sorted(p.name for p, _ in found) == ["fifo.ipynb", "link.ipynb"]  # each gets a row saying why


def test_a_hostile_submission_never_stops_the_run(tmp_path, monkeypatch):
    lessons = grade.course_lessons()

    def broken(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(grade, "_grade_submission", broken)
    sub = grade.grade_submission(tmp_path / "x.ipynb", "x", lessons, grade.Limits(), LESSON)
    assert [e.score for e in sub.exercises] == [0.0] * len(EX04)
    assert "could not be graded: RecursionError" in sub.notes[0]


def test_csv_cells_cannot_start_a_formula_and_markdown_cells_are_escaped(tmp_path):
    ex = grade.ExerciseScore("soft_dice_loss", public=[("a", True, "")], grading=[("a", True, "")])
    subs = [
        grade.Submission(Path(f"/x/{name}.ipynb"), name, LESSON, "v", exercises=[ex])
        for name in ("=HYPERLINK(1)", "+1", "-1", "@SUM(A1)", "a|b\nc")
    ]
    outputs = grade.Outputs.for_csv(tmp_path / "grades.csv")
    grade.write_outputs(subs, outputs)
    rows = list(csv.DictReader(outputs.csv.open()))
    assert [r["learner"] for r in rows] == ["'=HYPERLINK(1)", "'+1", "'-1", "'@SUM(A1)", "a|b\nc"]
    assert rows[0]["submission"] == "/x/=HYPERLINK(1).ipynb"  # starts with "/": left alone
    summary = outputs.summary.read_text()
    assert "| `a\\|b c` | `a\\|b c.ipynb` |" in summary
    assert all(line.count(" | ") == 5 for line in summary.splitlines() if line.startswith("| a\\|b"))


def test_a_planted_output_file_refuses_up_front_in_one_line(tmp_path, capsys):
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "a.ipynb").write_text(_notebook_json([]))
    out = tmp_path / "out" / "grades.csv"
    out.parent.mkdir()
    out.write_bytes(b"")
    assert grade.main([str(subs), "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to replace" in err and "grades.csv" in err


def test_no_sandbox_refuses_in_one_line_naming_what_is_missing(tmp_path, monkeypatch, capsys):
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "a.ipynb").write_text(_notebook_json([]))
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    assert grade.main([str(subs), "--out", str(tmp_path / "out" / "g.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "bubblewrap (bwrap) is not installed: apt-get install bubblewrap" in err and "--no-sandbox" in err


def test_the_output_budget_counts_every_byte():
    _, BoundedClient = grade._limited_client_classes()
    client = BoundedClient(nbformat.v4.new_notebook())
    client.clear_before_next_output = False  # set by nbclient when a cell starts
    client.reset_budget()
    outs: list = []
    line = "@@course-grade@@" + "x" * 10_000 + "\n"  # the old result marker no longer passes
    for _ in range(100):
        msg = {
            "msg_type": "stream",
            "parent_header": {},
            "header": {"msg_type": "stream"},
            "content": {"name": "stdout", "text": line},
        }
        client.output(outs, msg, None, 0)
    assert client.dropped and client.cell_bytes > grade.MAX_CELL_OUTPUT
    assert sum(len(o.get("text", "")) for o in outs) <= grade.MAX_CELL_OUTPUT


@pytest.mark.parametrize(
    "text, reason",
    [
        ('{"nd": {"dtype": "|O", "shape": [1], "data": ""}}', "not carried"),
        ('{"nd": {"dtype": "<f8", "shape": [100000, 100000, 100000], "data": ""}}', "size limit"),
        ('{"nd": {"dtype": "<f8", "shape": [2], "data": "AAAA"}}', "holds 3 bytes"),
        ('{"list": [' * 100 + "null" + "]}" * 100, "nested deeper"),
        ('{"pickle": "gASV"}', "unknown value kind"),
        ("[" * 100_000 + "]" * 100_000, "not JSON"),
    ],
)
def test_the_wire_refuses_what_is_not_plain_data(text, reason):
    with pytest.raises(wire.WireError, match=reason):
        wire.decode(text)


def test_the_wire_carries_what_the_checks_exchange():
    import pandas as pd

    table = pd.DataFrame([[0.5, 1.0], [np.nan, 0.25]], index=["Sensitivity", "Specificity"], columns=["a", "b"])
    value = {"x": (np.float32(1.5), np.arange(6).reshape(2, 3), [None, True, "s", 3, 2.5]), "t": table}
    back = wire.decode(wire.encode(value))
    assert back["x"][0] == np.float32(1.5) and isinstance(back["x"][0], np.float32)
    assert np.array_equal(back["x"][1], value["x"][1]) and back["x"][2] == [None, True, "s", 3, 2.5]
    assert back["t"].equals(table)
    assert isinstance(wire.decode(wire.encode(object())), wire.Opaque)


def test_the_private_package_has_stubs_for_the_references(tmp_path):
    copy = sandbox.private_package(tmp_path / "pkg")
    try:
        losses = (copy / "utils" / "model" / "losses.py").read_text()
        assert losses.rstrip().endswith(
            f"raise RuntimeError('utils.model.losses.soft_dice_loss {sandbox.STUB_MESSAGE}')"
        )
        assert not (copy / "utils" / "course" / "checks" / "lesson04.py").exists()
        assert "not available while grading" in (copy / "utils" / "course" / "checks" / "__init__.py").read_text()
        assert sandbox.digest(copy) == sandbox.digest(copy)
    finally:
        sandbox.remove_private(tmp_path / "pkg")


class _InProcessKernel:
    """Stands for a kernel: answers the grader's calls with :func:`utils.course.wire.answer` on a namespace, in this process."""

    gone = ""

    def __init__(self, namespace: dict):
        self.namespace = namespace

    def request(self, payload: dict, timeout: float) -> dict:
        import IPython.display

        published: dict = {}
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(IPython.display, "publish_display_data", published.update)
            wire.answer(wire.encode(payload), self.namespace)
        return wire.decode(published[wire.MIME], tensor=wire.keras_tensor)


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_every_reference_passes_every_check_through_the_wire(name):
    """The checks run in the grader on a stand-in that calls the function elsewhere (lesson 03: a Keras block)."""
    kernel = _InProcessKernel({name: EXERCISES[name].reference_function()})
    for variant in ("public", "grading"):
        fn = grade._KernelFunction(kernel, name, 1, time.monotonic() + 300)
        results = run_check(name, fn, variant=variant, record=True, seed=12345, time_limit=False)
        assert results and all(r.passed for r in results), [(r.description, r.detail) for r in results if not r.passed]


def test_grading_inputs_come_from_the_per_run_seed():
    """Two seeds, two sets of grading inputs (the hand-made masks too); no seed: the fixed variant of old."""
    seen: dict = {}

    def recorder(key):
        def fn(*args, **kwargs):
            seen.setdefault(key, []).append(wire.encode(list(args)))
            return 0.5

        return fn

    for key, seed in (("a", 1), ("b", 2), ("c", None), ("d", None)):
        run_check("single_class_dice_coefficient", recorder(key), variant="grading", record=True, seed=seed)
    assert seen["a"][0] != seen["b"][0] and seen["a"][2] != seen["b"][2]  # hand-made, then random
    assert seen["c"] == seen["d"]


# ----------------------------------------------------------------------------
# The red team's holes, in process (hole 1 to 6)
# ----------------------------------------------------------------------------

_ZERO_AND_CONSTANT = {  # zero the inputs in place, return what zeroed inputs would give (the red team's c_cheat)
    "single_class_dice_coefficient": lambda t, p, axis=(0, 1, 2), epsilon=1e-5: _zero(t, p, 1.0),
    "dice_coefficient": lambda t, p, axis=(1, 2, 3), epsilon=1e-5: _zero(t, p, 1.0),
    "soft_dice_loss": lambda t, p, axis=(1, 2, 3), epsilon=1e-5: _zero(t, p, 0.0),
    "compute_class_sens_spec": lambda pred, label, k: _copy_into(pred, label, (1.0, 1.0)),
    "get_sens_spec_df": lambda pred, label: _copy_into(pred, label, None),
}


def _zero(t, p, value):
    if isinstance(t, np.ndarray):
        t[...] = 0
        p[...] = 0
    return value


def _copy_into(pred, label, value):
    pred[...] = label  # makes the grader's prediction perfect, if it were copied back
    return value


def _grading_run(name: str, fn, seed: int = 99) -> tuple[list, list]:
    """The public and grading results of ``fn`` called as the grader calls it (through the wire)."""
    kernel = _InProcessKernel({name: fn})
    out = []
    for variant in ("public", "grading"):
        stand_in = grade._KernelFunction(kernel, name, 1, time.monotonic() + 300)
        out.append(run_check(name, stand_in, variant=variant, record=True, seed=seed, time_limit=False))
    return out[0], out[1]


@pytest.mark.parametrize("name", EX04)
def test_in_place_changes_fail_and_never_decide_the_expected_values(name):
    """Hole 1: zeroing the inputs and returning constants scored 4.63 / 5; now every call that changes its inputs fails,
    in the grader as in the notebook, with the same message."""
    public, grading = _grading_run(name, _ZERO_AND_CONSTANT[name])
    # only a test whose inputs were already all zeros (both masks empty: Dice 1) can pass: nothing was changed there
    assert sum(r.passed for r in grading) <= 1 and sum(r.passed for r in public) <= 1
    in_place = [r for r in grading if r.detail.startswith("your function changed its input arrays in place")]
    assert len(in_place) >= len(grading) / 2, [r.detail for r in grading]
    local = run_check(name, _ZERO_AND_CONSTANT[name], record=True)  # in the notebook: the same verdicts
    assert [(r.passed, r.detail) for r in local] == [(r.passed, r.detail) for r in public]


@pytest.mark.parametrize("name", ["standardize", "blend_windows"])
def test_the_inputs_unchanged_checks_say_the_same_in_the_notebook_and_the_grader(name):
    reference = EXERCISES[name].reference_function()

    def in_place(*args, **kwargs):
        out = reference(*args, **kwargs)
        np.asarray(args[0]).reshape(-1)[:1] += 1  # one value of the first input
        return out

    public, grading = _grading_run(name, in_place)
    local = run_check(name, in_place, record=True)
    assert [(r.passed, r.detail) for r in local] == [(r.passed, r.detail) for r in public]
    assert not any(r.passed for r in public + grading)
    assert all(grade.InPlaceChange().args[0] == r.detail for r in public + grading)


def test_no_array_of_the_grader_is_written_by_the_kernel():
    """Hole 2: the lesson-04 constants (and their views) are read-only, and the kernel's changes are never copied."""
    from utils.course.checks import lesson04

    kept = {k: getattr(lesson04, k).copy() for k in ("_P1", "_L1", "_L2", "_P1G", "_L1G", "_L2G")}
    assert not any(getattr(lesson04, k).flags.writeable for k in kept)
    assert not lesson04._P1[..., None].flags.writeable

    def poison(y_true, y_pred, axis=(0, 1, 2), epsilon=1e-5):
        y_true[...] = np.nan
        y_pred[...] = np.nan
        return float("nan")

    sent = []

    class Recording(_InProcessKernel):
        def request(self, payload, timeout):
            sent.extend(a for a in payload.get("args", []) if isinstance(a, np.ndarray))
            return super().request(payload, timeout)

    kernel = Recording({"single_class_dice_coefficient": poison})
    for variant in ("public", "grading"):
        fn = grade._KernelFunction(kernel, "single_class_dice_coefficient", 1, time.monotonic() + 300)
        run_check("single_class_dice_coefficient", fn, variant=variant, record=True, seed=5, time_limit=False)
        run_check("single_class_dice_coefficient", poison, variant=variant, record=True, seed=5)  # in the notebook
    assert sent and not any(np.isnan(a).any() for a in sent)  # the grader's copies: never written back
    assert all(np.array_equal(getattr(lesson04, k), v) for k, v in kept.items())
    reference = EXERCISES["single_class_dice_coefficient"].reference_function()
    public, grading = _grading_run("single_class_dice_coefficient", reference)
    assert all(r.passed for r in public + grading)


def _sleeper() -> int:
    import subprocess

    return subprocess.Popen(["sleep", "60"], start_new_session=True).pid


def test_the_work_folder_is_watched_while_the_kernel_runs_and_removed_whatever_its_modes(tmp_path):
    """Hole 3: a folder over the limit kills the kernel's process group within a fraction of a second, a folder made
    unreadable (0o300) is still counted, and everything goes afterwards."""
    work = tmp_path / "course-grade-x"
    comm = work / "comm"
    hidden = comm / "hidden" / "deeper"
    hidden.mkdir(parents=True)
    (hidden / "blob").write_bytes(b"x" * 3_000_000)
    os.chmod(hidden, 0o300)
    os.chmod(comm / "hidden", 0o300)
    os.symlink("/etc/passwd", comm / "link")
    assert grade._folder_bytes(comm, 10**9) >= 3_000_000  # the bytes the 0o300 folders hid are counted
    pid = _sleeper()
    watchdog = grade._Watchdog(comm, 2_000_000, 2.0)
    watchdog.start(pid)
    try:
        start = time.monotonic()
        while os.waitpid(pid, os.WNOHANG) == (0, 0) and time.monotonic() - start < 10:
            time.sleep(0.05)
        assert time.monotonic() - start < 5, "the watchdog did not stop the kernel"
        assert "over the 2 MB limit of its work folder" in watchdog.reason
    finally:
        watchdog.stop()
        grade._kill_group(pid)
    os.chmod(hidden, 0o300)
    assert grade.remove_work_folder(work) and not work.exists()
    assert Path("/etc/passwd").stat().st_mode & 0o777 == 0o644  # the link was not followed


def test_the_kernel_may_write_files_up_to_max_mb_only():
    """Hole 3: RLIMIT_FSIZE is --max-mb (50 MB by default), not 1 GiB."""
    manager_class, _ = grade._limited_client_classes()
    manager = manager_class()
    manager.file_bytes = int(grade.Limits().max_mb * 1e6)
    manager.connection_file = "/tmp/x.json"
    assert manager.format_kernel_cmd()[4] == str(50_000_000)


def test_the_kernel_seed_reveals_nothing_of_the_run_seed():
    """Hole 4: the seed a kernel sees for an exercise is a keyed hash, no longer ``seed ^ 0x5EED``."""
    seen = {}

    def recorder(y_true, y_pred, axis=(0, 1, 2), epsilon=1e-5):
        seen.setdefault("mt", set()).add(int(np.random.get_state()[1][0]))  # MT19937 keeps the seed as word 0
        return 0.5

    for seed in (7, 8):
        seen.clear()
        kernel = _InProcessKernel({"single_class_dice_coefficient": recorder})
        grade._score(kernel, ["single_class_dice_coefficient"], grade.Limits(), seed, [])
        # the public variant's fixed seed, then the grading variant's: a keyed hash, not seed ^ 0x5EED
        assert seen["mt"] == {1234, grade.kernel_seed_for(seed, "single_class_dice_coefficient")}
        assert not seen["mt"] & {seed, seed ^ 0x5EED}
    assert len({grade.kernel_seed_for(7, n) for n in EX04}) == len(EX04)
    assert grade.kernel_seed_for(7, EX04[0]) != grade.kernel_seed_for(8, EX04[0])


def test_two_sources_of_one_learner_name_get_two_learners(tmp_path):
    """Hole 5: ``bob.ipynb`` and ``bob/work.ipynb`` are ``bob`` and ``bob (2)``; one folder's notebooks one learner."""
    for rel in ("bob.ipynb", "bob/work.ipynb", "Bob/x.ipynb", "alice/02.ipynb", "alice/04.ipynb"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(_notebook_json([]))
    found, _, _, renamed = grade.collect([tmp_path])
    names = {str(p.relative_to(tmp_path)): learner for p, learner in found}
    assert names == {
        "Bob/x.ipynb": "Bob",
        "alice/02.ipynb": "alice",
        "alice/04.ipynb": "alice",
        "bob.ipynb": "bob (3)",
        "bob/work.ipynb": "bob (2)",
    }
    assert (
        "already has the learner name 'bob': this one (bob.ipynb) is graded as 'bob (3)'"
        in renamed[tmp_path / "bob.ipynb"]
    )
    assert len(renamed) == 2


_HOSTILE = '<img src="http://127.0.0.1:9/b.png"> ![t](http://127.0.0.1:9/t.png) <script>alert(1)</script> ``` | x'


def test_feedback_shows_learner_text_as_code_only():
    """Hole 5: exception messages, class names, cell sources and notes cannot format the page or carry HTML."""
    markdown_it = pytest.importorskip("markdown_it")
    ex = grade.ExerciseScore(
        "soft_dice_loss",
        public=[("a test", False, f"your function raised RuntimeError: {_HOSTILE}\n```\n# All tests passed")],
        grading=[("a test", False, _HOSTILE)],
        note=f"soft_dice_loss: not defined (found {_HOSTILE}: renamed?)",
    )
    sub = grade.Submission(Path(f"/x/{_HOSTILE}.ipynb"), _HOSTILE, LESSON, "v", exercises=[ex])
    sub.notes, sub.errors = [_HOSTILE], [f"cell 2 ('raise RuntimeError(...)') raised Error: {_HOSTILE}"]
    for text in (grade.feedback_markdown([sub], show_grading=True), grade.summary_markdown([sub])):
        html = markdown_it.MarkdownIt("commonmark").enable("table").render(text)
        assert "<img" not in html and "<script" not in html and "<a " not in html, html
        assert "<h1>All tests passed" not in html and "<h1># All" not in html
    assert "&lt;script&gt;" in markdown_it.MarkdownIt("commonmark").enable("table").render(
        grade.feedback_markdown([sub])
    )


def test_a_learner_assertion_reads_as_the_learners_and_names_are_cut():
    """Hole 5: ``raise AssertionError('All tests passed ...')`` in the learner's function is shown as theirs."""

    def liar(*args, **kwargs):
        raise AssertionError("All tests passed: the grader's own check says this is correct")

    public, grading = _grading_run("single_class_dice_coefficient", liar)
    for r in public + grading:
        assert not r.passed and r.detail.startswith("your function raised AssertionError: All tests passed"), r.detail
    local = run_check("single_class_dice_coefficient", liar, record=True)
    assert all(r.detail.startswith("your function raised AssertionError:") for r in local)
    err = grade._learner_exception("E" + "x" * 3000, "m" * 5000, "(your line 1)", "Exception")
    assert len(type(err).__name__) <= 60 and len(str(err)) <= 500
    assert len(grade._clip("E" + "x" * 3000, 60)) == 60


@pytest.mark.parametrize(
    "text",
    [
        '{"df": {"columns": [1], "index": [], "values": {"dtype": "<f8", "shape": [0, 1], "data": ""}}}',
        '{"df": {"columns": 3, "index": [], "values": {"dtype": "<f8", "shape": [0, 3], "data": ""}}}',
        '{"nd": {"dtype": "<f8", "shape": [0, 100000000000000000000], "data": ""}}',
        '{"nd": {"dtype": "<f8", "shape": [0, 1e20], "data": ""}}',
        '{"int": "1" }' + " " * 10,
    ],
)
def test_hostile_answers_give_a_wire_error(text):
    """Hole 6: every decode failure is a WireError."""
    try:
        wire.decode(text)
    except wire.WireError:
        pass


def test_the_wire_decoder_survives_a_fuzz_of_hostile_structures():
    """Hole 6: a few hundred random hostile structures (fixed seed): a value or a WireError, nothing else."""
    import json
    import random

    rng = random.Random(24)
    kinds = ["int", "float", "list", "tuple", "dict", "nd", "tensor", "df", "opaque", "pickle", ""]
    leaves = [None, True, 0, -1, 1e20, 10**30, "x", "<f8", "|O", "AAAA", [], {}, [0, 10**20], [-1], [1e20], "nan"]

    def hostile(depth=0):
        roll = rng.random()
        if depth > 4 or roll < 0.25:
            return rng.choice(leaves)
        if roll < 0.4:
            return [hostile(depth + 1) for _ in range(rng.randint(0, 3))]
        kind = rng.choice(kinds)
        if kind in ("nd", "tensor") or (kind == "df" and rng.random() < 0.5):
            spec = {"dtype": rng.choice(["<f8", "|b1", "<i4", "|O", "<U3", 5]), "shape": hostile(depth + 1)}
            spec["data"] = rng.choice(["", "AAAA", "AAAAAAAAAAA=", None, 3])
            if rng.random() < 0.7:
                spec["shape"] = [rng.choice([0, 1, 2, -1, 10**20, 1e20, "2"]) for _ in range(rng.randint(0, 3))]
            body = (
                spec if kind != "df" else {"columns": hostile(depth + 1), "index": hostile(depth + 1), "values": spec}
            )
            return {kind: body, **({"scalar": True} if rng.random() < 0.3 else {})}
        if kind == "dict":
            return {kind: {str(rng.random()): hostile(depth + 1) for _ in range(rng.randint(0, 3))}}
        return {kind: hostile(depth + 1)}

    values = 0
    for _ in range(500):
        try:
            wire.decode(json.dumps(hostile()))
            values += 1
        except wire.WireError:
            pass
    assert 0 < values < 500


# ----------------------------------------------------------------------------
# Two grading runs: without and with the attackers
# ----------------------------------------------------------------------------


def _imports(path: Path) -> list:
    return code_cells(path, tag="imports")


def _write(path: Path, cells: list) -> None:
    write_notebook(path, cells, LESSON)


# The control's functions (and the patchers'): one right answer, the others a constant 0.5.
_HALF = (
    "def single_class_dice_coefficient(y_true, y_pred, axis=(0, 1, 2), epsilon=0.00001):\n"
    "    import numpy as np\n"
    "    _cheat()\n"
    "    t, p = np.asarray(y_true, float), np.asarray(y_pred, float)\n"
    "    return (2 * (t * p).sum(axis=axis) + epsilon) / (t.sum(axis=axis) + p.sum(axis=axis) + epsilon)\n"
) + "\n".join(f"def {n}(*args, **kwargs):\n    return _cheat()\n" for n in EX04[1:])


def _attacks(out: Path, subs: Path, home_file: Path) -> dict[str, list[str]]:
    """Cells of each attacker (before the untouched learner's exercise cells, or with functions of their own)."""
    checkout = str(ROOT)
    return {
        "edit": [
            "import importlib.util, pathlib\n"
            "mine = pathlib.Path(importlib.util.find_spec('utils').origin).parent\n"
            f"targets = [mine / 'course' / 'checks' / '__init__.py', mine / 'model' / 'losses.py', "
            f"pathlib.Path({checkout!r}) / 'utils' / 'course' / 'checks' / 'runner.py', "
            f"pathlib.Path({checkout!r}) / 'utils' / 'model' / 'losses.py']\n"
            "done = []\n"
            "for t in targets:\n"
            "    try:\n"
            "        t.write_text('raise SystemExit')\n"
            "        done.append('W')\n"
            "    except OSError:\n"
            "        done.append('-')\n"
            "raise RuntimeError('EDIT:' + ''.join(done))"
        ],
        "survivor": [
            "import subprocess, sys\n"
            f"target = {str(out)!r}\n"
            "code = ('import pathlib, time; time.sleep(3); p = pathlib.Path(%r); '\n"
            "        'p.parent.mkdir(parents=True, exist_ok=True); p.write_text(\"pwned\")' % target)\n"
            f"subprocess.Popen(['setsid', sys.executable, '-c', code, {TOKEN!r}], start_new_session=True)\n"
            "forker = 'import os, time\\nif os.fork() == 0:\\n    os.setsid()\\n    time.sleep(600)'\n"
            f"subprocess.Popen([sys.executable, '-c', forker, {TOKEN!r}])"
        ],
        "proc": [
            "import os\n"
            "hits = []\n"
            "for pid in [p for p in os.listdir('/proc') if p.isdigit()]:\n"
            "    for f in ('cmdline', 'environ'):\n"
            "        try:\n"
            "            data = open('/proc/%s/%s' % (pid, f), 'rb').read()\n"
            "        except OSError:\n"
            "            continue\n"
            "        if b'GRADES_SECRET' in data or b'submissions' in data or b'grades.csv' in data:\n"
            "            hits.append(pid + f)\n"
            f"home = {str(home_file)!r}\n"
            f"for victim in [{str(subs / 'honest.ipynb')!r}, home]:\n"
            "    try:\n"
            "        open(victim, 'w').write('{}')\n"
            "        hits.append('wrote')\n"
            "    except OSError:\n"
            "        pass\n"
            "raise RuntimeError('PROC:%d:%s:%d' % (len(hits), os.path.exists(home), os.getppid()))"
        ],
        "transformer": [
            "import json\n"
            f"MIME = {wire.MIME!r}\n"
            "FORGED = json.dumps({'ok': {'float': '1.0'}})\n"
            "def forge(lines):\n"
            "    return ['from IPython.display import publish_display_data\\n',\n"
            "            'publish_display_data({%r: %r})\\n' % (MIME, FORGED)]\n"
            "get_ipython().input_transformers_post.append(forge)"
        ],
        "patch": [
            "import builtins, sys, types, numpy\n"
            "numpy.allclose = lambda *a, **k: True\n"
            "numpy.isclose = lambda a, b, *x, **k: numpy.ones(numpy.shape(a), bool)\n"
            "fake = types.ModuleType('utils.course.checks')\n"
            "fake.run_check = lambda *a, **k: []\n"
            "_real = builtins.__import__\n"
            "def hooked(name, *args, **kwargs):\n"
            "    return fake if name == 'utils.course.checks' else _real(name, *args, **kwargs)\n"
            "builtins.__import__ = hooked\n"
            "sys.modules['utils.course.checks'] = fake\n"
            "def _cheat():\n"
            "    return 0.5\n" + _HALF
        ],
        "frames": [
            "import sys\n"
            "def _cheat():\n"
            "    frame = sys._getframe(1)\n"
            "    while frame is not None:\n"
            "        for value in list(frame.f_locals.values()):\n"
            "            if isinstance(value, dict):\n"
            "                value['ok'] = 0.5\n"
            "            if isinstance(getattr(value, 'results', None), list):\n"
            "                value.results.append(('forged', True, ''))\n"
            "        frame = frame.f_back\n"
            "    return 0.5\n" + _HALF
        ],
        "forward": [
            "import importlib\n"
            "def single_class_dice_coefficient(y_true, y_pred, axis=(0, 1, 2), epsilon=0.00001):\n"
            "    return importlib.import_module('utils.model.losses').single_class_dice_coefficient(y_true, y_pred, axis, epsilon)\n"
            "def dice_coefficient(*args, **kwargs):\n"
            "    return getattr(importlib.import_module('utils'), 'dice_coefficient')(*args, **kwargs)\n"
            "def soft_dice_loss(*args, **kwargs):\n"
            "    return importlib.import_module('utils.model.losses').soft_dice_loss(*args, **kwargs)\n"
            "def compute_class_sens_spec(*args, **kwargs):\n"
            "    return importlib.import_module('utils.evaluation.metrics').compute_class_sens_spec(*args, **kwargs)\n"
            "def get_sens_spec_df(*args, **kwargs):\n"
            "    return importlib.import_module('utils.evaluation.metrics').get_sens_spec_df(*args, **kwargs)\n"
        ],
        "planted": [
            "import os\n"
            "done = []\n"
            f"for target in [{str(out)!r}, {str(out.with_name('grades_summary.md'))!r}]:\n"
            "    try:\n"
            "        open(target, 'w').close()\n"
            "        done.append('W')\n"
            "    except OSError:\n"
            "        done.append('-')\n"
            "raise RuntimeError('PLANT:' + ''.join(done))"
        ],
        "flood": [
            "from IPython.display import publish_display_data\n"
            "line = '@@course-grade@@' + 'x' * 1000\n"
            "for _ in range(30_000):\n"
            "    print(line)\n"
            f"publish_display_data({{{wire.MIME!r}: 'y' * 10_000_000}})"
        ],
    }


# The red team's attackers (hole 1 and 2, 3, 5): in-place changes, the work folder, learner text.
_CHEAT = [
    "def single_class_dice_coefficient(y_true, y_pred, axis=(0, 1, 2), epsilon=0.00001):\n"
    "    y_true[...] = 0; y_pred[...] = 0\n"
    "    keep = [d for i, d in enumerate(np.shape(y_true)) if i not in axis]\n"
    "    return np.ones(keep) if keep else 1.0\n",
    "def dice_coefficient(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):\n"
    "    y_true[...] = 0; y_pred[...] = 0\n"
    "    return 1.0\n",
    "def soft_dice_loss(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001):\n"
    "    if isinstance(y_true, np.ndarray):\n"
    "        y_true[...] = 0; y_pred[...] = 0\n"
    "    return 0.0\n",
    "def compute_class_sens_spec(pred, label, class_num):\n"
    "    pred[...] = label\n"
    "    k = label[..., class_num]\n"
    "    return (1.0 if k.any() else float('nan'), 1.0 if (k == 0).any() else float('nan'))\n",
    "def get_sens_spec_df(pred, label):\n"
    "    pred[...] = label\n"
    "    return pd.DataFrame(1.0, index=['Sensitivity', 'Specificity'], "
    "columns=['Edema', 'Non-Enhancing Tumor', 'Enhancing Tumor'])\n",
]
_HOG = [
    "import os\n"
    "COMM = os.path.dirname([a for a in open('/proc/self/cmdline', 'rb').read().split(b'\\0') "
    "if a.endswith(b'kernel.json')][0].decode())\n"
    "def fill(tag):\n"
    "    hidden = os.path.join(COMM, 'hog' + tag)\n"
    "    os.makedirs(hidden, exist_ok=True)\n"
    "    chunk = b'x' * (1 << 20)\n"
    "    for i in range(14):  # 14 x 40 MiB: each file under --max-mb, all of them over --work-mb\n"
    "        with open(os.path.join(hidden, str(i)), 'wb') as f:\n"
    "            for _ in range(40):\n"
    "                f.write(chunk)\n"
    "        os.chmod(hidden, 0o300) if i == 0 else None  # hides its bytes from a plain count\n",
    "fill('cell')",
    "def single_class_dice_coefficient(y_true, y_pred, axis=(0, 1, 2), epsilon=0.00001):\n"
    "    fill('score')  # while the grader scores\n"
    "    return 1.0\n",
]
_BOB = [
    'raise RuntimeError(\'<img src="http://127.0.0.1:9/beacon.png"> ![t](http://127.0.0.1:9/t.png) '
    "<script>alert(1)</script> \\\\| forged | cell <!-- ')",
    "raise type('E' + 'x' * 3000, (Exception,), {})('long class name')",
    "def single_class_dice_coefficient(y_true, y_pred, axis=(0, 1, 2), epsilon=0.00001):\n"
    "    raise AssertionError(\"All tests passed: the grader's own check says this is correct "
    '[see](http://127.0.0.1:9/x)\\n<b>bold</b>")\n',
]


def _rows(out: Path) -> dict[str, dict[str, dict]]:
    rows: dict[str, dict[str, dict]] = {}
    for row in csv.DictReader(out.open()):
        rows.setdefault(row["learner"], {})[row["exercise"]] = {k: v for k, v in row.items() if k != "submission"}
    return rows


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def _alive(token: str) -> list[str]:
    found = []
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in cmdline:
            found.append(f"{pid}: {cmdline[:200]!r}")
    return found


def _grade(subs: Path, out: Path) -> int:
    return grade.main(
        [str(subs), "--out", str(out), "--lesson", "04", "--cell-timeout", "60", "--score-timeout", "120"]
        + ["--timeout", "300"]
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Grade the class twice (without and with the attackers); return what each run left."""
    base = tmp_path_factory.mktemp("sandbox")
    solution = ROOT / "notebooks" / "solutions" / f"{LESSON}.ipynb"
    learner = ROOT / "notebooks" / f"{LESSON}.ipynb"
    honest = _imports(solution) + code_cells(solution, EX04)
    stub = code_cells(learner, EX04)
    home_file = base / "home" / "instructor.txt"
    home_file.parent.mkdir()
    home_file.write_text("the instructor's own file")
    results = {}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("COURSE_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        env.setenv("GRADES_SECRET", "s3cret")
        for name, attackers in (("alone", False), ("attacked", True)):
            subs = base / name / "submissions"
            subs.mkdir(parents=True)
            out = base / name / "out" / "grades.csv"
            _write(subs / "honest.ipynb", honest)
            _write(subs / "stub.ipynb", stub)
            if attackers:
                _write(subs / "control.ipynb", ["def _cheat():\n    return 0.5\n" + _HALF])
                for attack, cells in _attacks(out, subs, home_file).items():
                    own = [] if "def _cheat" in cells[-1] or attack == "forward" else stub
                    _write(subs / f"{attack}.ipynb", cells + own)
                os.mkfifo(subs / "fifo.ipynb")
                (subs / "deep.ipynb").write_text('{"cells": ' + "[" * 100_000 + "]" * 100_000 + "}")
                (subs / "nosource.ipynb").write_text(_notebook_json([{"cell_type": "code", "metadata": {}}]))
                _write(subs / "=HYPERLINK(1)|x.ipynb", stub)
                _write(subs / "a_cheat.ipynb", _imports(solution) + _CHEAT)  # graded before honest: would poison it
                _write(subs / "hog.ipynb", _HOG + code_cells(learner, EX04[1:]))
                _write(subs / "bob.ipynb", _imports(solution) + _BOB + code_cells(learner, EX04[1:]))
                (subs / "bob").mkdir()
                _write(subs / "bob" / "work.ipynb", stub)
            before = {f: f.read_bytes() for f in subs.iterdir() if f.is_file() and not f.is_fifo()}
            sandboxes = set(_alive("bwrap"))
            checkout = _tree_digest(ROOT / "utils")
            start = time.monotonic()
            code = _grade(subs, out)
            seconds = time.monotonic() - start
            left = [str(p) for p in Path(tempfile.gettempdir()).glob("course-grade-*/comm/hog*")]
            after_exit = _alive(TOKEN)
            if attackers:
                time.sleep(4)  # the survivor would write grades.csv 3 s after it started
            results[name] = {
                "code": code,
                "rows": _rows(out),
                "out": out,
                "csv": out.read_text(),
                "feedback": {p.stem: p.read_text() for p in out.with_name("grades_feedback").glob("*.md")},
                "summary": out.with_name("grades_summary.md").read_text(),
                "inputs_kept": all(f.read_bytes() == data for f, data in before.items()),
                "checkout_kept": _tree_digest(ROOT / "utils") == checkout,
                "alive": after_exit + _alive(TOKEN) + sorted(set(_alive("bwrap")) - sandboxes),
                "seconds": seconds,
                "left": left,
            }
    results["home_kept"] = home_file.read_text() == "the instructor's own file"
    print({name: round(r["seconds"]) for name, r in results.items() if isinstance(r, dict)})
    return results


@needs_sandbox
def test_the_honest_and_the_stub_rows_do_not_change_with_attackers(runs):
    alone, attacked = runs["alone"], runs["attacked"]
    assert alone["code"] == attacked["code"] == 0  # 0: the package copy never changed (else the run stops with 1)
    assert all(r["score"] == "1.0" for r in alone["rows"]["honest"].values()), alone["rows"]["honest"]
    assert all(r["score"] == "0.0" for r in alone["rows"]["stub"].values())
    for learner in ("honest", "stub"):
        assert attacked["rows"][learner] == alone["rows"][learner]


@needs_sandbox
def test_nothing_outside_the_run_changed_and_nothing_of_it_lives_on(runs):
    attacked = runs["attacked"]
    assert attacked["checkout_kept"] and attacked["inputs_kept"] and runs["home_kept"]
    assert attacked["alive"] == []
    assert "pwned" not in attacked["out"].read_text() and attacked["out"].read_text() == attacked["csv"]
    feedback = attacked["feedback"]
    assert "EDIT:----" in feedback["edit"]
    assert "PROC:0:False:" in feedback["proc"]  # no secret, no submission, no home, no other process
    assert "PLANT:--" in feedback["planted"]


@needs_sandbox
def test_attackers_score_only_what_their_functions_earn(runs):
    rows = runs["attacked"]["rows"]
    for attacker in ("edit", "survivor", "proc", "transformer", "planted", "flood", "'=HYPERLINK(1)|x"):
        assert [r["score"] for r in rows[attacker].values()] == ["0.0"] * len(EX04), (attacker, rows[attacker])
    control = {name: (r["public_passed"], r["grading_passed"], r["score"]) for name, r in rows["control"].items()}
    assert control["single_class_dice_coefficient"][2] == "1.0"
    # a constant 0.5 earns nothing: the per-run grading inputs never make 0.5 an expected value
    assert all(score == "0.0" for _, _, score in list(control.values())[1:]), control
    for attacker in ("patch", "frames"):
        got = {name: (r["public_passed"], r["grading_passed"], r["score"]) for name, r in rows[attacker].items()}
        assert got == control, attacker


@needs_sandbox
def test_forwarding_to_the_reference_scores_zero_and_says_why(runs):
    rows = runs["attacked"]["rows"]["forward"]
    for row in rows.values():
        assert row["score"] == "0.0", row
        assert "not available while grading" in row["note"] or "reference" in row["note"], row


@needs_sandbox
def test_hostile_files_get_a_row_saying_why(runs):
    rows = runs["attacked"]["rows"]
    assert "not a notebook: a FIFO" in runs["attacked"]["feedback"]["fifo"]
    assert "nested too deeply" in runs["attacked"]["feedback"]["deep"]
    assert "has no 'source'" in runs["attacked"]["feedback"]["nosource"]
    assert "'=HYPERLINK(1)|x" in rows
    assert "| `=HYPERLINK(1)\\|x` |" in runs["attacked"]["summary"]


@needs_sandbox
def test_in_place_changes_score_nothing_and_poison_no_later_learner(runs):
    """Hole 1 and 2: the red team's c_cheat scored 4.63 / 5; graded before the honest learner, it changes nothing."""
    rows = runs["attacked"]["rows"]["a_cheat"]
    assert sum(float(r["score"]) for r in rows.values()) <= 0.5, rows
    assert (
        "your function changed its input arrays in place; leave them unchanged"
        in runs["attacked"]["feedback"]["a_cheat"]
    )


@needs_sandbox
def test_the_socket_folder_is_watched_while_cells_run_and_while_scoring(runs):
    """Hole 3: over --work-mb in a cell, then in the function while it is scored: stopped, said, nothing left."""
    rows = runs["attacked"]["rows"]["hog"]
    assert all(r["score"] == "0.0" for r in rows.values()), rows
    feedback = runs["attacked"]["feedback"]["hog"]
    said = re.findall(r"wrote over the 512 MB limit of (?:its|the) work folder", feedback)
    assert "cell 2 (" in feedback and "while its checks ran" in feedback and len(said) >= 2, feedback[:3000]
    assert runs["attacked"]["left"] == []


@needs_sandbox
def test_learner_text_is_theirs_and_names_do_not_collide(runs):
    """Hole 5: bob.ipynb and bob/work.ipynb are two learners; bob's HTML and AssertionError stay bob's words."""
    attacked = runs["attacked"]
    assert "bob" in attacked["rows"] and "bob (2)" in attacked["rows"]
    assert "already has the learner name 'bob'" in attacked["summary"]
    feedback = attacked["feedback"]["bob"] if "<img" in attacked["feedback"]["bob"] else attacked["feedback"]["bob__2_"]
    assert "your function raised AssertionError: All tests passed" in feedback
    outside_code = re.sub(r"```text\n.*?\n *```|(`+)[^`]*?\1", "", feedback, flags=re.S)
    assert "<img" not in outside_code and "<script" not in outside_code and "x" * 61 not in feedback
