"""The compiled CPU operator (nlfilt.jit): its results against the dense reference and its array-code twin
for every kernel with a compiled profile, its layouts, its independence from threads, and where it is
chosen."""

from __future__ import annotations

import dataclasses

import numpy
import pytest

import nlfilt
from nlfilt import jit
from nlfilt.filters import build_filter
from nlfilt.kernels import ArcCosKernel, kernel_class
from nlfilt.operators import WindowedAffinity, with_ones
from nlfilt.resolve import prepare

import reference

pytest.importorskip("numba")

RNG = numpy.random.default_rng(11)


def operators(image, *, patch, window, dtype=numpy.float64, workers=None, h=20.0, sigma=5.0, kernel="nlm",
              depth=1, window_shape="box"):
    """(compiled operator, its array-code twin) for ``image`` on the CPU (for the tangent kernels a memory
    budget too small to keep their weights, so that the compiled operator serves them)."""
    if kernel != "nlm":
        h = sigma = None
    backend, array, options = prepare(image, kernel=kernel, patch=patch, window=window, h=h, sigma=sigma,
                                      depth=depth, device="cpu", dtype=dtype,
                                      memory_budget=2**26 if kernel == "nlm" else 1,
                                      window_shape=window_shape)
    if workers is not None:
        backend = dataclasses.replace(backend, workers=workers)
    compiled = build_filter(backend, array, options, reuse=False).affinity
    assert type(compiled) is jit.CompiledWindowed and type(compiled.twin) is WindowedAffinity
    return compiled, compiled.twin


@pytest.mark.parametrize(("shape", "patch", "window"), [
    ((13, 17), 3, 5), ((13, 17, 3), 3, 7), ((9, 6), 5, 21), ((1, 12), 1, 5), ((12, 1, 2), 1, 3),
    ((3, 40), 3, 41), ((20, 11), 7, 9),
])
def test_compiled_matches_the_dense_reference_in_float64(monkeypatch, shape, patch, window):
    """Windows larger than the image, one-row and one-column images, patch 1, several channels; chunks of
    4 columns (partners in other chunks)."""
    monkeypatch.setattr(jit, "CHUNK_COLUMNS", 4)
    image = RNG.random(shape) * 100
    compiled, _ = operators(image, patch=patch, window=window)
    dense = reference.affinity(image.reshape(shape[0], shape[1], -1), kernel="nlm", patch=patch,
                               window=window, h=20.0, sigma=5.0)
    vectors = RNG.random((compiled.size, 3))
    numpy.testing.assert_allclose(compiled.matmul(vectors), dense @ vectors, rtol=1e-11)
    with_sums = compiled.matmul(vectors, row_sums=True)
    numpy.testing.assert_allclose(with_sums[:, :3], dense @ vectors, rtol=1e-11)
    numpy.testing.assert_allclose(with_sums[:, 3], dense.sum(axis=1), rtol=1e-11)
    numpy.testing.assert_allclose(compiled.matmul(vectors[:, :0], row_sums=True)[:, 0], dense.sum(axis=1),
                                  rtol=1e-11)


@pytest.mark.parametrize("channels", [0, 3])
def test_compiled_float32_matches_its_twin(monkeypatch, channels):
    """Three bands (the column sums slide over 32 rows) in three chunks of columns, float32 within 1e-5."""
    monkeypatch.setattr(jit, "CHUNK_COLUMNS", 256)
    shape = (70, 600, channels) if channels else (70, 600)
    image = (RNG.random(shape) * 255).astype(numpy.float32)
    compiled, twin = operators(image, patch=7, window=11, dtype=numpy.float32, h=20.0, sigma=25.0)
    vectors = RNG.random((compiled.size, 2)).astype(numpy.float32)
    ours, theirs = compiled.matmul(vectors, row_sums=True), twin.matmul(vectors, row_sums=True)
    assert ours.dtype == numpy.float32
    numpy.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_exponential_is_within_two_ulp_over_the_weights_range():
    from nlfilt.kernels import weight_floor

    t = numpy.linspace(weight_floor(numpy.float32), 0, 200_001, dtype=numpy.float32)
    t = numpy.concatenate([t, -numpy.logspace(-8, 0, 1000, dtype=numpy.float32), [numpy.float32(0)]])
    ours = numpy.array([jit.exp_float32(value) for value in t[::97]], dtype=numpy.float32)
    exact = numpy.exp(t[::97].astype(numpy.float64))
    assert numpy.max(numpy.abs(ours / exact - 1)) < 2.5e-7
    assert jit.exp_float32(numpy.float32(0)) == 1  # the diagonal weight exactly


