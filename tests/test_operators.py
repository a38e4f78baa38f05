"""Matrix-free operators: geometry helpers, tiling, weight caching and the memory bound."""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy
import pytest

import nlfilt
from nlfilt.backend import get_backend
from nlfilt.operators import GlobalAffinity
from nlfilt.patches import box_sum, patch_matrix

import reference

RNG = numpy.random.default_rng(5)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 13])
def test_box_sum_matches_direct_sum(size):
    values = RNG.random((30, 25, 2))
    expected = numpy.zeros((31 - size, 26 - size, 2))
    for row in range(size):
        for col in range(size):
            expected += values[row : row + 31 - size, col : col + 26 - size]
    numpy.testing.assert_allclose(box_sum(numpy, values, size), expected, rtol=1e-12)
    buffers = [numpy.empty(values.size) for _ in range(4)]
    numpy.testing.assert_allclose(box_sum(numpy, values, size, buffers), expected, rtol=1e-12)


@pytest.mark.parametrize("patch", [1, 3, 5])
def test_patch_matrix_matches_reference(patch):
    image = RNG.random((9, 7, 3))
    numpy.testing.assert_array_equal(patch_matrix(numpy, image, patch), reference.patches(image, patch))


@pytest.mark.parametrize("kernel", ["nlm", "arccos"])
def test_global_result_does_not_depend_on_the_tile_size(kernel):
    image = RNG.random((20, 20)) * 100
    options = {"kernel": kernel, "patch": 3, "window": None, "dtype": numpy.float64, "device": "cpu"}
    if kernel == "nlm":
        options.update(h=20.0, sigma=5.0)
    large = nlfilt.denoise(image, iterations=2, **options)
    small = nlfilt.denoise(image, iterations=2, memory_budget=200_000, **options)  # a few rows per tile
    numpy.testing.assert_allclose(small, large, rtol=1e-12)


@pytest.mark.parametrize("kernel", ["nlm", "ntk"])
def test_windowed_cached_weights_give_the_same_result(kernel):
    image = RNG.random((18, 21, 2)) * 100
    options = {"kernel": kernel, "patch": 3, "window": 7, "dtype": numpy.float64, "device": "cpu"}
    if kernel == "nlm":
        options.update(h=20.0, sigma=5.0)
    cached = nlfilt.denoise(image, iterations=3, **options)
    uncached = nlfilt.denoise(image, iterations=3, memory_budget=1, **options)  # no room to cache
    # uncached, the compiled operator computes ntk's weights (its own order of sums; the ntk is steep at
    # cosine 1, see test_jit)
    numpy.testing.assert_allclose(cached, uncached, rtol=1e-12 if kernel == "nlm" else 1e-8)


@pytest.mark.parametrize("window", [5, None])
def test_single_worker_matches_threads(monkeypatch, window):
    image = RNG.random((24, 24)) * 100
    options = {"kernel": "arccos", "patch": 3, "window": window, "dtype": numpy.float64, "device": "cpu"}
    monkeypatch.setattr("nlfilt.backend.CPU_PROFILE_CHUNK", 64)  # many pieces per tile
    threaded = nlfilt.denoise(image, **options)
    single = dataclasses.replace(get_backend("cpu"), workers=1)
    monkeypatch.setattr("nlfilt.resolve.get_backend", lambda device: single)
    serial = nlfilt.denoise(image, **options)
    numpy.testing.assert_allclose(serial, threaded, rtol=1e-12)


@pytest.mark.parametrize("method", ["filter", "collaborative"])
def test_results_do_not_depend_on_the_thread_count(monkeypatch, method):
    """Reductions are summed in fixed partial sums (operators.PARTIALS) or in bands of a fixed grid (the
    compiled kernels), so 1, 2, 3 or 5 threads give the same float32 bits (the batch on a dask cluster
    relies on it)."""
    from nlfilt import backend as backend_module

    image = (RNG.random((200, 190)) * 255).astype(numpy.float32)
    results = []
    for threads in (1, 2, 3, 5):
        fixed = dataclasses.replace(get_backend("cpu"), workers=threads)
        monkeypatch.setattr(backend_module, "_cpu_backend", lambda fixed=fixed: fixed)
        if method == "filter":
            results.append(nlfilt.denoise(image, sigma=30.0, window=11, iterations=2, device="cpu"))
        else:
            results.append(nlfilt.denoise_collaborative(image, sigma=30.0, device="cpu"))
    for result in results[1:]:
        numpy.testing.assert_array_equal(result, results[0])


@pytest.mark.parametrize("budget", [nlfilt.DEFAULT_MEMORY_BUDGET, 16 * 2**20])
@pytest.mark.parametrize("kernel", ["nlm", "arccos"])
def test_global_peak_memory_stays_under_the_budget(kernel, budget):
    """128 x 128 global: K would take 1 GiB in float32; the whole run must stay within the budget."""
    image = RNG.random((128, 128)).astype(numpy.float32) * 255
    options = {"sigma": 10.0} if kernel == "nlm" else {}
    tracemalloc.start()
    try:
        out = nlfilt.denoise(image, kernel=kernel, window=None, patch=7, iterations=2, device="cpu",
                             memory_budget=budget, **options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == image.shape and numpy.isfinite(out).all()
    assert peak <= budget, f"peak {peak / 2**20:.1f} MiB over the {budget / 2**20:.0f} MiB budget"


def test_budget_too_small_for_the_global_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="memory_budget"):
        nlfilt.denoise(RNG.random((64, 64)), window=None, memory_budget=10_000, device="cpu")


def test_gpu_tiles_reserve_no_scratch_for_cuda_profiles():
    """On the GPU the CUDA profiles need no scratch: arc-cosine and NTK tiles are as tall as NLM's."""
    from nlfilt.backend import Backend
    from nlfilt.kernels import make_kernel

    class SizingBackend(Backend):
        """The GPU's sizing rules on NumPy arrays (the patches come from the array twin)."""

        def patch_matrix(self, image, patch):
            return patch_matrix(numpy, image, patch)

    features = RNG.random((40, 40, 1))
    gpu_like = SizingBackend("gpu", numpy, workers=1)
    rows = {}
    for name in ("nlm", "arccos", "ntk"):
        kernel = make_kernel(name, h=1.0, sigma=0.5, depth=2)
        affinity = GlobalAffinity(gpu_like, kernel.features(numpy, features, 3), kernel, 3, 2**22, columns=2)
        rows[name] = affinity.tile_rows
    assert rows["arccos"] >= 0.9 * rows["nlm"] and rows["ntk"] >= 0.9 * rows["nlm"], rows
