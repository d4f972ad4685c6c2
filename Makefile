# One-command set-up on a fresh clone: a local .venv with the CPU build of
# torch installed first (a plain `pip install torch` can pull a multi-GB CUDA
# build), then skmacro with its test, MD, distributed and documentation extras.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.skmacro-installed
# Where the CPU build of torch comes from: PyPI's own torch wheel for Linux
# is the CUDA build. Empty: pip's configured indexes only. One retry, so
# that a machine without network falls back to its local wheels in seconds.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: run test test-slow benchmark lint docs clean

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --retries 1 \
		$(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test,md,distributed,docs]"
	touch $@

run: $(STAMP)
	$(PY) -m skmacro predator-prey

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

benchmark: $(STAMP)
	$(PY) benchmarks/predator_prey_table2.py

lint: $(STAMP)
	$(PY) -m ruff check skmacro tests benchmarks examples docs/conf.py
	$(PY) -m ruff format --check skmacro tests benchmarks examples docs/conf.py

# The documentation site, warnings as errors, into docs/_build/html. The
# gallery runs every example once at its tiny size (seconds each).
docs: $(STAMP)
	rm -rf docs/_build docs/generated docs/auto_examples
	SKMACRO_EXAMPLE_SIZE=tiny MPLBACKEND=Agg OMP_NUM_THREADS=1 \
		$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) outputs docs/_build docs/generated docs/auto_examples
