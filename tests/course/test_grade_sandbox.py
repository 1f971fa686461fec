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
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest

from utils.course import grade, sandbox, wire
from utils.course.checks import run_check

from exercise_registry import EXERCISES

ROOT = Path(__file__).resolve().parents[2]
LESSON = "04_soft_dice_loss"
EX04 = [
    "single_class_dice_coefficient",
    "dice_coefficient",
    "soft_dice_loss",
    "compute_class_sens_spec",
    "get_sens_spec_df",
]
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
    path = tmp_path / "bad.ipynb"
    path.write_text(content)
    with pytest.raises(ValueError, match=reason):
        grade.read_submission(path, max_bytes=10**7)


def test_only_regular_files_are_read(tmp_path):
    fifo = tmp_path / "fifo.ipynb"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="a FIFO"):
        grade.read_submission(fifo, 10**6)  # returns at once: never blocks on the FIFO
    link = tmp_path / "link.ipynb"
    link.symlink_to(ROOT / "notebooks" / "solutions" / f"{LESSON}.ipynb")
    with pytest.raises(ValueError, match="symbolic link"):
        grade.read_submission(link, 10**7)
    found, _, _ = grade.collect([tmp_path])
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
    assert "| a\\|b c | a\\|b c.ipynb |" in summary
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
# Two grading runs: without and with the attackers
# ----------------------------------------------------------------------------


def _cells(path: Path, names: list[str]) -> list:
    """The code cells of ``path`` that define one of ``names``."""
    nb = nbformat.read(path, as_version=4)
    return [c for c in nb.cells if c.cell_type == "code" and any(f"def {n}(" in c.source for n in names)]


def _imports(path: Path) -> list:
    nb = nbformat.read(path, as_version=4)
    return [c for c in nb.cells if c.cell_type == "code" and "imports" in c.metadata.get("tags", [])]


def _write(path: Path, cells: list) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["course"] = {"lesson": LESSON}
    nb.cells = [nbformat.v4.new_code_cell(c) if isinstance(c, str) else c for c in cells]
    nbformat.write(nb, path)


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
    honest = _imports(solution) + _cells(solution, EX04)
    stub = _cells(learner, EX04)
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
            before = {f: f.read_bytes() for f in subs.iterdir() if f.is_file() and not f.is_fifo()}
            sandboxes = set(_alive("bwrap"))
            checkout = _tree_digest(ROOT / "utils")
            start = time.monotonic()
            code = _grade(subs, out)
            seconds = time.monotonic() - start
            after_exit = _alive(TOKEN)
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
    assert "| =HYPERLINK(1)\\|x |" in runs["attacked"]["summary"]
