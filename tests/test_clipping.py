"""Clipped noise: clip levels, the clipped mean and its inverse (declipping), and the collaborative
filter's use of them in every path (image, series, stream, volume, dask, command line)."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy
import pytest

import nlfilt
from nlfilt.backend import get_backend
from nlfilt.clipping import CLIPPED_SHARE, clip_levels, clipped_mean, declip
from nlfilt.methods.base import make_plan, method

from clitools import run

CPU = get_backend("cpu")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def clipped_scene(sigma=40.0, seed=0, shape=(96, 96)):
    """(noisy, clean): black, mid-gray and white areas with noise rounded and clipped to 8 bits."""
    clean = numpy.zeros(shape)
    clean[:, shape[1] // 2:] = 255
    clean[shape[0] // 3: 2 * shape[0] // 3] = 128
    noise = sigma * numpy.random.default_rng(seed).standard_normal(shape)
    return numpy.clip(numpy.round(clean + noise), 0, 255), clean


def psnr(estimate, clean):
    return float(10 * numpy.log10(255.0**2 / numpy.mean((numpy.clip(estimate, 0, 255) - clean) ** 2)))


@pytest.mark.parametrize("levels", [(0.0, 255.0), (0.0, None), (None, 255.0), (10.0, 60.0)])
def test_the_clipped_mean_is_the_mean_of_clipped_samples(levels):
    low, high = levels
    samples = 25 * numpy.random.default_rng(1).standard_normal(400_000)
    for x in (0.0, 10.0, 30.0, 128.0, 250.0, 255.0):
        observed = numpy.clip(x + samples, -numpy.inf if low is None else low,
                              numpy.inf if high is None else high).mean()
        assert clipped_mean([x], 25.0, low, high)[0] == pytest.approx(observed, abs=0.1)
    assert clipped_mean([128.0], 25.0, None, None)[0] == 128.0


@pytest.mark.parametrize("levels", [(0.0, 255.0), (0.0, None), (None, 255.0), (0.0, 30.0)])
def test_declipping_inverts_the_clipped_mean_and_stays_within_the_levels(levels):
    low, high = levels
    x = numpy.linspace(0.0 if low is None else low, 255.0 if high is None else high, 301)
    means = clipped_mean(x, 20.0, low, high).astype(numpy.float32)
    restored = declip(numpy, means.reshape(1, -1, 1), 20.0, [levels]).ravel()
    assert restored.dtype == numpy.float32
    numpy.testing.assert_allclose(restored, x, atol=0.02)
    beyond = declip(numpy, numpy.array([[[-50.0], [400.0]]]), 20.0, [levels]).ravel()
    assert beyond[0] == (-50.0 if low is None else low) and beyond[1] == (400.0 if high is None else high)


def test_clip_levels_are_extremes_held_by_enough_pixels():
    noisy, _ = clipped_scene()
    assert clip_levels(numpy, noisy[..., None]) == [(0.0, 255.0)]
    unclipped = 128 + 40 * numpy.random.default_rng(2).standard_normal((96, 96, 2))
    assert clip_levels(numpy, unclipped) == [(None, None), (None, None)]  # one pixel holds each extreme
    image = numpy.full((100, 100, 1), 50.0)
    image[0, :int(CLIPPED_SHARE * 10_000)] = 0.0  # exactly the share: a level
    image[1, :int(CLIPPED_SHARE * 10_000) - 1] = 90.0  # one pixel short: not one
    assert clip_levels(numpy, image) == [(0.0, None)]
    untouched = numpy.ones((2, 3, 1), dtype=numpy.float32)
    assert declip(numpy, untouched, 5.0, [(None, None)]) is untouched


def test_the_collaborative_filter_declips_clipped_images_and_leaves_others_alone():
    noisy, clean = clipped_scene()
    declipped = nlfilt.denoise_collaborative(noisy, sigma=40.0, device="cpu")
    plain = nlfilt.denoise_collaborative(noisy, sigma=40.0, device="cpu", declip=False)
    assert psnr(declipped, clean) > psnr(plain, clean) + 5  # measured 43.2 against 26.2 dB
    assert declipped.min() >= 0 and declipped.max() <= 255
    colour = numpy.stack([noisy, noisy[::-1], noisy[:, ::-1]], axis=-1)
    truth = numpy.stack([clean, clean[::-1], clean[:, ::-1]], axis=-1)
    assert psnr(nlfilt.denoise_collaborative(colour, sigma=40.0, device="cpu"), truth) > psnr(
        nlfilt.denoise_collaborative(colour, sigma=40.0, device="cpu", declip=False), truth) + 5
    unclipped = clean + 40 * numpy.random.default_rng(3).standard_normal(clean.shape)
    numpy.testing.assert_array_equal(nlfilt.denoise_collaborative(unclipped, sigma=40.0, device="cpu"),
                                     nlfilt.denoise_collaborative(unclipped, sigma=40.0, device="cpu",
                                                                  declip=False))
    with pytest.raises(ValueError, match="declip must be True or False"):
        nlfilt.denoise_collaborative(noisy, declip="yes")


def test_a_series_declips_each_frame_with_its_own_levels_streamed_or_whole():
    frames = numpy.stack([clipped_scene(seed=seed, shape=(40, 48))[0] for seed in range(4)])
    frames[2] = numpy.clip(frames[2], 20, 200)  # a frame clipped at other levels
    whole = nlfilt.denoise_collaborative(frames, sigma=40.0, channel_axis=None, device="cpu")
    plain = nlfilt.denoise_collaborative(frames, sigma=40.0, channel_axis=None, device="cpu", declip=False)
    for index, frame in enumerate(frames):
        numpy.testing.assert_array_equal(whole[index], declip(numpy, plain[index][..., None], 40.0,
                                                              clip_levels(numpy, frame[..., None]))[..., 0])
    assert whole[2].min() >= 20 and whole[2].max() <= 200
    plan = make_plan("collaborative", {}, (4, 40, 48, 1), device="cpu", sigma=40.0)
    arriving = iter(frames[..., None].astype(numpy.float32))
    streamed = list(method("collaborative").denoise_series(arriving, plan, 4, None))
    numpy.testing.assert_array_equal(numpy.stack(streamed)[..., 0], whole)


def test_a_volume_is_declipped_with_the_levels_of_the_whole():
    volume = numpy.stack([clipped_scene(seed=seed, shape=(32, 32))[0] for seed in range(8)])
    clean = numpy.stack([clipped_scene(seed=seed, shape=(32, 32))[1] for seed in range(8)])
    call = {"sigma": 40.0, "channel_axis": None, "stack": "volume", "device": "cpu"}
    declipped = nlfilt.denoise_collaborative(volume, **call)
    plain = nlfilt.denoise_collaborative(volume, **call, declip=False)
    assert psnr(declipped, clean) > psnr(plain, clean) + 3


def test_the_command_line_declips_by_default_and_not_with_no_declip(tmp_path):
    noisy, clean = clipped_scene()
    iio.imwrite(tmp_path / "noisy.png", noisy.astype(numpy.uint8))
    assert run("denoise", tmp_path / "noisy.png", "-o", tmp_path / "default.png", "--quiet").exit_code == 0
    assert run("denoise", tmp_path / "noisy.png", "-o", tmp_path / "plain.png", "--quiet",
               "--no-declip").exit_code == 0
    default = iio.imread(tmp_path / "default.png").astype(float)
    plain = iio.imread(tmp_path / "plain.png").astype(float)
    assert psnr(default, clean) > psnr(plain, clean) + 5
    refused = run("denoise", tmp_path / "noisy.png", "-o", tmp_path / "x.png", "--method", "filter",
                  "--no-declip")
    assert refused.exit_code == 2 and "--declip configures --method collaborative" in refused.output
    assert not (tmp_path / "x.png").exists()


@pytest.mark.skipif(not (DATA / "set12").is_dir(), reason="../shared/data/set12 not present")
def test_declipping_gains_on_8_bit_photos_at_high_noise():
    gains = []
    for seed, name in enumerate(("01.png", "02.png", "03.png")):
        clean = iio.imread(DATA / "set12" / name).astype(numpy.float64)
        noise = 50 * numpy.random.default_rng(seed).standard_normal(clean.shape)
        noisy = numpy.clip(numpy.round(clean + noise), 0, 255)  # sigma estimated, as users get it
        gains.append(psnr(nlfilt.denoise_collaborative(noisy, device="cpu"), clean)
                     - psnr(nlfilt.denoise_collaborative(noisy, device="cpu", declip=False), clean))
    assert min(gains) > 0.1 and numpy.mean(gains) > 0.3, gains  # measured 0.91, 0.24, 0.40 dB


@pytest.mark.gpu
def test_gpu_declipping_matches_the_cpu(gpu):
    noisy, _ = clipped_scene()
    xp = get_backend(gpu).xp
    estimate = nlfilt.denoise_collaborative(noisy, sigma=40.0, device="cpu", declip=False)[..., None]
    levels = clip_levels(xp, xp.asarray(noisy[..., None]))
    assert levels == clip_levels(numpy, noisy[..., None])
    on_gpu = declip(xp, xp.asarray(estimate), 40.0, levels).get()
    numpy.testing.assert_allclose(on_gpu, declip(numpy, estimate, 40.0, levels), atol=1e-4)
    cpu = nlfilt.denoise_collaborative(noisy, sigma=40.0, device="cpu")
    numpy.testing.assert_allclose(nlfilt.denoise_collaborative(noisy, sigma=40.0, device=gpu), cpu, atol=0.05)
