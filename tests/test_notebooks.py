"""The exercise machinery and the shape every lesson must have."""

import json
import re

import pytest

import notebooks as nbtools

LESSONS = nbtools.lessons()


def test_there_are_lessons():
    assert [lesson.name for lesson in LESSONS][:1] == ["01_mri_exploration"]


def test_generated_notebooks_are_not_stale():
    stale = nbtools.build(check=True)
    assert stale == [], f"run `make notebooks`: stale {stale}"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.name)
def test_lesson_opening_cells(lesson):
    for path, version in ((lesson.learner, "learner"), (lesson.solution, "solution")):
        nb = json.loads(path.read_text())
        cells = nb["cells"]
        intro = "".join(cells[0]["source"])
        assert cells[0]["cell_type"] == "markdown" and intro.startswith("# Lesson ")
        assert "**You will learn to**" in intro
        assert re.search(r"\*\*Accelerator: (CPU|GPU)\*\*", intro)
        rel = path.relative_to(nbtools.notebooks_dir().parent).as_posix()
        assert f"(https://colab.research.google.com/github/{nbtools.COURSE_REPO}/blob/main/{rel})" in intro
        setup = "".join(cells[1]["source"])
        assert '"google.colab" in sys.modules' in setup and nbtools.COURSE_REPO in setup
        params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(params) == 1, f"{version}: exactly one parameters cell"
        assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code"), "no stored outputs"
        assert nb["metadata"]["kernelspec"]["name"] == "python3"


SOURCE = '''# %% [markdown]
# # Lesson 99 - demo
# [badge](COLAB_URL)

# %%
def add(a, b):
    """Add."""
    ### BEGIN SOLUTION
    # Hint: use the + operator
    total = a + b
    return total
    ### END SOLUTION

# %% tags=["check"]
check_add(add)
'''


def test_learner_version_has_stub_and_hints():
    text = nbtools.learner_source(SOURCE)
    assert "total = a + b" not in text
    assert "    ### START CODE HERE ###\n    # Hint: use the + operator\n" in text
    assert 'raise NotImplementedError("Exercise: write add() here' in text
    namespace = {}
    exec(text.split("# %% tags")[0].split("# %%\n")[1], namespace)
    with pytest.raises(NotImplementedError):
        namespace["add"](1, 2)


def test_solution_version_keeps_code_between_code_here_markers():
    text = nbtools.solution_source(SOURCE)
    assert "### BEGIN SOLUTION" not in text and "### END SOLUTION" not in text
    assert "    ### START CODE HERE ###\n    # Hint: use the + operator\n    total = a + b\n" in text
    assert "    return total\n    ### END CODE HERE ###" in text
    namespace = {}
    exec(text.split("# %% tags")[0].split("# %%\n")[1], namespace)
    assert namespace["add"](1, 2) == 3


def test_check_cells_may_raise_only_in_the_learner_version(tmp_path):
    src = tmp_path / "notebooks" / "99_demo.py"
    src.parent.mkdir()
    src.write_text(SOURCE)
    rendered = nbtools.render(nbtools.Lesson(src))
    learner = json.loads(rendered[src.with_suffix(".ipynb")])
    solution = json.loads(rendered[src.parent / "solutions" / "99_demo.ipynb"])
    assert learner["cells"][-1]["metadata"]["tags"] == ["check", "raises-exception"]
    assert solution["cells"][-1]["metadata"]["tags"] == ["check"]
    assert "notebooks/99_demo.ipynb" in "".join(learner["cells"][0]["source"])
    assert "notebooks/solutions/99_demo.ipynb" in "".join(solution["cells"][0]["source"])
    assert nbtools.solution_blocks(SOURCE)[0][0] == "add"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.name)
def test_the_solution_notebook_differs_from_the_learner_one_only_in_the_exercise_code(lesson):
    """`make test` executes the learner notebooks only; that proves the solution notebooks too. Their other cells
    are the learner's to the letter; a cell after an exercise that called the exercise's function would raise in
    the learner run (the stub raises), so none depends on it; and tests/course/test_exercises.py runs each
    solution's exercise and check cells (the solution passes its check). Only check cells may raise there."""
    learner, solution = (json.loads(path.read_text())["cells"] for path in (lesson.learner, lesson.solution))
    assert len(learner) == len(solution)
    where = f"notebooks/solutions/{lesson.solution.name}", f"notebooks/{lesson.learner.name}"
    exercises = 0
    for mine, theirs in zip(learner, solution):
        source, solved = "".join(mine["source"]), "".join(theirs["source"]).replace(*where)
        tags = theirs["metadata"].get("tags", [])
        assert mine["cell_type"] == theirs["cell_type"]
        if nbtools.START_HERE in source:
            exercises += 1
            assert "raise NotImplementedError" in source and nbtools.START_HERE in solved
        else:
            assert source == solved
        assert mine["metadata"].get("tags", []) == (
            [*tags, nbtools.RAISES_TAG] if nbtools.CHECK_TAG in tags else tags
        ), source[:200]
    assert exercises == len(nbtools.solution_blocks(lesson.source.read_text()))


def test_unbalanced_markers_are_refused():
    with pytest.raises(ValueError, match="unbalanced solution markers"):
        nbtools.learner_source("def f():\n    ### BEGIN SOLUTION\n    return 1\n")


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.name)
def test_readme_links_every_lesson_to_colab(lesson):
    readme = (nbtools.notebooks_dir().parent / "README.md").read_text()
    rel = lesson.learner.relative_to(nbtools.notebooks_dir().parent).as_posix()
    assert f"({nbtools.colab_url(rel)})" in readme
    assert f"(notebooks/solutions/{lesson.name}.ipynb)" in readme
