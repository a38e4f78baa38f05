"""Quick start: denoise the shipped sample with nlfilt's defaults and report the PSNR.

Usage: python examples/denoise_sample.py [OUTPUT]   (default: denoised.png)

Reads examples/sample.png (8-bit gray, noise of standard deviation 25), runs
``nlfilt.denoise`` with its defaults (NLM, patch 5, window 11, sigma estimated
from the image, h = 0.8 sigma), writes the result as 8-bit PNG and prints the
PSNR against examples/sample_clean.png before and after.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy

import nlfilt

HERE = Path(__file__).resolve().parent


def psnr(image: numpy.ndarray, clean: numpy.ndarray) -> float:
    return float(10 * numpy.log10(255.0**2 / numpy.mean((image.astype(numpy.float64) - clean) ** 2)))


def main() -> None:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("denoised.png")
    noisy = iio.imread(HERE / "sample.png")
    clean = iio.imread(HERE / "sample_clean.png").astype(numpy.float64)
    start = time.perf_counter()
    denoised = nlfilt.denoise(noisy)
    seconds = time.perf_counter() - start
    result = numpy.clip(numpy.round(denoised), 0, 255).astype(numpy.uint8)
    iio.imwrite(output, result)
    print(f"{HERE / 'sample.png'}: PSNR {psnr(noisy, clean):.2f} dB")
    print(f"{output}: PSNR {psnr(result, clean):.2f} dB ({seconds:.2f} s, nlfilt {nlfilt.__version__})")


if __name__ == "__main__":
    main()
