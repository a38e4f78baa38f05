# The README's two quick-start commands.
PYTHON ?= python3

.PHONY: demo test

demo:  ## install nlfilt, denoise the shipped sample, print the PSNR before and after
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e .
	nlfilt denoise examples/sample.png -o denoised.png --overwrite
	$(PYTHON) examples/psnr.py examples/sample_clean.png examples/sample.png denoised.png

test:  ## install the test dependencies and run the tests
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(PYTHON) -m pytest
