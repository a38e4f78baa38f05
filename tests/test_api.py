"""denoise and filter_matrix against the dense float64 reference, and their argument checks."""

from __future__ import annotations

import numpy
import pytest

import nlfilt
from nlfilt.filters import build_filter
from nlfilt.resolve import prepare

import reference
from conftest import to_host

RNG = numpy.random.default_rng(20261126)
GRAY = RNG.random((22, 20)) * 255
COLOUR = RNG.random((24, 24, 3)) * 255
KERNEL_OPTIONS = {
    "nlm": {"kernel": "nlm", "h": 40.0, "sigma": 25.0},
    "arccos": {"kernel": "arccos"},
    "ntk": {"kernel": "ntk", "depth": 3},
}
TOLERANCE = {numpy.float64: 1e-6, numpy.float32: 1e-3}


def relative_error(actual, expected) -> float:
    return float(numpy.abs(numpy.asarray(actual) - expected).max() / numpy.abs(expected).max())


def assert_matches(actual, expected, kernel: str, tol: float) -> None:
    """NLM must match outright; arccos/ntk up to the scalar 1/lambda_max, known to 1e-3."""
    actual = numpy.asarray(actual, dtype=numpy.float64)
    if kernel != "nlm":
        ratio = float(numpy.vdot(actual, expected) / numpy.vdot(actual, actual))
        assert abs(ratio - 1) <= 1e-3, f"lambda_max off by {ratio - 1:.2e}"
        actual = actual * ratio
    assert relative_error(actual, expected) <= tol


def several_tiles(image, options, dtype) -> dict:
    """A memory budget that splits this image's global operator into at least three tiles of rows."""
    for budget in range(200_000, 20_000_000, 100_000):
        try:
            backend, array, resolved = prepare(image, device="cpu", dtype=dtype, memory_budget=budget,
                                               **{"h": None, "sigma": None, "depth": 1, **options})
            rows = build_filter(backend, array, resolved, reuse=True).affinity.tile_rows
        except ValueError:  # too small for even one row
            continue
        if rows < 2:
            continue
        assert rows <= array.shape[0] * array.shape[1] // 3
        return {"memory_budget": budget}
    raise AssertionError("no budget gives several tiles")


def modes(window: int) -> list:
    """(window, tiles): the global mode with one tile and with several, and a search window."""
    return [pytest.param(None, False, id="global"), pytest.param(None, True, id="global-tiles"),
            pytest.param(window, False, id=f"window{window}")]


@pytest.mark.parametrize("dtype", [numpy.float64, numpy.float32])
@pytest.mark.parametrize(("window", "tiles"), modes(7))
@pytest.mark.parametrize("image", [GRAY, COLOUR], ids=["gray", "colour"])
@pytest.mark.parametrize("kernel", list(KERNEL_OPTIONS))
def test_denoise_matches_dense_reference(kernel, image, window, dtype, tiles, device):
    options = dict(KERNEL_OPTIONS[kernel], patch=5, window=window)
    budget = several_tiles(image, options, dtype) if tiles else {}
    expected = reference.twicing(image, 1, **options)
    actual = nlfilt.denoise(image, dtype=dtype, device=device, **options, **budget)
    assert actual.shape == image.shape and actual.dtype == dtype
    assert_matches(to_host(actual), expected, kernel, TOLERANCE[dtype])


@pytest.mark.parametrize(("window", "tiles"), modes(5))
@pytest.mark.parametrize("kernel", list(KERNEL_OPTIONS))
def test_twicing_matches_dense_reference(kernel, window, tiles, device):
    options = dict(KERNEL_OPTIONS[kernel], patch=3, window=window)
    budget = several_tiles(COLOUR, options, numpy.float64) if tiles else {}
    expected = reference.twicing(COLOUR, 4, **options)
    actual = nlfilt.denoise(COLOUR, iterations=4, dtype=numpy.float64, device=device, **options, **budget)
    # lambda_max enters every step: allow its 1e-3 tolerance, amplified at most 4-fold
    tol = 1e-6 if kernel == "nlm" else 4e-3
    assert relative_error(to_host(actual), expected) <= tol


