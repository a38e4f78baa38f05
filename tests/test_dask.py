"""nlfilt.dask: the windowed filters over a dask array, chunk by chunk, equal to the whole-image result."""

from __future__ import annotations

import numpy
import pytest

import nlfilt

da = pytest.importorskip("dask.array", reason="needs nlfilt[dask]")
import nlfilt.dask as nlfilt_dask  # noqa: E402

RNG = numpy.random.default_rng(11)


@pytest.mark.parametrize(("shape", "chunks", "options"), [
    ((150, 170), (60, 70), {}),
    ((150, 170, 3), (50, 64, 1), {"iterations": 3}),  # the channel axis is gathered into one chunk
    ((97, 83), (20, 30), {"iterations": 2, "patch": 7, "window": 9}),  # chunks smaller than the halo
    ((64, 200), (64, 33), {"h": 20.0}),
])
def test_chunk_by_chunk_equals_the_whole_image_borders_included(shape, chunks, options):
    image = RNG.normal(120, 30, shape).astype(numpy.float32)
    whole = nlfilt.denoise(image, sigma=25.0, device="cpu", **options)
    lazy = nlfilt_dask.denoise(da.from_array(image, chunks=chunks), sigma=25.0, device="cpu", **options)
    assert isinstance(lazy, da.Array) and lazy.dtype == numpy.float32 and lazy.shape == shape
    result = lazy.compute()
    assert numpy.abs(result - whole).max() <= 1e-5 * numpy.abs(whole).max()
    # the borders, where numpy's 'reflect' padding of the patches must be the whole image's own
    assert numpy.abs(result[:8] - whole[:8]).max() <= 1e-5 * numpy.abs(whole).max()
    assert numpy.abs(result[:, -8:] - whole[:, -8:]).max() <= 1e-5 * numpy.abs(whole).max()


def test_the_halo_is_the_reach_of_the_twicing_steps():
    assert nlfilt_dask.halo(5, 11, 1) == 7 and nlfilt_dask.halo(7, 21, 3) == 33
    image = RNG.normal(120, 30, (90, 90)).astype(numpy.float32)
    whole = nlfilt.denoise(image, sigma=25.0, iterations=2, device="cpu")
    short = image.copy()
    # a chunk edge at column 45: with one step's halo only, two steps would differ there
    lazy = nlfilt_dask.denoise(da.from_array(short, chunks=(90, 45)), sigma=25.0, iterations=2, device="cpu")
    numpy.testing.assert_allclose(lazy.compute(), whole, rtol=0, atol=1e-5 * numpy.abs(whole).max())


def test_sigma_is_estimated_from_a_central_sample():
    image = (RNG.normal(0, 12, (80, 96)) + 100).astype(numpy.float32)
    lazy = nlfilt_dask.denoise(da.from_array(image, chunks=40), device="cpu")
    expected = nlfilt.denoise(image, device="cpu")  # the whole image is within the sample
    numpy.testing.assert_allclose(lazy.compute(), expected, rtol=0, atol=1e-5 * numpy.abs(expected).max())


@pytest.mark.parametrize(("options", "reason"), [
    ({"window": None}, "global mode"),
    ({"iterations": "auto"}, "iterations='auto'"),
    ({"kernel": "arccos", "window": 7}, "largest eigenvalue"),
])
def test_what_is_not_local_is_refused_with_the_reason(options, reason):
    lazy = da.from_array(RNG.normal(size=(40, 40)), chunks=20)
    sigma = {} if options.get("kernel") == "arccos" else {"sigma": 1.0}
    with pytest.raises(ValueError, match=reason):
        nlfilt_dask.denoise(lazy, **sigma, **options)
    with pytest.raises(ValueError, match="dask array"):
        nlfilt_dask.denoise(numpy.zeros((40, 40)), sigma=1.0)


def test_importing_nlfilt_does_not_import_dask():
    import subprocess
    import sys

    code = "import sys, nlfilt, nlfilt.cli; print('dask' in sys.modules, 'distributed' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False False", done.stderr


def test_the_collaborative_filter_chunk_by_chunk_equals_the_whole_image():
    rows, cols = numpy.mgrid[:300, :260]
    clean = 120 + 60 * numpy.sin(rows / 9.0) * numpy.cos(cols / 13.0)
    noisy = clean + RNG.normal(0, 20, clean.shape)
    whole = nlfilt.denoise_collaborative(noisy, sigma=20.0, device="cpu", dtype=numpy.float64)
    for chunks in ((128, 128), (100, 90)):  # (100, 90): origins moved onto the grid's step
        lazy = nlfilt_dask.denoise_collaborative(da.from_array(noisy, chunks=chunks), sigma=20.0,
                                                 device="cpu", dtype=numpy.float64)
        numpy.testing.assert_allclose(lazy.compute(), whole, rtol=0, atol=1e-9)
    single = nlfilt.denoise_collaborative(noisy, sigma=20.0, device="cpu")
    chunked = da.from_array(noisy.astype(numpy.float32), chunks=128)
    lazy = nlfilt_dask.denoise_collaborative(chunked, sigma=20.0, device="cpu").compute()
    assert (numpy.abs(lazy - single) > 1e-3).mean() < 0.01 and numpy.abs(lazy - single).max() < 1.0


def test_the_collaborative_filter_chunk_by_chunk_declips_with_the_whole_images_levels():
    rows, cols = numpy.mgrid[:200, :180]
    clean = numpy.where(cols < 90, 0.0, 255.0) * (rows > 40) + 128 * (rows <= 40)
    noisy = numpy.clip(numpy.round(clean + RNG.normal(0, 30, clean.shape)), 0, 255)
    whole = nlfilt.denoise_collaborative(noisy, sigma=30.0, device="cpu", dtype=numpy.float64)
    call = {"sigma": 30.0, "device": "cpu", "dtype": numpy.float64}
    lazy = nlfilt_dask.denoise_collaborative(da.from_array(noisy, chunks=128), **call)
    numpy.testing.assert_allclose(lazy.compute(), whole, rtol=0, atol=1e-9)
    plain = nlfilt_dask.denoise_collaborative(da.from_array(noisy, chunks=128), **call, declip=False)
    plain = plain.compute()
    assert numpy.abs(plain - whole).max() > 10  # the declipping did something


def test_at_low_signal_to_noise_chunk_by_chunk_equals_the_whole_image():
    """The coarse scale's estimate refines the pilot (a wider context, chunks on twice the grid's step)."""
    rows, cols = numpy.mgrid[:560, :530]
    clean = 100 + 30 * numpy.sin(rows / 11.0) * numpy.cos(cols / 17.0)
    noisy = clean + RNG.normal(0, 20, clean.shape)
    call = {"sigma": 20.0, "device": "cpu", "dtype": numpy.float64}
    whole = nlfilt.denoise_collaborative(noisy, **call)
    assert nlfilt.denoise_collaborative(noisy, **call, low_snr=True).tolist() == whole.tolist()
    lazy = nlfilt_dask.denoise_collaborative(da.from_array(noisy, chunks=(250, 256)), **call)
    numpy.testing.assert_allclose(lazy.compute(), whole, rtol=0, atol=1e-9)
