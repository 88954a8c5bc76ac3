# Two commands do all set-up on a fresh machine:
#   make demo   runs the demo on the bundled real Roadmap data
#   make test   runs the test suite
#   make docs   builds the documentation site into docs/_build/html (offline,
#               warnings are errors)
#   make wheel  builds the sdist and wheel, checks them, installs the wheel in a fresh
#               venv outside the repository and runs the quick demo there
# Both create .venv if absent and install everything into it. torch==2.13.0 (a
# CPU build) is installed only when the environment has no torch at all, so an
# existing GPU build is kept.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.epitensor-installed

.PHONY: demo test lint benchmark install docs wheel

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,ray,tune,docs]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/epitensor demo --out demo-output

test: $(STAMP)
	$(PY) -m pytest -q

docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

wheel: $(STAMP)
	bash scripts/check_wheel.sh $(PY)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts
