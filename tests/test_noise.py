"""Noise level estimate."""

from __future__ import annotations

import imageio.v3 as iio
import numpy
import pytest

from nlfilt.noise import estimate_sigma

from conftest import DATA_DIR


@pytest.mark.parametrize("sigma", [2.0, 10.0, 50.0])
def test_pure_noise_on_a_smooth_image(sigma):
    smooth = numpy.add.outer(numpy.linspace(0, 100, 256), numpy.linspace(0, 30, 256))[:, :, None]
    noisy = smooth + numpy.random.default_rng(0).normal(0, sigma, smooth.shape)
    assert abs(estimate_sigma(numpy, noisy) - sigma) <= 0.05 * sigma


def test_channels_are_averaged():
    noise = numpy.random.default_rng(1).normal(size=(128, 128, 3)) * numpy.array([5.0, 10.0, 15.0])
    assert abs(estimate_sigma(numpy, noise) - 10.0) <= 0.5


def test_tiny_images_still_give_an_estimate():
    noisy = numpy.random.default_rng(2).normal(0, 3.0, (4, 5, 1))
    assert numpy.isfinite(estimate_sigma(numpy, noisy))


@pytest.mark.parametrize("sigma", [5, 15, 25, 50])
def test_benchmark_images_with_known_noise(sigma):
    """Set12 and Set5 plus Gaussian noise: within 10 % on average and 20 % on every image.

    Some 'clean' benchmark images carry noise of their own (Set12's 10.png measures
    about 3 gray levels), which adds to the synthetic noise in quadrature; the
    per-image bound is therefore taken against sqrt(sigma^2 + sigma_clean^2), the
    noise the image really has, with sigma_clean estimated on the clean image.
    """
    paths = sorted((DATA_DIR / "set12").glob("*.png")) + sorted((DATA_DIR / "set5").glob("*.png"))
    if not paths:
        pytest.skip(f"benchmark images not found under {DATA_DIR}")
    relative, effective = [], []
    for seed, path in enumerate(paths):
        clean = iio.imread(path).astype(numpy.float64)
        clean = clean if clean.ndim == 3 else clean[:, :, None]
        noisy = clean + numpy.random.default_rng(seed).normal(0, sigma, clean.shape)
        estimate = estimate_sigma(numpy, noisy)
        relative.append(estimate / sigma - 1)
        effective.append(estimate / numpy.hypot(sigma, estimate_sigma(numpy, clean)) - 1)
    assert numpy.mean(numpy.abs(relative)) <= 0.10, relative
    assert numpy.max(numpy.abs(effective)) <= 0.20, effective
    if sigma >= 15:
        assert numpy.max(numpy.abs(relative)) <= 0.20, relative
