# Brain tumour segmentation course: one command to run the course, one to test it.
#   make demo   - create .venv, build the phantom data, execute every lesson into build/ (COURSE_MODE=cpu to force the CPU demo)
#   make test   - create .venv, run ruff (lint, format check), pytest on utils and nbval on every learner notebook (tiny volume)
#   make lab    - open the lessons in JupyterLab
#   make notebooks - regenerate the learner/solution notebooks from notebooks/NN_*.py (scripts/notebooks.py)
#   make grade SUBMISSIONS=folder/ OUT=grades.csv [LESSON=04] - score learner notebooks (docs/instructors.md)
#   make report-check - open the HTML case report in headless Chromium (apt-get install chromium)
#   make book     - the course site of the executed lessons (after make demo): build/book/index.html
#   make book-check - build the site and open every page in headless Chromium (figures drawn, no request out)
#   make pictures - redraw the README's pictures (docs/pictures/) from the trained cpu run (after make demo)

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
DEV_STAMP := $(VENV)/.installed-dev
LAB_STAMP := $(VENV)/.installed-lab
SOLUTIONS := $(sort $(wildcard notebooks/solutions/[0-9][0-9]_*.ipynb))
BUILD := build/lessons

.PHONY: help install demo test lab notebooks data grade clean report-check book book-check pictures

help:
	@sed -n '2,11p' Makefile

$(DEV_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info; assert v >= (3, 10), f"Python 3.10+ needed; found {sys.version}"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

$(LAB_STAMP): $(DEV_STAMP)
	$(PY) -m pip install --quiet -e ".[dev,lab]"
	touch $@

install: $(LAB_STAMP)

test: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
# nbval executes the learner notebooks; the solution notebooks are the same cells with the exercises solved
# (tests/test_notebooks.py), whose solutions and check cells tests/course/test_exercises.py runs.
	COURSE_MODE=ci $(PY) -m pytest tests notebooks --ignore=notebooks/solutions --nbval-lax --nbval-current-env --nbval-cell-timeout=900

data: $(DEV_STAMP)
	$(PY) -c "from utils.data.phantom import ensure_phantom; print(ensure_phantom())"

demo: $(LAB_STAMP) data
	@mkdir -p $(BUILD)
	@$(PY) -c "from utils.config import course_mode; print('course mode:', course_mode(), '(COURSE_MODE, else gpu when a GPU is visible, else cpu)')"
	@set -e; for nb in $(SOLUTIONS); do \
	  echo "== executing $$nb"; \
	  $(BIN)/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=1800 \
	    --output-dir $(BUILD) "$$nb"; \
	  $(BIN)/jupyter nbconvert --to html --template classic --output-dir $(BUILD) "$(BUILD)/$$(basename $$nb)"; \
	done
	@echo "Executed lessons: $(BUILD)/*.ipynb and $(BUILD)/*.html"

lab: $(LAB_STAMP)
	$(BIN)/jupyter lab notebooks

notebooks: $(DEV_STAMP)
	$(PY) scripts/notebooks.py

grade: $(DEV_STAMP)
	@test -n "$(SUBMISSIONS)" -a -n "$(OUT)" || { echo "usage: make grade SUBMISSIONS=folder/ OUT=grades.csv [LESSON=04]"; exit 2; }
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m utils.course.grade $(SUBMISSIONS) --out $(OUT) $(if $(LESSON),--lesson $(LESSON))

# The report in a real browser (not part of `make test`: Debian's chromium is needed, and the full-size
# case takes minutes in software WebGL). Screenshots and reports land in build/report-check/.
REPORT_CHECK_SHAPE ?= 240x240x155
report-check: $(DEV_STAMP)
	@command -v chromium >/dev/null || { echo "chromium not found: apt-get install chromium"; exit 1; }
	REPORT_CHECK_SHAPE=$(REPORT_CHECK_SHAPE) REPORT_CHECK_DIR=$(CURDIR)/build/report-check \
	  $(PY) -m pytest tests/visualization/test_report_browser.py -s -p no:cacheprovider

# The course site (scripts/book.py, docs/book/conf.py): the lessons make demo executed, not run again.
BOOK_LESSONS ?= $(BUILD)
book: $(DEV_STAMP)
	$(PY) scripts/book.py --lessons $(BOOK_LESSONS) --out build/book

# The real site in headless Chromium (make test runs the same test on a small site it builds itself).
book-check: $(DEV_STAMP)
	@command -v chromium >/dev/null || { echo "chromium not found: apt-get install chromium"; exit 1; }
	BOOK_CHECK_LESSONS=$(CURDIR)/$(BOOK_LESSONS) BOOK_CHECK_DIR=$(CURDIR)/build/book \
	  $(PY) -m pytest tests/visualization/test_book_browser.py -s -p no:cacheprovider

# The README's pictures, from the cpu run make demo trained (RUN, DATA: another run and its dataset).
pictures: $(DEV_STAMP)
	$(PY) scripts/readme_pictures.py $(if $(RUN),--run $(RUN)) $(if $(DATA),--data $(DATA))

clean:
	rm -rf build .pytest_cache
