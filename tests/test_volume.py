"""3-D volumes (Z, H, W) with box patches and windows, against the dense reference."""

from __future__ import annotations

import numpy
import pytest

import nlfilt
from nlfilt.noise import estimate_sigma

import reference

RNG = numpy.random.default_rng(31)
VOLUME = RNG.random((4, 6, 5)) * 100


@pytest.mark.parametrize(("patch", "window"), [((3, 3, 3), (3, 5, 5)), ((1, 3, 3), None),
                                               ((3, 1, 3), (5, 3, 1))])
def test_volume_nlm_filter_matches_the_dense_reference(patch, window):
    options = {"kernel": "nlm", "patch": patch, "window": window, "h": 20.0, "sigma": 5.0}
    dense = reference.volume_affinity(VOLUME, **options)
    expected = dense / dense.sum(axis=1, keepdims=True)
    weights = nlfilt.filter_matrix(VOLUME, channel_axis=None, dtype=numpy.float64, device="cpu", **options)
    numpy.testing.assert_allclose(weights, expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("window", [(3, 3, 3), None])
@pytest.mark.parametrize(("kernel", "depth"), [("arccos", 1), ("ntk", 2)])
def test_volume_tangent_filters_match_the_dense_reference(kernel, depth, window):
    dense = reference.volume_affinity(VOLUME, kernel=kernel, patch=(3, 3, 3), window=window, depth=depth)
    expected = dense / numpy.linalg.eigvalsh(dense)[-1]
    weights = nlfilt.filter_matrix(VOLUME, kernel=kernel, depth=depth, patch=(3, 3, 3), window=window,
                                   channel_axis=None, dtype=numpy.float64, device="cpu")
    numpy.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-9)  # lambda_max by Lanczos


def test_volume_twicing_sinkhorn_auto_and_rows_agree_with_the_dense_filter():
    common = {"patch": (3, 3, 3), "window": (3, 5, 5), "h": 20.0, "sigma": 5.0, "channel_axis": None,
              "dtype": numpy.float64, "device": "cpu"}
    weights = nlfilt.filter_matrix(VOLUME, **common)
    flat = VOLUME.reshape(-1)
    estimate = weights @ flat
    estimate = estimate + weights @ (flat - estimate)
    numpy.testing.assert_allclose(nlfilt.denoise(VOLUME, iterations=2, **common).reshape(-1), estimate,
                                  rtol=1e-10)
    numpy.testing.assert_allclose(nlfilt.filter_row(VOLUME, (2, 3, 1), **common), weights[2 * 30 + 3 * 5 + 1]
                                  .reshape(VOLUME.shape), rtol=1e-10)
    path = nlfilt.twicing_trajectory(VOLUME, 6, **common)
    numpy.testing.assert_allclose(path.estimate(4), nlfilt.denoise(VOLUME, iterations=4, **common), rtol=1e-6)
    sinkhorn = nlfilt.denoise(VOLUME, normalize="sinkhorn", **common)
    auto = nlfilt.denoise(VOLUME, iterations="auto", **common)
    assert sinkhorn.shape == auto.shape == VOLUME.shape


def test_volume_with_channels_and_the_noise_estimate():
    clean = numpy.tile(numpy.linspace(0, 200, 96), (5, 96, 1))
    noisy = clean + numpy.random.default_rng(3).normal(0, 10, clean.shape)
    volume_sigma = estimate_sigma(numpy, noisy[..., None])
    assert volume_sigma == float(numpy.median([estimate_sigma(numpy, plane[..., None]) for plane in noisy]))
    assert volume_sigma == pytest.approx(10, rel=0.1)
    colour = numpy.stack([noisy, noisy[::-1]], axis=-1)
    result = nlfilt.denoise(colour[:, :16, :16], channel_axis=-1, patch=(1, 3, 3), window=(3, 5, 5),
                            device="cpu")
    assert result.shape == (5, 16, 16, 2)


@pytest.mark.parametrize(("patch", "message"), [((3, 3), "three"), ((3, 4, 3), "odd"),
                                                ((7, 3, 3), "at most")])
def test_volume_patch_errors_name_the_parameter(patch, message):
    with pytest.raises(ValueError, match=message):
        nlfilt.denoise(VOLUME, channel_axis=None, patch=patch, device="cpu")


def test_a_time_series_gains_a_decibel_from_its_temporal_window(set12):
    """Eight frames of one Set12 image shifted by a few pixels, noise 25: the 3-D filter with a window
    over all frames beats filtering frame by frame by at least 1 dB."""
    import imageio.v3 as iio

    image = iio.imread(set12 / "05.png").astype(numpy.float64)[100:196, 100:196]
    shifts = [(0, 0), (1, 2), (-2, 1), (3, -1), (-1, -3), (2, 3), (-3, -2), (1, -2)]
    clean = numpy.stack([numpy.roll(image, shift, axis=(0, 1)) for shift in shifts])
    noisy = clean + numpy.random.default_rng(0).normal(0, 25, clean.shape)
    frames = numpy.stack([nlfilt.denoise(frame, sigma=25.0, device="cpu") for frame in noisy])
    volume = nlfilt.denoise(noisy, channel_axis=None, patch=(1, 5, 5), window=(15, 11, 11), sigma=25.0,
                            device="cpu")

    def psnr(estimate):
        return 10 * numpy.log10(255**2 / numpy.mean((estimate - clean) ** 2))

    assert psnr(volume) >= psnr(frames) + 1.0, (psnr(volume), psnr(frames))


def test_the_collaborative_filter_takes_a_volume_as_a_series_of_slices_of_at_least_8x8():
    with pytest.raises(ValueError, match="at least 8x8 pixels; got 6x5"):
        nlfilt.denoise_collaborative(VOLUME, channel_axis=None, device="cpu")
    slices = numpy.repeat(VOLUME, 2, axis=1).repeat(2, axis=2)
    assert nlfilt.denoise_collaborative(slices, channel_axis=None, device="cpu").shape == slices.shape