@pytest.mark.parametrize("implementation", [0, 1], ids=["compiled", "array code"])
def test_results_do_not_depend_on_the_thread_count(implementation):
    """The compiled kernel's bands and the array code's fixed partial sums (workers.PARTIALS) give the
    same float32 bits for 1, 2, 3 and 5 threads."""
    image = (RNG.random((100, 90)) * 255).astype(numpy.float32)
    vectors = RNG.random((100 * 90, 2)).astype(numpy.float32)
    results = [operators(image, patch=5, window=11, dtype=numpy.float32, workers=workers)[implementation]
               .matmul(vectors) for workers in (1, 2, 3, 5)]
    for result in results[1:]:
        numpy.testing.assert_array_equal(result, results[0])


def test_column_stored_vectors_are_read_in_place(monkeypatch):
    """with_ones stores the columns one after the other; the compiled product must not copy them."""
    image = RNG.random((16, 16)) * 100
    compiled, _ = operators(image, patch=3, window=5)
    stacked = with_ones(numpy, RNG.random((256, 2)))
    assert stacked.T.flags.c_contiguous
    copies = []
    original = numpy.ascontiguousarray

    def recording(array, **options):
        copies.append(not array.flags.c_contiguous)
        return original(array, **options)

    monkeypatch.setattr(jit.numpy, "ascontiguousarray", recording)
    compiled.matmul(stacked)
    assert copies == [False]


def test_rows_and_dense_come_from_the_twin():
    image = RNG.random((8, 9)) * 100
    compiled, twin = operators(image, patch=3, window=5)
    numpy.testing.assert_allclose(compiled.dense(), twin.dense(), rtol=1e-12)
    numpy.testing.assert_allclose(compiled.row(10), twin.row(10), rtol=1e-12)
    numpy.testing.assert_allclose(compiled.matmul(numpy.eye(72)[:, 10:11])[:, 0], twin.row(10), rtol=1e-11)


def test_the_array_code_serves_without_numba_and_for_kernels_without_a_compiled_profile(monkeypatch):
    image = RNG.random((12, 12)) * 100
    _, twin = operators(image, patch=3, window=5)
    assert type(jit.select(twin, twin.kernel)) is jit.CompiledWindowed
    monkeypatch.setattr(jit, "load_numba", lambda: None)
    assert jit.select(twin, twin.kernel) is twin
    monkeypatch.undo()
    backend, array, options = prepare(image, kernel="arccos", patch=3, window=5, h=None, sigma=None, depth=1,
                                      device="cpu", dtype=numpy.float64, memory_budget=1)
    assert type(build_filter(backend, array, options, reuse=False).affinity) is jit.CompiledWindowed
    monkeypatch.setattr(ArcCosKernel, "jit_profile", None)
    assert type(build_filter(backend, array, options, reuse=False).affinity) is WindowedAffinity


@pytest.mark.parametrize(("kernel", "depth"), [("nlm", 1), ("arccos", 1), ("ntk", 2)])
def test_kept_weights_keep_the_tangent_kernels_on_the_array_code(kernel, depth):
    """A filter whose weights fit the budget and are kept (the tangent kernels always make several
    products, for lambda_max) multiplies them as array code: cheaper per product than computing an
    arc-cosine again; NLM's compiled weight is cheaper than a kept one's product, so it stays compiled."""
    image = RNG.random((12, 12)) * 100
    extra = {"h": 20.0, "sigma": 5.0} if kernel == "nlm" else {"h": None, "sigma": None}
    backend, array, options = prepare(image, kernel=kernel, patch=3, window=5, depth=depth, device="cpu",
                                      dtype=numpy.float64, memory_budget=2**26, **extra)
    affinity = build_filter(backend, array, options, reuse=True).affinity
    twin = getattr(affinity, "twin", affinity)
    assert twin.keeps_weights
    assert type(affinity) is (jit.CompiledWindowed if kernel == "nlm" else WindowedAffinity)
    assert jit.serves(kernel_class(kernel), depth) and jit.serves(kernel_class(kernel), depth, False)