@pytest.mark.parametrize(("window", "tiles"), modes(7))
@pytest.mark.parametrize("kernel", list(KERNEL_OPTIONS))
def test_filter_matrix_matches_reference_and_denoise(kernel, window, tiles, device):
    options = dict(KERNEL_OPTIONS[kernel], patch=3, window=window)
    budget = several_tiles(COLOUR, options, numpy.float64) if tiles else {}
    weights = nlfilt.filter_matrix(COLOUR, dtype=numpy.float64, device=device, **options, **budget)
    assert isinstance(weights, numpy.ndarray) and weights.shape == (576, 576)
    assert_matches(weights, reference.filter_matrix(COLOUR, **options), kernel, 1e-6)
    one_shot = to_host(nlfilt.denoise(COLOUR, dtype=numpy.float64, device=device, **options, **budget))
    assert relative_error(one_shot.reshape(576, 3), weights @ COLOUR.reshape(576, 3)) <= 1e-12


@pytest.mark.parametrize("window", [None, 5])
def test_nlm_rows_sum_to_one(window):
    weights = nlfilt.filter_matrix(GRAY, window=window, patch=3, device="cpu")
    assert weights.dtype == numpy.float32
    numpy.testing.assert_allclose(weights.sum(axis=1), 1, atol=1e-5)
    assert (weights >= 0).all()


@pytest.mark.parametrize("kernel", ["arccos", "ntk"])
def test_global_tangent_filters_are_symmetric_psd_with_unit_norm(kernel):
    weights = nlfilt.filter_matrix(COLOUR, kernel=kernel, window=None, patch=3, dtype=numpy.float64,
                                   device="cpu")
    numpy.testing.assert_allclose(weights, weights.T, rtol=0, atol=1e-14)
    eigenvalues = numpy.linalg.eigvalsh(weights)
    assert eigenvalues[0] >= -1e-10
    assert abs(eigenvalues[-1] - 1) <= 1e-3  # W = K / lambda_max


@pytest.mark.parametrize("kernel", ["arccos", "ntk"])
def test_windowed_tangent_filters_are_symmetric_but_indefinite(kernel):
    """The hard window cuts a PSD kernel into an indefinite one, as the docstring warns."""
    weights = nlfilt.filter_matrix(COLOUR, kernel=kernel, window=5, patch=3, dtype=numpy.float64,
                                   device="cpu")
    numpy.testing.assert_allclose(weights, weights.T, rtol=0, atol=1e-14)
    eigenvalues = numpy.linalg.eigvalsh(weights)
    assert abs(eigenvalues[-1] - 1) <= 1e-3
    assert -0.3 < eigenvalues[0] < -0.05


def test_filter_matrix_refuses_large_images():
    with pytest.raises(ValueError, match="4096 pixels"):
        nlfilt.filter_matrix(numpy.zeros((65, 64)), device="cpu")


def test_one_iteration_is_the_filter_applied_once():
    options = {"kernel": "nlm", "patch": 3, "window": 7, "h": 30.0, "sigma": 10.0, "device": "cpu"}
    weights = nlfilt.filter_matrix(GRAY, dtype=numpy.float64, **options)
    once = nlfilt.denoise(GRAY, iterations=1, dtype=numpy.float64, **options)
    numpy.testing.assert_allclose(once.ravel(), weights @ GRAY.ravel(), rtol=1e-12)


def test_arccos_twicing_converges_to_the_image():
    """Gradient descent on the squared loss with W = K / lambda_max fits y in the limit."""
    image = GRAY[:12, :12]
    errors = []
    for iterations in (1, 10, 100, 1000):
        estimate = nlfilt.denoise(image, kernel="arccos", patch=3, window=None, iterations=iterations,
                                  dtype=numpy.float64, device="cpu")
        errors.append(numpy.linalg.norm(estimate - image))
    assert all(later < earlier for earlier, later in zip(errors, errors[1:], strict=False))
    assert errors[-1] < 0.05 * errors[0]


def test_tiny_h_returns_the_input():
    out = nlfilt.denoise(COLOUR, h=1e-6, sigma=0.0, window=None, patch=3, dtype=numpy.float64, device="cpu")
    numpy.testing.assert_allclose(out, COLOUR, rtol=1e-12)


def test_default_h_follows_the_estimated_sigma():
    from nlfilt.noise import estimate_sigma

    sigma = estimate_sigma(numpy, COLOUR.astype(numpy.float64))
    default = nlfilt.denoise(COLOUR, dtype=numpy.float64, device="cpu")
    # the documented defaults: patch 5, window 11, h = 0.8 sigma
    explicit = nlfilt.denoise(COLOUR, sigma=sigma, h=0.8 * sigma, patch=5, window=11, dtype=numpy.float64,
                              device="cpu")
    numpy.testing.assert_allclose(default, explicit, rtol=1e-12)
    for kernel in ("arccos", "ntk"):  # patch 3, global
        default = nlfilt.denoise(GRAY, kernel=kernel, dtype=numpy.float64, device="cpu")
        explicit = nlfilt.denoise(GRAY, kernel=kernel, patch=3, window=None, dtype=numpy.float64,
                                  device="cpu")
        numpy.testing.assert_allclose(default, explicit, rtol=1e-12)


