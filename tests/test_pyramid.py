"""One coarser scale (nlfilt.pyramid): block means, bilinear upsampling, Gaussian smoothing and the
pilot's refinement, against dense float64 references; and the collaborative filter's use of it at low
signal-to-noise."""

from __future__ import annotations

import numpy
import pytest

import nlfilt
from nlfilt import pyramid
from nlfilt.backend import get_backend

CPU = get_backend("cpu")
RNG = numpy.random.default_rng(5)


def dense_smooth(image, width):
    """The Gaussian smoothing by its definition: every output pixel a weighted sum over the mirrored
    image."""
    reach = int(numpy.ceil(3 * width))
    weights = numpy.exp(-0.5 * (numpy.arange(-reach, reach + 1) / width) ** 2)
    weights /= weights.sum()

    def mirrored(index, length):
        while index < 0 or index >= length:
            index = -index - 1 if index < 0 else 2 * length - 1 - index
        return index

    out = numpy.zeros_like(image)
    height, width_ = image.shape[:2]
    for row in range(height):
        for col in range(width_):
            for a, wa in zip(range(-reach, reach + 1), weights, strict=True):
                for b, wb in zip(range(-reach, reach + 1), weights, strict=True):
                    out[row, col] += wa * wb * image[mirrored(row + a, height), mirrored(col + b, width_)]
    return out


def test_halving_averages_blocks_and_halves_white_noise():
    image = RNG.normal(0, 10, (41, 38, 2))
    halved = pyramid.halve(numpy, image)
    assert halved.shape == (20, 19, 2)  # the odd last row left out
    numpy.testing.assert_allclose(halved[3, 5], image[6:8, 10:12].mean(axis=(0, 1)))
    noise = pyramid.halve(numpy, RNG.normal(0, 8, (512, 512, 1)))
    assert noise.std() == pytest.approx(4.0, rel=0.01)
    shifted = noise[1:, :, 0] * noise[:-1, :, 0]  # neighbouring block means are uncorrelated
    assert abs(shifted.mean()) < 0.01 * 16


def test_upsampling_inverts_halving_on_linear_images():
    rows, cols = numpy.mgrid[:30, :26].astype(numpy.float64)
    ramp = (2.0 * rows - 0.5 * cols + 3)[:, :, None]
    back = pyramid.upsample(numpy, pyramid.halve(numpy, ramp), ramp.shape[:2])
    assert back.shape == ramp.shape
    numpy.testing.assert_allclose(back[1:-1, 1:-1], ramp[1:-1, 1:-1], atol=1e-12)  # held at the edges
    constant = numpy.full((5, 4, 3), 7.0)
    numpy.testing.assert_allclose(pyramid.upsample(numpy, constant, (11, 8)), 7.0)


@pytest.mark.parametrize("width", [0.6, 1.0, 1.7])
def test_smoothing_is_the_mirrored_gaussian_convolution(width):
    image = RNG.normal(0, 1, (13, 9, 2))
    numpy.testing.assert_allclose(pyramid.smooth(numpy, image, width), dense_smooth(image, width), atol=1e-12)
    numpy.testing.assert_allclose(pyramid.smooth(numpy, numpy.ones((6, 7, 1)), width), 1.0, atol=1e-12)


def test_refining_keeps_a_pilot_the_coarse_estimate_agrees_with_and_is_local():
    pilot = RNG.normal(0, 1, (40, 36, 1))
    coarse = pyramid.halve(numpy, pilot)
    numpy.testing.assert_allclose(pyramid.refine(numpy, pilot, coarse), pilot, atol=1e-12)
    moved = coarse.copy()
    moved[10, 8] += 1.0  # the block of fine rows 20-21, columns 16-17
    change = numpy.abs(pyramid.refine(numpy, pilot, moved) - pilot)[:, :, 0]
    rows, cols = numpy.nonzero(change > 0)
    assert rows.min() >= 20 - pyramid.REACH and rows.max() <= 21 + pyramid.REACH
    assert cols.min() >= 16 - pyramid.REACH and cols.max() <= 17 + pyramid.REACH
    assert change.sum() == pytest.approx(4.0)  # the block's correction, spread, keeps its sum


def test_the_coarse_scale_refines_the_pilot_at_low_signal_to_noise_only(refinements):
    calls = refinements
    rows, cols = numpy.mgrid[:64, :70]
    clean = 100 + 30 * numpy.sin(rows / 5.0) * numpy.cos(cols / 7.0)
    noisy = clean + RNG.normal(0, 25, clean.shape)
    for low_snr, expected in ((False, []), (True, [((64, 70, 1), (32, 35, 1))])):
        calls.clear()
        nlfilt.denoise_collaborative(noisy, sigma=25.0, low_snr=low_snr, device="cpu")
        assert calls == expected
    calls.clear()
    nlfilt.denoise_collaborative(noisy[:15, :40], sigma=25.0, low_snr=True, device="cpu")
    assert calls == []  # too small for a coarse scale of whole patches
    colour = numpy.stack([noisy, noisy[::-1], noisy[:, ::-1]], axis=-1)
    nlfilt.denoise_collaborative(colour, sigma=25.0, low_snr=True, device="cpu")
    assert calls == [((64, 70, 3), (32, 35, 3))]


@pytest.mark.gpu
def test_gpu_pyramid_matches_the_cpu(gpu):
    xp = get_backend(gpu).xp
    pilot = RNG.normal(0, 1, (37, 30, 3))
    coarse = RNG.normal(0, 1, (18, 15, 3))
    on_gpu = pyramid.refine(xp, xp.asarray(pilot), xp.asarray(coarse)).get()
    numpy.testing.assert_allclose(on_gpu, pyramid.refine(numpy, pilot, coarse), atol=1e-12)
    noisy = 100 + RNG.normal(0, 40, (80, 72))
    cpu = nlfilt.denoise_collaborative(noisy, sigma=40.0, low_snr=True, device="cpu")
    numpy.testing.assert_allclose(nlfilt.denoise_collaborative(noisy, sigma=40.0, low_snr=True, device=gpu),
                                  cpu, atol=0.05)

