"""CUDA kernels: NVRTC compilation without a GPU, and CuPy against NumPy on a GPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy
import pytest

import nlfilt
from nlfilt import cuda

import reference

KERNEL_NAMES = {"nlfilt_profile_nlm", "nlfilt_profile_arccos", "nlfilt_profile_ntk", "nlfilt_patches",
                "nlfilt_windowed_nlm", "nlfilt_global_fused", "nlfilt_windowed_box"}


@pytest.mark.parametrize("architecture", ["compute_80", "compute_90"])
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_every_kernel_compiles_without_warnings(dtype, architecture):
    if os.environ.get("NLFILT_REQUIRE_NVRTC") != "1":  # CI sets it: there the check must run
        pytest.importorskip("cupy_backends.cuda.libs.nvrtc",
                            reason="CuPy's NVRTC binding is not installed (pip install -e '.[cuda-check]')")
    ptx, log = cuda.compile_to_ptx(dtype, architecture)
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    assert log.strip() == ""
    assert set(re.findall(r"\.entry (\w+)", ptx)) == KERNEL_NAMES
    # no kernel keeps an array in local memory (run-time indexed accumulators, sin's slow path)
    entries = re.split(r"\.entry ", ptx)[1:]
    in_local_memory = [entry.split("(")[0] for entry in entries if "__local_depot" in entry]
    assert in_local_memory == []


def test_launch_geometry_is_defined_once_in_python():
    assert re.findall(r"#define\s+NLFILT_", cuda.source()) == []
    flags = dict(option[2:].split("=") for option in cuda.options(numpy.float32) if option.startswith("-D"))
    assert flags["NLFILT_FUSED_QUERIES"] == str(cuda.FUSED_QUERIES)
    assert flags["NLFILT_BOX_MAX_PATCH"] == str(cuda.BOX_MAX_PATCH)


def test_launch_arguments_are_checked_against_the_kernel():
    good = numpy.zeros((4, 3), numpy.float32)
    cuda.check_arguments("nlfilt_windowed_nlm", numpy.float32, (good, numpy.int32(3), numpy.float32(0.5)),
                         columns=cuda.MAX_COLUMNS)
    bad = [
        ((good[:, ::2],), None, "C-contiguous"),
        ((good.astype(numpy.float64),), None, "compiled for float32"),
        ((good, 3), None, "Python int"),
        ((good,), cuda.MAX_COLUMNS + 1, "columns"),
    ]
    for arguments, columns, message in bad:
        with pytest.raises(ValueError, match=message):
            cuda.check_arguments("nlfilt_windowed_nlm", numpy.float32, arguments, columns)


def test_profiles_receive_contiguous_arrays_in_every_mode(monkeypatch):
    """The CUDA profiles index raw pointers: the array code must hand them contiguous arrays."""
    from nlfilt import kernels, operators

    seen = []

    def recording(xp, kernel, t, scratch):
        seen.append(t.flags.c_contiguous)
        return kernels.apply_profile(xp, kernel, t, scratch)

    monkeypatch.setattr(operators, "apply_profile", recording)
    image = numpy.random.default_rng(0).random((30, 31, 2)) * 255
    for kernel in ("nlm", "arccos", "ntk"):
        for window in (None, 7):
            extra = {"sigma": 10.0} if kernel == "nlm" else {}
            nlfilt.denoise(image, kernel=kernel, window=window, patch=5, device="cpu", **extra)
    assert seen and all(seen)


def test_kernel_names_are_prefixed():
    names = re.findall(r"__global__\s+void\s+(\w+)", cuda.source())
    assert set(names) == KERNEL_NAMES and all(name.startswith("nlfilt_") for name in names)


def test_importing_nlfilt_does_not_import_cupy():
    code = "import sys, nlfilt, nlfilt.cli, nlfilt.cuda; print('cupy' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


RNG = numpy.random.default_rng(4)
COLOUR = RNG.random((20, 23, 3)) * 255
OPTIONS = [
    {"kernel": "nlm", "h": 40.0, "sigma": 25.0},
    {"kernel": "arccos"},
    {"kernel": "ntk", "depth": 2},
]


@pytest.mark.gpu
@pytest.mark.parametrize("window", [None, 7])
@pytest.mark.parametrize("options", OPTIONS, ids=[o["kernel"] for o in OPTIONS])
def test_gpu_float32_matches_the_float64_reference(gpu, options, window):
    arguments = dict(options, patch=5, window=window)
    expected = reference.twicing(COLOUR, 3, **arguments)
    actual = nlfilt.denoise(COLOUR, iterations=3, device="gpu", dtype=numpy.float32, **arguments)
    if options["kernel"] != "nlm":  # up to the scalar 1 / lambda_max, known to 1e-3
        actual = actual * numpy.vdot(actual, expected) / numpy.vdot(actual, actual)
    assert numpy.abs(actual - expected).max() <= 1e-4 * numpy.abs(expected).max()


@pytest.mark.gpu
@pytest.mark.parametrize("patch", [1, 3, 5])
def test_gpu_patches_match_numpy(gpu, patch):
    import cupy

    from nlfilt.patches import patch_matrix

    gpu = patch_matrix(cupy, cupy.asarray(COLOUR), patch).get()
    numpy.testing.assert_array_equal(gpu, patch_matrix(numpy, COLOUR, patch))


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["nlm", "arccos", "ntk"])
def test_gpu_profiles_match_numpy(gpu, name):
    import cupy

    from nlfilt.kernels import make_kernel

    kernel = make_kernel(name, h=1.0, sigma=0.5, depth=3)
    values = numpy.linspace(-1.2, 1.2, 10001) if name != "nlm" else numpy.linspace(-200, 5, 10001)
    expected = kernel.profile(numpy, values.copy(), [numpy.empty_like(values) for _ in range(5)])
    actual = kernel.profile_gpu(cupy.asarray(values)).get()
    # ntk's (pi - arccos c) / pi has a square-root singularity at c = 1 (see test_kernels)
    tolerance = 1e-7 if name == "ntk" else 1e-12
    numpy.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.gpu
@pytest.mark.parametrize("window", [1, 5, 9])
def test_gpu_windowed_nlm_kernel_matches_numpy(gpu, window, monkeypatch):
    monkeypatch.setenv(cuda.ALTERNATIVES_VARIABLE, "nlfilt_windowed_nlm")  # instead of the box kernel
    options = {"patch": 3, "window": window, "h": 30.0, "sigma": 10.0, "dtype": numpy.float64}
    gpu = nlfilt.denoise(COLOUR, device="gpu", iterations=2, **options)
    cpu = nlfilt.denoise(COLOUR, device="cpu", iterations=2, **options)
    numpy.testing.assert_allclose(gpu, cpu, rtol=1e-10)


def test_alternative_kernels_are_used_only_when_asked(monkeypatch):
    monkeypatch.delenv(cuda.ALTERNATIVES_VARIABLE, raising=False)
    assert not any(cuda.alternative(name) for name in cuda.ALTERNATIVES)
    monkeypatch.setenv(cuda.ALTERNATIVES_VARIABLE, "nlfilt_windowed_nlm, nlfilt_nonexistent")
    assert cuda.alternative("nlfilt_windowed_nlm") and not cuda.alternative("nlfilt_global_fused")
    assert not cuda.alternative("nlfilt_nonexistent")
    monkeypatch.setenv(cuda.ALTERNATIVES_VARIABLE, "all")
    assert all(cuda.alternative(name) for name in cuda.ALTERNATIVES)
    # the CPU never uses any CUDA operator
    from nlfilt.api import prepare
    from nlfilt.filters import build_filter
    from nlfilt.operators import CudaBoxWindowedNLM, CudaFusedGlobal, CudaWindowedNLM
    for window in (None, 5):
        backend, image, options = prepare(COLOUR, kernel="nlm", patch=3, window=window, h=20.0, sigma=5.0,
                                          depth=1, device="cpu", dtype=numpy.float32, memory_budget=2**24)
        affinity = build_filter(backend, image, options, reuse=True).affinity
        assert not isinstance(affinity, (CudaFusedGlobal, CudaBoxWindowedNLM, CudaWindowedNLM))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [numpy.float64, numpy.float32])
@pytest.mark.parametrize("options", [{"kernel": "nlm", "h": 30.0, "sigma": 10.0}, {"kernel": "arccos"},
                                     {"kernel": "ntk", "depth": 3}], ids=["nlm", "arccos", "ntk"])
def test_gpu_fused_global_operator_matches_the_gemm_tiles(gpu, options, dtype, monkeypatch):
    # 20 x 23 = 460 pixels: 4 query blocks and 15 key tiles, the last ones partial; colour patch 5 gives
    # 75 + 2 factor dimensions (three chunks, the last partial); 3 channels + the row-sum column
    arguments = dict(options, patch=5, window=None, iterations=2, dtype=dtype)
    monkeypatch.delenv(cuda.ALTERNATIVES_VARIABLE, raising=False)
    tiles = nlfilt.denoise(COLOUR, device="gpu", **arguments)
    monkeypatch.setenv(cuda.ALTERNATIVES_VARIABLE, "nlfilt_global_fused")
    fused = nlfilt.denoise(COLOUR, device="gpu", **arguments)
    tolerance = 1e-10 if dtype == numpy.float64 else 1e-4
    numpy.testing.assert_allclose(fused, tiles, rtol=tolerance, atol=tolerance * numpy.abs(tiles).max())


@pytest.mark.gpu
@pytest.mark.parametrize("patch", [1, 3, 7, 25])
@pytest.mark.parametrize("window", [1, 5, 21])
def test_gpu_box_windowed_nlm_matches_numpy(gpu, patch, window, monkeypatch):
    # a 37 x 70 colour image: partial 8 x 32 tiles on both axes, windows wider than a tile row
    image = RNG.random((37, 70, 3)) * 255
    options = {"patch": patch, "window": window, "h": 30.0, "sigma": 10.0, "dtype": numpy.float64,
               "iterations": 2}
    monkeypatch.delenv(cuda.ALTERNATIVES_VARIABLE, raising=False)  # the default on the GPU
    box = nlfilt.denoise(image, device="gpu", **options)
    cpu = nlfilt.denoise(image, device="cpu", **options)
    numpy.testing.assert_allclose(box, cpu, rtol=1e-9)
