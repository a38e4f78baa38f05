# The README's two quick-start commands.  Both work in a project virtual environment (.venv),
# so they also run where the system Python is externally managed (Debian 12, Ubuntu 23.04 and later).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --quiet --disable-pip-version-check

.PHONY: demo test venv

demo: venv  ## install nlfilt, denoise the shipped sample, print the PSNR before and after
	$(PIP) install -e .
	$(BIN)/nlfilt denoise examples/sample.png -o denoised.png --overwrite
	$(BIN)/python examples/psnr.py examples/sample_clean.png examples/sample.png denoised.png

test: venv  ## install the test dependencies and run the tests
	$(PIP) install -e '.[test]'
	$(BIN)/python -m pytest

venv: $(BIN)/python

# Without ensurepip (Debian's python3-venv not installed) the environment is made without pip,
# and pip is installed into it by the system's own pip.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  rm -rf $(VENV) && $(PYTHON) -m venv --without-pip $(VENV) && \
	  site="$$($(PYTHON) -c 'import os, pip; print(os.path.dirname(os.path.dirname(pip.__file__)))')" && \
	  PYTHONPATH="$$site" $(BIN)/python -m pip install --quiet --disable-pip-version-check --ignore-installed pip; } || { \
	  rm -rf $(VENV); echo "cannot create a virtual environment with $(PYTHON): install python3-venv" \
	  "(Debian, Ubuntu: apt-get install python3-venv) or set PYTHON=/path/to/python3" >&2; exit 1; }
