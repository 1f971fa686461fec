"""The instructor's grader (``utils.course.grade``).

Fast tests cover reading, identifying and the output rules. One grading run
(lesson 04, the light one) scores submissions made here from the generated
notebooks: the solution (full marks), the untouched learner notebook (zero), a
hard-coded answer (public tests pass, grading variants fail), a crash halfway,
an endless loop and a corrupt file.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import nbformat
import numpy as np
import pytest

import utils
from utils.course import grade, sandbox
from utils.course.checks import run_check
from utils.safety import OWNER_FILE, OwnedFiles, UnsafeWriteError

import notebooks as nbtools
from conftest import bad_notebook, cell_index, lesson_exercises
from exercise_registry import EXERCISES

ROOT = Path(__file__).resolve().parents[2]
LESSON = "04_soft_dice_loss"
LEARNER_NB = ROOT / "notebooks" / f"{LESSON}.ipynb"
SOLUTION_NB = ROOT / "notebooks" / "solutions" / f"{LESSON}.ipynb"


def _read(path: Path):
    return nbformat.read(path, as_version=4)


@pytest.fixture(scope="module")
def lessons():
    return grade.course_lessons()


# ----------------------------------------------------------------------------
# Reading and identifying a submission
# ----------------------------------------------------------------------------


def test_every_generated_notebook_says_its_lesson_and_version(lessons):
    for lesson in nbtools.lessons():
        for path in (lesson.learner, lesson.solution):
            meta = _read(path).metadata["course"]
            assert meta["lesson"] == lesson.name
            assert meta["version"] == utils.__version__
            assert meta["digest"] == hashlib.sha1(lesson.source.read_bytes()).hexdigest()[:12]
            assert meta["variant"] == ("learner" if path == lesson.learner else "solution")


@pytest.mark.parametrize(
    "content, reason",
    [
        (b'{"cells": [', "invalid JSON at line 1 column 12"),
        (b"\xff\xfe not text", "not UTF-8"),
        (b'{"metadata": {}}', "no 'cells' list"),
        (b"[1, 2, 3]", "no 'cells' list"),
    ],
)
def test_unreadable_files_give_a_reason(tmp_path, content, reason):
    with pytest.raises(ValueError, match=reason):
        grade.read_submission(bad_notebook(tmp_path, content), max_bytes=10**6)


def test_a_huge_file_is_not_read(tmp_path):
    path = tmp_path / "huge.ipynb"
    path.write_bytes(b" " * 3_000_000)
    with pytest.raises(ValueError, match="3 MB, over the 1 MB limit"):
        grade.read_submission(path, max_bytes=1_000_000)


def test_lesson_is_identified_from_metadata_title_or_functions(lessons):
    nb = _read(LEARNER_NB)
    assert grade.identify_lesson(nb, lessons)[:2] == (
        LESSON,
        f"course {utils.__version__}, lesson {nb.metadata['course']['digest']}",
    )
    assert grade.identify_lesson(nb, lessons)[2] == []

    older = _read(LEARNER_NB)
    older.metadata["course"]["digest"] = "0123456789ab"
    lesson, version, notes = grade.identify_lesson(older, lessons)
    assert lesson == LESSON and "lesson 0123456789ab" in version
    assert "another version of 04_soft_dice_loss" in notes[0]

    no_meta = _read(LEARNER_NB)
    del no_meta.metadata["course"]
    lesson, version, notes = grade.identify_lesson(no_meta, lessons)
    assert (lesson, version) == (LESSON, "unknown") and "no course metadata" in notes[0]

    untitled = nbformat.v4.new_notebook()
    untitled.cells = [nbformat.v4.new_code_cell("def get_sub_volume(image, label):\n    return None")]
    assert grade.identify_lesson(untitled, lessons)[0] == "02_patches_and_standardization"

    stranger = nbformat.v4.new_notebook()
    stranger.cells = [nbformat.v4.new_markdown_cell("# My holiday photos")]
    assert grade.identify_lesson(stranger, lessons)[0] == ""


def test_another_lesson_is_not_run_when_a_lesson_is_expected(tmp_path, lessons):
    path = tmp_path / "bob.ipynb"
    path.write_text((ROOT / "notebooks" / "02_patches_and_standardization.ipynb").read_text())
    sub = grade.grade_submission(path, "bob", lessons, grade.Limits(), expected_lesson=LESSON)
    assert sub.lesson == LESSON
    assert [e.exercise for e in sub.exercises] == lessons[LESSON].exercises
    assert all(e.score == 0 and "02_patches_and_standardization" in e.note for e in sub.exercises)
    assert "this is 02_patches_and_standardization, not 04_soft_dice_loss: not run" in sub.notes


def test_learner_names_come_from_the_file_or_its_first_folder(tmp_path):
    assert grade.learner_name(tmp_path / "alice.ipynb", None) == "alice"
    assert grade.learner_name(tmp_path / "alice.ipynb", tmp_path) == "alice"
    assert grade.learner_name(tmp_path / "bob" / "sub" / "04.ipynb", tmp_path) == "bob"


def test_the_kernel_environment_holds_nothing_of_the_graders(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADES_SECRET", "x")
    env = grade.kernel_env(tmp_path, tmp_path / "data", "/opt/course")
    assert "GRADES_SECRET" not in env
    assert env["COURSE_MODE"] == "ci" and env["HOME"] == str(tmp_path)
    assert env["COURSE_DATA_DIR"] == str(tmp_path / "data")
    assert env["PYTHONPATH"] == "/opt/course"  # the private package copy, never the checkout


# ----------------------------------------------------------------------------
# Where it writes
# ----------------------------------------------------------------------------


def _sub(learner: str = "alice") -> grade.Submission:
    ex = grade.ExerciseScore(
        "soft_dice_loss",
        public=[("a", True, ""), ("b", True, "")],
        grading=[("a", True, ""), ("b", False, "expected 1\ngot 2")],
    )
    return grade.Submission(Path(f"/x/{learner}.ipynb"), learner, LESSON, "course 0.1.0", exercises=[ex])


def test_outputs_refuse_the_checkout_and_the_submissions_folder(tmp_path):
    with pytest.raises(ValueError, match="inside"):
        grade.check_outputs(grade.Outputs.for_csv(ROOT / "grades.csv"), [ROOT], overwrite=True)
    subs = tmp_path / "subs"
    with pytest.raises(ValueError, match="inside"):
        grade.check_outputs(grade.Outputs.for_csv(subs / "out" / "grades.csv"), [subs], overwrite=True)
    with pytest.raises(ValueError, match="beside the submissions"):
        grade.check_outputs(grade.Outputs.for_csv(subs / "grades.csv"), [], overwrite=True, forbidden_here=[subs])
    grade.check_outputs(grade.Outputs.for_csv(subs / "out" / "grades.csv"), [], False, forbidden_here=[subs])


def test_outputs_are_replaced_only_when_this_grader_wrote_them(tmp_path):
    outputs = grade.Outputs.for_csv(tmp_path / "grades.csv")
    grade.check_outputs(outputs, [], overwrite=False)
    grade.write_outputs([_sub()], outputs)
    rows = list(csv.DictReader(outputs.csv.open()))
    assert rows[0]["score"] == "0.5" and rows[0]["grading_passed"] == "1" and rows[0]["public_passed"] == "2"
    text = (outputs.feedback / "alice.md").read_text()
    assert "- \u2718 b\n\n  ```text\n  fails on inputs the lesson does not show\n  ```" in text  # inputs stay hidden
    assert "expected 1" not in text
    assert "- \u2718 b\n\n  ```text\n  expected 1\n  got 2\n  ```" in grade.feedback_markdown(
        [_sub()], show_grading=True
    )

    with pytest.raises(FileExistsError, match="pass --overwrite"):
        grade.check_outputs(outputs, [], overwrite=False)
    grade.check_outputs(outputs, [], overwrite=True)  # ours, unchanged: may be replaced
    grade.write_outputs([_sub("carol")], outputs)
    assert sorted(p.name for p in outputs.feedback.iterdir()) == [OWNER_FILE, "carol.md"]

    outputs.csv.write_text(outputs.csv.read_text() + "edited by hand\n")
    with pytest.raises(UnsafeWriteError, match="no course command wrote it"):
        grade.check_outputs(outputs, [], overwrite=True)

    stranger = grade.Outputs.for_csv(tmp_path / "other.csv")
    stranger.csv.write_text("the instructor's own file\n")
    with pytest.raises(UnsafeWriteError, match="no course command wrote it"):
        grade.check_outputs(stranger, [], overwrite=True)
    assert stranger.csv.read_text() == "the instructor's own file\n"

    extra = grade.Outputs.for_csv(tmp_path / "third.csv")
    grade.write_outputs([_sub()], extra)
    (extra.feedback / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="did not write .*notes.txt"):
        grade.check_outputs(extra, [], overwrite=True)

    submitted = tmp_path / "alice.ipynb"
    submitted.write_text("{}")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "grades.csv").symlink_to(submitted)
    with pytest.raises(UnsafeWriteError, match="the input file"):
        grade.check_outputs(grade.Outputs.for_csv(tmp_path / "out" / "grades.csv"), [], True, inputs=[submitted])


# ----------------------------------------------------------------------------
# One grading run over hand-made submissions (executes notebooks: slow)
# ----------------------------------------------------------------------------


def _hard_coded_source(name: str, signature: str) -> str:
    """A function that returns, for the lesson's public test inputs, the answers it has memorised, and 0.5 else."""
    reference = EXERCISES[name].reference_function()
    table: dict[str, float] = {}

    def key(args, kwargs) -> str:
        parts = [np.asarray(a, dtype=np.float64).tobytes() + str(np.shape(a)).encode() for a in args]
        return hashlib.sha1(b"|".join(parts) + repr(sorted(kwargs.items())).encode()).hexdigest()

    def recorder(*args, **kwargs):
        out = reference(*args, **kwargs)
        table[key(args, kwargs)] = float(np.asarray(out))
        return out

    results = run_check(name, recorder, variant="public", record=True)
    assert all(r.passed for r in results) and table
    return (
        f"import hashlib\nimport numpy as np\nfrom keras import ops\n_ANSWERS = {json.dumps(table)}\n\n"
        f"def {name}{signature}:\n"
        "    args, kwargs = (y_true, y_pred), ({} if epsilon == 0.00001 else {'epsilon': epsilon})\n"
        "    parts = [np.asarray(a, dtype=np.float64).tobytes() + str(np.shape(a)).encode() for a in args]\n"
        "    key = hashlib.sha1(b'|'.join(parts) + repr(sorted(kwargs.items())).encode()).hexdigest()\n"
        "    return ops.convert_to_tensor(_ANSWERS.get(key, 0.5))\n"
    )


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade six submissions with the command line; return (rows by learner, outputs, exit code)."""
    base = tmp_path_factory.mktemp("grading")
    subs = base / "submissions"
    subs.mkdir()
    nbformat.write(_read(SOLUTION_NB), subs / "solution.ipynb")
    nbformat.write(_read(LEARNER_NB), subs / "untouched.ipynb")

    hard = _read(SOLUTION_NB)
    i = cell_index(hard, "def soft_dice_loss(")
    hard.cells[i].source = _hard_coded_source("soft_dice_loss", "(y_true, y_pred, axis=(1, 2, 3), epsilon=0.00001)")
    i = cell_index(hard, "def get_sens_spec_df(")
    hard.cells[i].source = "from utils import get_sens_spec_df  # the course's own answer"
    nbformat.write(hard, subs / "hardcoded.ipynb")

    crash = _read(SOLUTION_NB)
    i = cell_index(crash, "def soft_dice_loss(")
    crash.cells[i].source = crash.cells[i].source.replace("def soft_dice_loss(", "def my_soft_dice_loss(")
    j = cell_index(crash, "check_dice_coefficient(dice_coefficient)")
    crash.cells.insert(j + 1, nbformat.v4.new_code_cell("raise RuntimeError('crash halfway')"))
    crash.cells.insert(j + 2, nbformat.v4.new_code_cell("hog = bytearray(64 * 2**30)  # over the memory limit"))
    crash.cells.insert(j + 3, nbformat.v4.new_code_cell("for i in range(20000):\n    print('x' * 1000)"))
    forged = json.dumps({"ok": 0.0})  # a forged answer outside the grader's calls counts for nothing
    crash.cells.append(
        nbformat.v4.new_code_cell(
            f"from IPython.display import publish_display_data\npublish_display_data({{{grade.wire.MIME!r}: {forged!r}}})"
        )
    )
    crash.cells.append(nbformat.v4.new_code_cell("import os\nos._exit(3)"))
    nbformat.write(crash, subs / "crash.ipynb")

    loop = _read(SOLUTION_NB)
    j = cell_index(loop, "check_soft_dice_loss(soft_dice_loss)")
    loop.cells.insert(
        j + 1,
        nbformat.v4.new_code_cell(
            "import time\nwhile True:\n    try:\n        time.sleep(0.1)\n    except KeyboardInterrupt:\n        pass"
        ),
    )
    nbformat.write(loop, subs / "loop.ipynb")

    (subs / "corrupt.ipynb").write_text('{"cells": [{"cell_type": "code", "source": ')

    out = base / "out" / "grades.csv"
    with pytest.MonkeyPatch.context() as env:  # the phantom copy each kernel gets is built here
        env.setenv("COURSE_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        code = grade.main(
            [
                str(subs),
                "--out",
                str(out),
                "--lesson",
                "04",
                "--cell-timeout",
                "30",
                "--score-timeout",
                "120",
                "--timeout",
                "600",
                *(["--no-sandbox"] if sandbox.missing() else []),
            ]
        )
    rows: dict[str, dict[str, dict]] = {}
    for row in csv.DictReader(out.open()):
        rows.setdefault(row["learner"], {})[row["exercise"]] = row
    print(out.read_text())
    return rows, grade.Outputs.for_csv(out), code


EX04 = lesson_exercises(LESSON)


def _full(row: dict) -> bool:
    return (
        row["score"] == "1.0"
        and row["public_passed"] == row["public_total"] != "0"
        and row["grading_passed"] == row["grading_total"] != "0"
    )


def test_solution_scores_full_marks(graded):
    rows, outputs, code = graded
    assert code == 0
    assert list(rows["solution"]) == EX04
    assert all(_full(row) for row in rows["solution"].values()), rows["solution"]
    text = (outputs.feedback / "solution.md").read_text()
    assert "Score: **5.00 / 5**" in text and "\u2718" not in text
    hidden = (outputs.feedback / "hardcoded.md").read_text()
    assert "fails on inputs the lesson does not show" in hidden and "pred [[0, 1, 1]" not in hidden


def test_untouched_learner_notebook_scores_zero(graded):
    rows, outputs, _ = graded
    for row in rows["untouched"].values():
        assert row["score"] == "0.0" and row["public_passed"] == "0" and int(row["public_total"]) > 0, row
        assert row["grading_passed"] == "0" and "not attempted" in row["note"]


def test_hard_coded_answer_passes_public_tests_only(graded):
    rows, _, _ = graded
    row = rows["hardcoded"]["soft_dice_loss"]
    assert row["public_passed"] == row["public_total"] != "0", row
    assert row["grading_passed"] == "0" and int(row["grading_total"]) > 0, row  # its 0.5 is never expected
    assert row["score"] == "0.0" and "hard-coded" in row["note"]
    copied = rows["hardcoded"]["get_sens_spec_df"]
    assert copied["score"] == "0.0" and "uses the course's reference utils.get_sens_spec_df" in copied["note"]
    assert all(_full(rows["hardcoded"][name]) for name in EX04 if name not in ("soft_dice_loss", "get_sens_spec_df"))


def test_crash_halfway_scores_what_was_defined_and_says_where(graded):
    rows, outputs, _ = graded
    crash = rows["crash"]
    assert crash["soft_dice_loss"]["score"] == "0.0"
    assert "not defined" in crash["soft_dice_loss"]["note"] and "my_soft_dice_loss" in crash["soft_dice_loss"]["note"]
    assert all(_full(crash[name]) for name in EX04 if name != "soft_dice_loss"), crash
    text = (outputs.feedback / "crash.md").read_text()
    assert "raised RuntimeError: crash halfway" in text
    assert "raised MemoryError" in text
    assert "the kernel died in cell" in text and "re-ran the notebook on a fresh kernel without cell" in text


def test_endless_loop_is_stopped_and_the_rest_scored(graded):
    rows, outputs, _ = graded
    assert all(_full(rows["loop"][name]) for name in EX04), rows["loop"]
    text = (outputs.feedback / "loop.md").read_text()
    assert "ran past its 30 s time limit" in text and "did not stop when interrupted" in text


def test_corrupt_file_gets_rows_saying_unreadable(graded):
    rows, outputs, _ = graded
    assert list(rows["corrupt"]) == EX04
    assert all(row["score"] == "0.0" and row["note"] == "unreadable submission" for row in rows["corrupt"].values())
    assert "unreadable: not a notebook: invalid JSON" in (outputs.feedback / "corrupt.md").read_text()


def test_summary_counts_each_exercise(graded):
    _, outputs, _ = graded
    summary = outputs.summary.read_text()
    assert "| 04_soft_dice_loss | soft_dice_loss | 6 |" in summary
    assert OwnedFiles(outputs.csv.parent, grade.WRITTEN_BY).owns(outputs.csv)
    assert OwnedFiles(outputs.feedback, grade.WRITTEN_BY).owns(outputs.feedback / "solution.md")