def test_noise_free_constant_image_is_kept():
    image = numpy.full((16, 16, 3), 7.0)
    for kernel in ("nlm", "arccos"):
        out = nlfilt.denoise(image, kernel=kernel, window=5, device="cpu", dtype=numpy.float64)
        if kernel == "nlm":
            numpy.testing.assert_allclose(out, image, rtol=1e-12)
        else:
            assert numpy.isfinite(out).all()
    zeros = nlfilt.denoise(numpy.zeros((8, 8)), kernel="arccos", patch=3, device="cpu")
    assert (zeros == 0).all()


@pytest.mark.parametrize("shape", [(12, 10), (12, 10, 1), (12, 10, 4)])
@pytest.mark.parametrize("in_dtype", [numpy.uint8, numpy.uint16, numpy.int32, numpy.float32, bool])
def test_output_shape_and_dtype(shape, in_dtype):
    image = (RNG.random(shape) * 200).astype(in_dtype)
    out = nlfilt.denoise(image, patch=3, window=5, sigma=5.0, device="cpu")
    assert out.shape == shape and out.dtype == numpy.float32
    out64 = nlfilt.denoise(image, patch=3, window=5, sigma=5.0, device="cpu", dtype="float64")
    assert out64.dtype == numpy.float64
    numpy.testing.assert_allclose(out, out64, rtol=1e-4, atol=1e-4 * max(1, image.max()))


def test_progress_reports_every_product_with_k():
    calls = []
    nlfilt.denoise(GRAY, patch=3, window=5, iterations=3, device="cpu",
                   progress=lambda done, total: calls.append((done, total)))
    assert [call for call in calls if float(call[0]).is_integer()] == [(1, 3), (2, 3), (3, 3), (3, 3)]
    assert all(0 < done < 3 for done, _ in calls if not float(done).is_integer())  # window offsets


def test_denoise_reduces_noise():
    clean = numpy.add.outer(numpy.linspace(0, 200, 48), numpy.linspace(0, 50, 48))
    clean[12:36, 12:36] += 40
    noisy = clean + numpy.random.default_rng(3).normal(0, 20, clean.shape)
    for kernel in ("nlm", "arccos", "ntk"):
        denoised = nlfilt.denoise(noisy, kernel=kernel, device="cpu")
        assert numpy.abs(denoised - clean).mean() < 0.6 * numpy.abs(noisy - clean).mean()


BAD_ARGUMENTS = [
    ({"patch": 4}, "patch"),
    ({"patch": 0}, "patch"),
    ({"patch": 2.5}, "patch"),
    ({"patch": 25}, "patch"),
    ({"window": 4}, "window"),
    ({"window": 0}, "window"),
    ({"window": "wide"}, "window"),
    ({"h": 0}, "h"),
    ({"h": -1.0}, "h"),
    ({"h": float("nan")}, "h"),
    ({"sigma": -0.5}, "sigma"),
    ({"iterations": 0}, "iterations"),
    ({"iterations": 1.5}, "iterations"),
    ({"depth": 0, "kernel": "ntk"}, "depth"),
    ({"depth": 2, "kernel": "arccos"}, "depth"),
    ({"kernel": "gauss"}, "kernel"),
    ({"kernel": "arccos", "h": 1.0}, "h applies only"),
    ({"kernel": "arccos", "sigma": 1.0}, "sigma applies only"),
    ({"iterations": "many"}, "iterations"),
    ({"iterations": "auto", "stop": "early"}, "stop"),
    ({"iterations": "auto", "max_iterations": 0}, "max_iterations"),
    ({"stop": "sure"}, "stop and max_iterations"),
    ({"max_iterations": 5}, "stop and max_iterations"),
    ({"normalize": "columns"}, "normalize"),
    ({"kernel": "arccos", "normalize": "rows"}, "normalize applies only"),
    ({"guide": "oracle"}, "guide"),
    ({"device": "tpu"}, "device"),
    ({"dtype": numpy.int16}, "dtype"),
    ({"dtype": None}, "dtype"),
    ({"dtype": "float17"}, "dtype"),
    ({"memory_budget": 0}, "memory_budget"),
    ({"progress": 3}, "progress"),
]


