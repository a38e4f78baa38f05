"""Noise level estimate."""

from __future__ import annotations

import imageio.v3 as iio
import numpy
import pytest

from nlfilt.noise import estimate_sigma


@pytest.mark.parametrize("sigma", [2.0, 10.0, 50.0])
def test_pure_noise_on_a_smooth_image(sigma):
    smooth = numpy.add.outer(numpy.linspace(0, 100, 256), numpy.linspace(0, 30, 256))[:, :, None]
    noisy = smooth + numpy.random.default_rng(0).normal(0, sigma, smooth.shape)
    assert abs(estimate_sigma(numpy, noisy) - sigma) <= 0.05 * sigma


def test_channels_are_averaged():
    noise = numpy.random.default_rng(1).normal(size=(128, 128, 3)) * numpy.array([5.0, 10.0, 15.0])
    assert abs(estimate_sigma(numpy, noise) - 10.0) <= 0.5


def test_set12_with_sigma_25(set12):
    estimates = []
    for seed, path in enumerate(sorted(set12.glob("*.png"))):
        clean = iio.imread(path).astype(numpy.float64)
        noisy = clean + numpy.random.default_rng(seed).normal(0, 25, clean.shape)
        estimates.append(estimate_sigma(numpy, noisy[:, :, None]))
    assert numpy.all(numpy.abs(numpy.array(estimates) - 25) <= 2.5), estimates