@pytest.mark.parametrize(("kernel", "depth"), [("arccos", 1), ("ntk", 1), ("ntk", 2), ("ntk", 3)])
@pytest.mark.parametrize(("shape", "patch", "window", "window_shape"), [
    ((13, 17), 3, 5, "box"), ((13, 17, 3), 3, 7, "tent"), ((9, 6), 5, 21, "box"), ((1, 12), 1, 5, "tent"),
    ((20, 11), 7, 9, "box"),
])
def test_compiled_tangent_kernels_match_the_dense_reference(monkeypatch, kernel, depth, shape, patch, window,
                                                           window_shape):
    """The cosine kernels' compiled profiles (products slid down the bands, the norms, the arc-cosine
    polynomials, the layers), box and tent windows, in float64 to 1e-8 of the largest value (the ntk's
    ``pi - arccos c`` is steep at ``c = 1``: the twin is as far from the reference); with row sums (the ones
    scaled by the norms like any column), and a zero patch (its row and column are 0)."""
    monkeypatch.setattr(jit, "CHUNK_COLUMNS", 4)
    image = RNG.random(shape) * 100
    image[:patch, :patch] = 0  # a zero patch at the corner
    compiled, _ = operators(image, patch=patch, window=window, kernel=kernel, depth=depth,
                            window_shape=window_shape)
    assert type(compiled) is jit.CompiledWindowed
    dense = reference.affinity(image.reshape(shape[0], shape[1], -1), kernel=kernel, patch=patch,
                               window=window, depth=depth, window_shape=window_shape)
    vectors = RNG.random((compiled.size, 2))
    expected = dense @ vectors
    numpy.testing.assert_allclose(compiled.matmul(vectors), expected, rtol=1e-8, atol=1e-8 * expected.max())
    with_sums = compiled.matmul(vectors, row_sums=True)
    numpy.testing.assert_allclose(with_sums[:, 2], dense.sum(axis=1), rtol=1e-8, atol=1e-8 * expected.max())
    assert not numpy.any(compiled.matmul(vectors)[0])  # the zero patch's pixel


@pytest.mark.parametrize(("kernel", "depth"), [("arccos", 1), ("ntk", 2)])
def test_compiled_tangent_kernels_float32_match_their_twin(monkeypatch, kernel, depth):
    """Three bands of slid products over 600 columns in three chunks, colour, tent window: in float32 no
    farther from the float64 product than the array code (its box sums and polynomials) is, give or take
    1e-5 of the largest value (the ntk's steepness at ``c = 1`` amplifies float32's rounding of the
    cosines)."""
    monkeypatch.setattr(jit, "CHUNK_COLUMNS", 256)
    image = (RNG.random((70, 600, 3)) * 255).astype(numpy.float32)
    compiled, twin = operators(image, patch=3, window=11, dtype=numpy.float32, kernel=kernel, depth=depth,
                               window_shape="tent")
    exact, _ = operators(image.astype(numpy.float64), patch=3, window=11, kernel=kernel, depth=depth,
                         window_shape="tent")
    vectors = RNG.random((compiled.size, 2)).astype(numpy.float32)
    ours, theirs, truth = compiled.matmul(vectors), twin.matmul(vectors), exact.matmul(vectors)
    assert ours.dtype == numpy.float32
    largest = numpy.abs(truth).max()
    ours_error, twin_error = (numpy.abs(result - truth).max() / largest for result in (ours, theirs))
    assert ours_error <= twin_error + 1e-5, (ours_error, twin_error)
    numpy.testing.assert_allclose(ours, truth, rtol=1e-4)


def test_profile_keys_name_the_kernel_and_follow_its_compiled_code(monkeypatch):
    """numba's disk cache is keyed on the profile's code, so an edited profile is never served stale."""
    keys = {name: jit.profile_key(kernel_class(name)) for name in ("nlm", "arccos", "ntk")}
    assert [key.split(":")[0] for key in keys.values()] == ["nlm", "arccos", "ntk"]
    assert len(set(keys.values())) == 3

    def edited(t, count, inverse, here, there, scratch, layers, parameters):
        for i in range(count):
            t[i] = 2 * t[i]

    monkeypatch.setattr(ArcCosKernel, "jit_profile", staticmethod(edited))
    assert jit.profile_key(ArcCosKernel) != keys["arccos"]


@pytest.mark.parametrize("call", [{"iterations": 3}, {"normalize": "sinkhorn"}, {"iterations": "auto"},
                                  {"guide": "pilot"}])
def test_denoise_paths_agree_with_the_array_code(monkeypatch, call):
    """Twicing, Sinkhorn, automatic stopping and the pilot pass through the compiled operator give the
    array code's result (float64)."""
    image = RNG.random((40, 36, 3)) * 255
    options = {"patch": 5, "window": 9, "sigma": 25.0, "dtype": numpy.float64, "device": "cpu", **call}
    compiled = nlfilt.denoise(image, **options)
    monkeypatch.setattr(jit, "load_numba", lambda: None)
    numpy.testing.assert_allclose(compiled, nlfilt.denoise(image, **options), rtol=1e-9, atol=1e-9)

