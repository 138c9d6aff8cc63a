# Two commands from nothing but Python >= 3.10: `make demo` (the digits transfer demo)
# and `make test` (the test suite, what CI runs). Both build the project-local .venv
# first; it is reinstalled only when pyproject.toml changes. `make demo-detection` runs
# the detection transfer demo in the same way, `make demo-text` the text one.
#
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu   # the CPU-only torch build
#   make test TORCH='torch torchvision'                          # any version pip finds
#   make test PYTEST_ARGS='-n 0 tests/test_cli.py'

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1 torchvision==0.29.1
TORCH_INDEX ?=
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: demo demo-detection demo-text test test-heavy venv clean-venv

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash recipes/digits/demo.sh

demo-detection: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash recipes/detection/demo.sh

demo-text: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash recipes/text/demo.sh

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the tests marked heavy (large models' parity), which `make test` and CI leave out
test-heavy: $(STAMP)
	$(BIN)/python -m pytest -m heavy $(PYTEST_ARGS)

venv: $(STAMP)

$(STAMP): pyproject.toml editors/vscode/package-lock.json
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10) and \
	  f"ftr needs Python >= 3.10, $(PYTHON) is {sys.version.split()[0]}: run make PYTHON=python3.11 (or another)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH)
	$(PIP) install --quiet -e ".[test]"
	# the TextMate engine that tests/test_vscode_grammar.py runs, where node is installed
	if command -v npm >/dev/null; then sh editors/vscode/install-test-tools.sh; fi
	touch $@

clean-venv:
	rm -rf $(VENV)