@pytest.mark.parametrize(("arguments", "name"), BAD_ARGUMENTS, ids=[str(a) for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_name_the_parameter(arguments, name):
    with pytest.raises(ValueError, match=name):
        nlfilt.denoise(GRAY, **arguments)


def _with_nan():
    image = GRAY.copy()
    image[3, 4] = numpy.nan
    return image


BAD_IMAGES = [
    (_with_nan(), "NaN or Inf"),
    (numpy.full((8, 8), numpy.inf), "NaN or Inf"),
    (numpy.zeros((0, 5)), "empty"),
    (numpy.zeros((4, 4, 0)), "empty"),
    (numpy.zeros(16), "2 dimensions"),
    (numpy.zeros((2, 4, 4, 3)), "volume with channels: pass the channel axis"),
    (numpy.zeros((2, 2, 4, 4, 3)), "2 dimensions"),
    (numpy.zeros((8, 8), dtype=complex), "real"),
    (numpy.array([["a", "b"], ["c", "d"]]), "numeric"),
]


@pytest.mark.parametrize(("image", "message"), BAD_IMAGES, ids=[m for _, m in BAD_IMAGES])
def test_bad_images_are_refused(image, message):
    with pytest.raises(ValueError, match=message):
        nlfilt.denoise(image, patch=1, device="cpu")
    with pytest.raises(ValueError, match=message):
        nlfilt.filter_matrix(image, patch=1, device="cpu")


def test_gpu_request_without_gpu_is_a_clear_error():
    from nlfilt.backend import gpu_status

    if gpu_status()[0]:
        pytest.skip("a GPU is usable here")
    with pytest.raises(RuntimeError, match="no GPU is usable"):
        nlfilt.denoise(GRAY, device="gpu")


def test_nlm_defaults_keep_their_set12_quality(set12):
    """The measured defaults (benchmarks/results/defaults.md) must not regress."""
    import imageio.v3 as iio

    scores = []
    for seed, path in enumerate(sorted(set12.glob("*.png"))):
        clean = iio.imread(path).astype(numpy.float64)
        noisy = clean + numpy.random.default_rng(seed).normal(0, 25, clean.shape)
        denoised = nlfilt.denoise(noisy, device="cpu")
        scores.append(10 * numpy.log10(255.0**2 / numpy.mean((denoised - clean) ** 2)))
    assert numpy.mean(scores) >= 28.6, scores


@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("kernel", list(KERNEL_OPTIONS))
def test_filter_row_is_the_row_of_filter_matrix(kernel, window, device):
    options = dict(KERNEL_OPTIONS[kernel], patch=3, window=window, dtype=numpy.float64, device=device)
    weights = nlfilt.filter_matrix(COLOUR, **options)
    row = nlfilt.filter_row(COLOUR, (5, 17), **options)
    assert row.shape == COLOUR.shape[:2]
    numpy.testing.assert_allclose(row.ravel(), weights[5 * 24 + 17], rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("pixel", [(24, 0), (-1, 3), (1.5, 2), (1,), "ab"])
def test_filter_row_refuses_pixels_outside_the_image(pixel):
    with pytest.raises(ValueError, match="pixel"):
        nlfilt.filter_row(COLOUR, pixel, device="cpu")


def test_numpy_in_numpy_out(device):
    out = nlfilt.denoise(GRAY, patch=3, window=5, sigma=5.0, device=device)
    assert type(out) is numpy.ndarray
    path = nlfilt.twicing_trajectory(GRAY[:12, :12], 5, kernel="arccos", device=device)
    assert type(path.estimate(3)) is numpy.ndarray


@pytest.mark.gpu
def test_cupy_in_cupy_out(gpu):
    import cupy

    for device in ("cpu", "gpu"):
        out = nlfilt.denoise(cupy.asarray(GRAY), patch=3, window=5, sigma=5.0, device=device)
        assert isinstance(out, cupy.ndarray)


def test_tf32_is_refused_for_the_gpu(monkeypatch):
    from nlfilt.backend import get_backend, gpu_status

    monkeypatch.setenv("CUPY_TF32", "1")
    with pytest.raises(RuntimeError, match="TF32"):
        get_backend("gpu")
    usable, reason = gpu_status()
    assert not usable and "TF32" in reason
    assert get_backend("auto").name == "cpu"  # auto falls back to the CPU


def test_the_public_functions_document_every_parameter_with_one_shared_text():
    import inspect
    import re

    functions = (nlfilt.denoise, nlfilt.twicing_trajectory, nlfilt.filter_matrix, nlfilt.filter_row)
    entries = {}
    for function in functions:
        documented = dict(re.findall(r"(?m)^    (\w+) : [^\n]*\n((?:^        [^\n]*\n)+)", function.__doc__))
        assert set(inspect.signature(function).parameters) <= set(documented), function.__name__
        entries[function.__name__] = documented
    for name in ("kernel", "patch", "h", "sigma", "depth", "normalize", "device", "dtype", "memory_budget"):
        assert len({documented[name] for documented in entries.values()}) == 1, name


# channel_axis ---------------------------------------------------------------------------------------------

CHANNEL_IMAGE = numpy.random.default_rng(21).random((14, 16, 3)) * 255


@pytest.mark.parametrize("axis", [0, 1, -3, 2, -1])
def test_channel_axis_moves_the_channels_and_back(axis):
    """Every public function gives, for the image with its channels on ``axis``, the channels-last
    image's result (in the input's layout)."""
    moved = numpy.moveaxis(CHANNEL_IMAGE, -1, axis)
    common = {"sigma": 20.0, "device": "cpu", "dtype": numpy.float64}
    expected = nlfilt.denoise(CHANNEL_IMAGE, **common)
    result = nlfilt.denoise(moved, channel_axis=axis, **common)
    assert result.shape == moved.shape
    numpy.testing.assert_allclose(numpy.moveaxis(result, axis, -1), expected, rtol=1e-12)
    collaborative = nlfilt.denoise_collaborative(moved, channel_axis=axis, sigma=20.0, device="cpu")
    numpy.testing.assert_allclose(numpy.moveaxis(collaborative, axis, -1),
                                  nlfilt.denoise_collaborative(CHANNEL_IMAGE, sigma=20.0, device="cpu"),
                                  rtol=1e-6)
    numpy.testing.assert_allclose(nlfilt.filter_row(moved, (3, 5), channel_axis=axis, **common),
                                  nlfilt.filter_row(CHANNEL_IMAGE, (3, 5), **common), rtol=1e-12)
    numpy.testing.assert_allclose(nlfilt.filter_matrix(moved, channel_axis=axis, **common),
                                  nlfilt.filter_matrix(CHANNEL_IMAGE, **common), rtol=1e-12)
    path = nlfilt.twicing_trajectory(moved, 5, channel_axis=axis, window=5, **common)
    numpy.testing.assert_allclose(numpy.moveaxis(path.estimate(3), axis, -1),
                                  nlfilt.twicing_trajectory(CHANNEL_IMAGE, 5, window=5, **common).estimate(3),
                                  rtol=1e-9)


def test_a_volume_is_refused_by_default_instead_of_read_as_channels():
    volume = numpy.random.default_rng(2).random((6, 40, 40))
    with pytest.raises(ValueError, match=r"last axis of 40 .* channel_axis=None, .* channel_axis=-1"):
        nlfilt.denoise(volume, device="cpu")
    assert nlfilt.denoise(volume, channel_axis=None, window=5, device="cpu").shape == volume.shape  # a volume
    with pytest.raises(ValueError, match="last axis of 40"):
        nlfilt.denoise_collaborative(volume, device="cpu")


def test_many_channels_need_an_explicit_channel_axis():
    spectral = numpy.random.default_rng(3).random((16, 16, 20)) * 100
    result = nlfilt.denoise(spectral, channel_axis=-1, sigma=10.0, device="cpu")
    assert result.shape == spectral.shape
    sixteen = nlfilt.denoise(spectral[:, :, :16], sigma=10.0, device="cpu")  # the default takes 16
    assert sixteen.shape == (16, 16, 16)


@pytest.mark.parametrize(("shape", "axis", "message"), [
    ((16, 16), 0, "needs a 3-D image"), ((16, 16, 3), 3, "-3 to 2"),
    ((16, 16, 3), "last", "int, None or 'auto'"), ((16, 16, 3), True, "int, None or 'auto'"),
    ((16, 16, 3), -4, "-3 to 2"),
])
def test_channel_axis_errors_name_the_parameter(shape, axis, message):
    with pytest.raises(ValueError, match=message):
        nlfilt.denoise(numpy.ones(shape), channel_axis=axis, device="cpu")


def test_gray_images_take_channel_axis_none():
    image = numpy.random.default_rng(4).random((16, 16)) * 100
    numpy.testing.assert_array_equal(nlfilt.denoise(image, channel_axis=None, sigma=10.0, device="cpu"),
                                     nlfilt.denoise(image, sigma=10.0, device="cpu"))
