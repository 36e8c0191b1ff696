# Two commands set charlm up on a fresh machine:
#   make demo   install into .venv, train on the bundled Tiny Shakespeare, then sample from it
#   make test   install into .venv (with the test tools) and run the test suite
# The tests of `charlm inspect`'s report drive a real headless chromium; `make browser`
# installs Debian's (as root, where there is none), and `make test` runs them where it is.
#
# torch is pinned first so that pip never resolves the open `torch>=2.10` range to a
# multi-GB CUDA build on a CPU-only machine. Choose another build with e.g.
#   make demo TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin

.PHONY: install demo test bench browser clean

$(BIN)/charlm: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/charlm

demo: install
	$(BIN)/charlm train
	$(BIN)/charlm sample --temp 0.8

test: install
	$(BIN)/python -m pytest -q

browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
	  { echo "make browser: install chromium (as root: apt-get install chromium)"; exit 1; }

clean:
	rm -rf $(VENV) build *.egg-info
