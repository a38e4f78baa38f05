"""Regenerate the quick-start sample: a synthetic 256x256 gray scene and a noisy copy.

Usage: python examples/make_sample.py

Writes examples/sample_clean.png and examples/sample.png: :func:`nlfilt.sample.scene` and
:func:`nlfilt.sample.noisy_sample` (white Gaussian noise of standard deviation 25 in 8-bit units, seed 0).
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio

from nlfilt.sample import noisy_sample, scene

HERE = Path(__file__).resolve().parent


def main() -> None:
    iio.imwrite(HERE / "sample_clean.png", scene())
    iio.imwrite(HERE / "sample.png", noisy_sample())
    print(f"wrote {HERE / 'sample_clean.png'} and {HERE / 'sample.png'}")


if __name__ == "__main__":
    main()
