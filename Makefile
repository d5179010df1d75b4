# vidsearch: two commands matter, `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of torch; override on a machine with a GPU, e.g. TORCH_SPEC=torch==2.13.0 from the CUDA index.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed
DEMO_DIR ?= demo
PORT ?= 8000

.PHONY: install test test-fast demo bench bench-quick test-tools bench-tools clean

install: $(STAMP)

# --no-compile, then one compileall over both cores: pip byte-compiles one file at a time, which took half the
# install. The byte code must be written here: where PYTHONDONTWRITEBYTECODE is set, Python never writes it at
# import, and every process (each test's CLI, each decoding worker) would compile torch, numpy and the rest from
# source again, 1.5 to 2.5 s of CPU for torch and transformers alone. A file that does not compile (a Python 2
# script inside a package) cannot be imported either; its error is not the install's.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --no-compile --upgrade pip
	$(PIP) install -q --no-compile "$(TORCH_SPEC)"
	$(PIP) install -q --no-compile -e ".[test,bench]"
	$(PY) -m compileall -q -j 0 $(VENV)/lib >/dev/null 2>&1 || true
	touch $(STAMP)

# Debian packages, installed only when their command is missing (never a downloaded build). Every program a
# test or benchmark runs is installed by test-tools; tests/test_tools.py checks that none is left out.
apt-install = @command -v $(1) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then { [ -n "$$(ls /var/lib/apt/lists 2>/dev/null | grep -v lock)" ] || apt-get update -qq; } \
	    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null \
	    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; }; \
	  else echo "$(1) is missing: run 'sudo apt-get install $(2)'"; fi; }

# chromium for the browser test, ffmpeg and wrk for the benchmark harness and the soak test, java for METEOR,
# PostgreSQL's server binaries for the store tests on PostgreSQL.
test-tools:
	$(call apt-install,chromium,chromium)
	$(call apt-install,ffmpeg,ffmpeg)
	$(call apt-install,wrk,wrk)
	$(call apt-install,java,default-jre-headless)
	$(call apt-install,/usr/lib/postgresql/*/bin/initdb,postgresql)

bench-tools: test-tools

# Whole test files spread over TEST_WORKERS processes (pytest-xdist): a file's module fixtures (a trained
# model, a running server) are built once, and most tests use one core.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -ra -n $(TEST_WORKERS) --dist loadfile

test: install test-tools
	$(PYTEST)

test-fast: install
	$(PYTEST) -m "not slow"

demo: install
	$(VENV)/bin/vidsearch demo --dir $(DEMO_DIR) --port $(PORT)

bench: install bench-tools
	$(PY) -m benchmarks.run --out BENCHMARKS.md

bench-quick: install bench-tools
	$(PY) -m benchmarks.run --quick --out bench-out/BENCHMARKS-quick.md

clean:
	rm -rf $(VENV) build *.egg-info
