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
from nlfilt.kernels import KERNELS, kernel_class, make_kernel

import reference

KERNEL_NAMES = {"nlfilt_profile_nlm", "nlfilt_profile_arccos", "nlfilt_profile_ntk", "nlfilt_patches",
                "nlfilt_windowed_nlm", "nlfilt_global_fused_nlm", "nlfilt_global_fused_arccos",
                "nlfilt_global_fused_ntk", "nlfilt_windowed_box", "nlfilt_windowed_nlm3d", "nlfilt_bm_match",
                "nlfilt_bm_match_series", "nlfilt_bm_filter", "nlfilt_global_mma_nlm",
                "nlfilt_global_mma_arccos", "nlfilt_global_mma_ntk", "nlfilt_windowed_tiled"}


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


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_every_kernel_assembles_for_sm_90_without_spills_or_a_stack(dtype):
    """ptxas (the cuda-check extra's nvidia-cuda-nvcc wheel) on the NVRTC output for compute_90: no kernel
    spills registers or keeps a stack frame (local memory)."""
    if os.environ.get("NLFILT_REQUIRE_NVRTC") != "1":
        pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="CuPy's NVRTC binding is not installed")
        if cuda.find_ptxas() is None:
            pytest.skip("ptxas not installed (pip install -e '.[cuda-check]')")
    ptx, _ = cuda.compile_to_ptx(dtype, "compute_90")
    resources = cuda.assemble(ptx.decode() if isinstance(ptx, bytes) else ptx, "sm_90")
    assert set(resources) == KERNEL_NAMES
    assert {name: usage for name, usage in resources.items() if any(usage)} == {}


def test_launch_geometry_is_defined_once_in_python():
    assert re.findall(r"#define\s+NLFILT_", cuda.source()) == []
    flags = dict(option[2:].split("=") for option in cuda.options(numpy.float32) if option.startswith("-D"))
    assert flags["NLFILT_FUSED_QUERIES"] == str(cuda.FUSED_QUERIES)
    assert flags["NLFILT_BOX_MAX_PATCH"] == str(cuda.BOX_MAX_PATCH)


def test_launch_arguments_are_checked_against_the_kernel():
    """One for one against the parameters the CUDA source declares (nlfilt_patches: image, out, and
    four ints)."""
    image, out = numpy.zeros((4, 3), numpy.float32), numpy.zeros((12, 9), numpy.float32)
    sizes = tuple(numpy.int32(value) for value in (4, 3, 1, 3))
    cuda.check_arguments("nlfilt_patches", numpy.float32, (image, out, *sizes))
    cuda.check_arguments("nlfilt_windowed_box", numpy.float32,
                         (image, out, out, *sizes, numpy.int32(5), numpy.int32(1), numpy.float32(0.5),
                          numpy.float32(-87.0)), columns=cuda.MAX_COLUMNS)
    bad = [
        ("nlfilt_patches", (image[:, ::2], out, *sizes), None, "C-contiguous"),
        ("nlfilt_patches", (image.astype(numpy.float64), out, *sizes), None, "compiled for float32"),
        ("nlfilt_patches", (image, out, 4, *sizes[1:]), None, "Python int"),
        ("nlfilt_patches", (image, out, numpy.int64(4), *sizes[1:]), None, "takes int32"),
        ("nlfilt_patches", (image, out, *sizes[:3]), None, "5 arguments for 6 parameters"),
        ("nlfilt_patches", (image, numpy.int32(0), *sizes), None, "not an array"),
        ("nlfilt_patches", (image, out, *sizes), cuda.MAX_COLUMNS + 1, "columns"),
        ("nlfilt_no_such_kernel", (image,), None, "no such kernel"),
    ]
    for name, arguments, columns, message in bad:
        with pytest.raises(ValueError, match=message):
            cuda.check_arguments(name, numpy.float32, arguments, columns)


def test_every_launch_in_the_package_matches_a_kernel_signature():
    """The Python side of every launch, read from the package: its kernel exists in the source."""
    import pathlib

    package = pathlib.Path(nlfilt.__file__).parent
    text = "\n".join(path.read_text() for path in package.rglob("*.py"))
    launched = set(re.findall(r'(?:cuda\.launch|cuda\.run|_launch_2d)\(\s*"(\w+)"', text))
    assert {"nlfilt_patches", "nlfilt_windowed_nlm", "nlfilt_windowed_box"} <= launched
    launched |= {cuda.profile_kernel(kernel_class(name)) for name in ("nlm", "arccos", "ntk")}
    launched |= {cuda.fused_kernel(kernel_class(name)) for name in ("nlm", "arccos", "ntk")}
    launched |= {cuda.mma_kernel(kernel_class(name)) for name in ("nlm", "arccos", "ntk")}
    assert launched <= set(cuda.signatures()), launched - set(cuda.signatures())


def test_profiles_receive_contiguous_arrays_in_every_mode(monkeypatch):
    """The CUDA profiles index raw pointers: the array code must hand them contiguous arrays."""
    from nlfilt.backend import Backend

    seen = []
    apply_profile = Backend.apply_profile

    def recording(self, kernel, t, scratch):
        seen.append(t.flags.c_contiguous)
        return apply_profile(self, kernel, t, scratch)

    monkeypatch.setattr(Backend, "apply_profile", recording)
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

    from nlfilt.backend import get_backend
    from nlfilt.patches import patch_matrix

    gpu = get_backend(gpu).patch_matrix(cupy.asarray(COLOUR), patch).get()  # the CUDA kernel
    numpy.testing.assert_array_equal(gpu, patch_matrix(numpy, COLOUR, patch))


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["nlm", "arccos", "ntk"])
def test_gpu_profiles_match_numpy(gpu, name):
    import cupy

    from nlfilt.kernels import make_kernel

    kernel = make_kernel(name, h=1.0, sigma=0.5, depth=3)
    values = numpy.linspace(-1.2, 1.2, 10001) if name != "nlm" else numpy.linspace(-200, 5, 10001)
    expected = kernel.profile(numpy, values.copy(), [numpy.empty_like(values) for _ in range(5)])
    from nlfilt.backend import get_backend

    actual = get_backend(gpu).apply_profile(kernel, cupy.asarray(values), []).get()  # the CUDA profile
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


def twin(kernel: str, window: int | None, patch: int = 3, dtype=numpy.float32):
    """The array-code operator of COLOUR, built on the CPU (the twin of the compiled one, if any)."""
    from nlfilt.filters import build_filter
    from nlfilt.resolve import prepare

    extra = {"h": 20.0, "sigma": 5.0} if kernel == "nlm" else {"h": None, "sigma": None}
    backend, image, options = prepare(COLOUR, kernel=kernel, patch=patch, window=window,
                                      depth=2 if kernel == "ntk" else 1, device="cpu", dtype=dtype,
                                      memory_budget=2**24, **extra)
    filter_ = build_filter(backend, image, options, reuse=True)
    return getattr(filter_.affinity, "twin", filter_.affinity)


def test_the_gpu_operators_are_chosen_in_one_place(monkeypatch):
    from nlfilt.backend import Backend
    from nlfilt.collaborative import ArrayGroups
    from nlfilt.cuda.groups import CudaGroups
    from nlfilt.cuda.operators import (
        CudaBoxWindowedNLM,
        CudaFusedGlobal,
        CudaMmaGlobal,
        CudaTiledWindowedNLM,
        CudaWindowedNLM,
        CudaWindowedNLM3D,
        select,
    )
    from nlfilt.operators import GlobalAffinity, WindowedAffinity

    monkeypatch.delenv(cuda.ALTERNATIVES_VARIABLE, raising=False)
    windowed, global_ = twin("nlm", 5), twin("nlm", None)
    assert type(windowed) is WindowedAffinity and type(global_) is GlobalAffinity  # array code
    assert type(select(windowed, windowed.kernel)) is CudaBoxWindowedNLM
    assert select(global_, global_.kernel) is global_
    monkeypatch.setenv(cuda.ALTERNATIVES_VARIABLE, "nlfilt_windowed_tiled")
    assert type(select(windowed, windowed.kernel)) is CudaTiledWindowedNLM
    monkeypatch.setattr(cuda, "BOX_MAX_PATCH", 1)  # patches larger than the box kernel takes
    assert type(select(windowed, windowed.kernel)) is CudaWindowedNLM
    monkeypatch.undo()
    monkeypatch.delenv(cuda.ALTERNATIVES_VARIABLE, raising=False)
    arccos = twin("arccos", 5)
    assert select(arccos, arccos.kernel) is arccos  # no windowed CUDA operator: its array code on CuPy
    volume = volume_twin()
    assert type(select(volume, volume.kernel)) is CudaWindowedNLM3D
    groups = ArrayGroups(Backend("gpu", numpy), (40, 50, 1), patch=8, step=4)
    assert select(groups) is groups  # the collaborative filter's array code on CuPy
    monkeypatch.setenv(cuda.ALTERNATIVES_VARIABLE, "all")
    monkeypatch.setattr(cuda, "compute_capability", lambda: 90)
    assert type(select(windowed, windowed.kernel)) is CudaWindowedNLM
    for name in ("nlm", "arccos", "ntk"):
        operator = twin(name, None)
        assert type(select(operator, operator.kernel)) is CudaMmaGlobal  # float32
        operator = twin(name, None, dtype=numpy.float64)
        assert type(select(operator, operator.kernel)) is CudaFusedGlobal
    monkeypatch.setattr(cuda, "compute_capability", lambda: 75)  # no TF32 tensor cores
    assert type(select(twin("nlm", None), twin("nlm", None).kernel)) is CudaFusedGlobal
    assert type(select(groups)) is CudaGroups


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # outputs stay uninitialised
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_every_gpu_launch_passes_the_signature_check(monkeypatch, dtype):
    """The Python side of each CUDA operator, run on the CPU with the kernels replaced by a recorder:
    every launch's arguments are checked against the kernel's declared parameters."""
    from nlfilt.backend import Backend
    from nlfilt.collaborative import ArrayGroups
    from nlfilt.cuda.operators import select

    launched = []
    monkeypatch.setattr(cuda, "kernel", lambda name, dtype: lambda *launch, **options: launched.append(name))
    monkeypatch.setattr(cuda, "compute_capability", lambda: 90)
    vectors = numpy.ones((COLOUR.shape[0] * COLOUR.shape[1], 2), dtype)
    chosen = [("", twin("nlm", 5, dtype=dtype)), ("all", twin("nlm", 5, dtype=dtype)),
              ("nlfilt_windowed_tiled", twin("nlm", 5, dtype=dtype))]
    chosen += [("all", twin(name, None, dtype=dtype)) for name in KERNELS]
    for alternatives, operator in chosen:
        monkeypatch.setenv(cuda.ALTERNATIVES_VARIABLE, alternatives)
        select(operator, operator.kernel).matmul(vectors)
    gpu_like = Backend("gpu", numpy)
    for name in KERNELS:
        kernel = make_kernel(name, h=1.0, sigma=0.5, depth=2)
        gpu_like.apply_profile(kernel, numpy.zeros(10, dtype), [])
    gpu_like.patch_matrix(COLOUR.astype(dtype), 3)
    volume = volume_twin(dtype)
    select(volume, volume.kernel).matmul(numpy.ones((volume.size, 3), dtype), row_sums=True)
    monkeypatch.setenv(cuda.ALTERNATIVES_VARIABLE, "nlfilt_bm")
    image = COLOUR.astype(dtype)
    groups = select(ArrayGroups(gpu_like, image.shape, patch=8, step=3))
    members = groups.match(numpy.zeros(image.shape[:2], numpy.int32), radius=4, group=8)
    for pilot in (None, image):
        groups.filter(image, pilot, members, 10.0, threshold=2.7)
    stack = select(ArrayGroups(gpu_like, image.shape, patch=8, step=3, frames=3))
    stack.match_series(numpy.zeros((3, *image.shape[:2]), numpy.int32), radius=6, follow=3, reach=2, group=8)
    global_kind = "mma" if dtype == numpy.float32 else "fused"  # tensor cores for float32
    assert launched == ["nlfilt_windowed_box", "nlfilt_windowed_nlm", "nlfilt_windowed_tiled",
                        f"nlfilt_global_{global_kind}_nlm",
                        f"nlfilt_global_{global_kind}_arccos", f"nlfilt_global_{global_kind}_ntk",
                        "nlfilt_profile_nlm",
                        "nlfilt_profile_arccos", "nlfilt_profile_ntk", "nlfilt_patches",
                        "nlfilt_windowed_nlm3d", "nlfilt_bm_match", "nlfilt_bm_filter", "nlfilt_bm_filter",
                        "nlfilt_bm_match_series"]


def volume_twin(dtype=numpy.float64, patch=(1, 3, 3), window=(3, 5, 5)):
    """The array-code windowed NLM operator of a small (Z, H, W, 2) volume, built on the CPU."""
    from nlfilt.filters import build_filter
    from nlfilt.resolve import prepare

    volume = RNG.random((4, 9, 11, 2)) * 100
    backend, array, options = prepare(volume, kernel="nlm", patch=patch, window=window, h=20.0, sigma=5.0,
                                      depth=1, device="cpu", dtype=dtype, memory_budget=2**24,
                                      channel_axis=-1)
    return build_filter(backend, array, options, reuse=True).affinity


@pytest.mark.gpu
@pytest.mark.parametrize(("patch", "window"), [((1, 3, 3), (3, 5, 5)), ((3, 3, 3), (5, 3, 7)), (3, None)])
def test_gpu_volumes_match_numpy(gpu, patch, window):
    """Volumes on the GPU (nlfilt_windowed_nlm3d windowed, the array code's GEMM tiles globally) against
    the CPU's array code, float64, with twicing."""
    volume = RNG.random((5, 12, 10)) * 255
    options = {"patch": patch, "window": window, "h": 30.0, "sigma": 10.0, "dtype": numpy.float64,
               "iterations": 2, "channel_axis": None}
    numpy.testing.assert_allclose(nlfilt.denoise(volume, device="gpu", **options),
                                  nlfilt.denoise(volume, device="cpu", **options), rtol=1e-9)


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


def tf32(values: numpy.ndarray) -> numpy.ndarray:
    """float32 values rounded to TF32 (10 mantissa bits), to nearest with ties away from zero, as the
    tensor cores' ``cvt.rna.tf32.f32`` does."""
    bits = numpy.ascontiguousarray(values, dtype=numpy.float32).view(numpy.uint32)
    return ((bits + numpy.uint32(0x1000)) & numpy.uint32(0xFFFFE000)).view(numpy.float32)


def test_three_tf32_products_keep_the_float32_accuracy_of_the_global_statistic():
    """nlfilt_global_mma's arithmetic, emulated: NLM's t = 2 <a_i, a_j> - s_i - s_j is a difference of
    large terms; one TF32 product (CUPY_TF32) misses it by far more than float32 does, three (a = a_hi +
    a_lo, a b ~ a_hi b_hi + a_hi b_lo + a_lo b_hi) stay within a small factor of the float32 GEMM."""
    from nlfilt.filters import build_filter
    from nlfilt.resolve import prepare

    rows, cols = numpy.mgrid[:40, :44]
    image = 120 + 60 * numpy.sin(cols / 5.0) * (rows > 12) + 50 * ((rows - cols) % 24 < 12)
    image = image + RNG.normal(0, 20, image.shape)
    backend, array, options = prepare(image, kernel="nlm", patch=7, window=None, h=16.0, sigma=20.0, depth=1,
                                      device="cpu", dtype=numpy.float32, memory_budget=2**26)
    affinity = build_filter(backend, array, options, reuse=True).affinity
    left, right = affinity.left, affinity.right_t
    exact = left.astype(numpy.float64) @ right.astype(numpy.float64).T
    float32 = numpy.abs(left @ right.T - exact).max()
    one = numpy.abs(tf32(left).astype(numpy.float64) @ tf32(right).astype(numpy.float64).T - exact).max()
    left_low, right_low = tf32(left - tf32(left)), tf32(right - tf32(right))
    three = (left_low @ tf32(right).T + tf32(left) @ right_low.T + tf32(left) @ tf32(right).T)
    three = numpy.abs(three - exact).max()
    assert three < 4 * float32, (three, float32)
    assert one > 50 * three, (one, three)


@pytest.mark.gpu
@pytest.mark.parametrize("options", [{"kernel": "nlm", "h": 30.0, "sigma": 10.0}, {"kernel": "arccos"},
                                     {"kernel": "ntk", "depth": 3}], ids=["nlm", "arccos", "ntk"])
@pytest.mark.parametrize("shape", [(20, 23, 3), (70, 41)], ids=["colour, one tile", "gray, 45 tiles"])
def test_gpu_tensor_core_global_operator_matches_the_gemm_tiles(gpu, options, shape, monkeypatch):
    """nlfilt_global_mma (float32, 3xTF32) against the GEMM tiles: 460 pixels fill one 64-row tile
    partly; 2870 pixels make 45 tiles, runs of MMA_CHUNK key tiles, mirrored terms; 3 channels + the row
    sums, and one product with 9 columns (the twin's)."""
    image = RNG.random(shape) * 255
    arguments = dict(options, patch=5, window=None, iterations=2, dtype=numpy.float32)
    monkeypatch.delenv(cuda.ALTERNATIVES_VARIABLE, raising=False)
    tiles = nlfilt.denoise(image, device="gpu", **arguments)
    monkeypatch.setenv(cuda.ALTERNATIVES_VARIABLE, "nlfilt_global_mma")
    mma = nlfilt.denoise(image, device="gpu", **arguments)
    numpy.testing.assert_allclose(mma, tiles, rtol=1e-4, atol=1e-4 * numpy.abs(tiles).max())
    from nlfilt.cuda.operators import CudaMmaGlobal
    from nlfilt.filters import build_filter
    from nlfilt.resolve import prepare

    extra = {key: options[key] for key in ("h", "sigma", "depth") if key in options}
    backend, array, resolved = prepare(image, kernel=options["kernel"], patch=5, window=None, device="gpu",
                                       dtype=numpy.float32, memory_budget=2**26,
                                       **{"h": None, "sigma": None, "depth": 1, **extra})
    affinity = build_filter(backend, array, resolved, reuse=True).affinity
    affinity = getattr(affinity, "twin", affinity)
    for columns in (1, 8, 9):  # 9: more than the kernel holds, the twin's product
        vectors = backend.asarray(RNG.standard_normal((affinity.size, columns)), dtype=numpy.float32)
        expected = affinity.matmul(vectors).get()
        actual = CudaMmaGlobal(affinity).matmul(vectors).get()
        numpy.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * numpy.abs(expected).max())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [numpy.float64, numpy.float32])
@pytest.mark.parametrize("patch", [1, 3, 7, 25])
@pytest.mark.parametrize("window", [1, 5, 21])
def test_gpu_tiled_windowed_nlm_matches_numpy(gpu, patch, window, dtype, monkeypatch):
    """nlfilt_windowed_tiled against the array code: a 37 x 70 colour image gives partial tiles on both
    axes (tiles of 33 - patch columns), windows wider than a tile, partners in the halo of every side;
    three channels and the row sums (four columns) in float32, where the RGB tile of 16 rows does not fit
    the shared memory with window 21 and 8 rows are used."""
    image = RNG.random((37, 70, 3)) * 255
    options = {"patch": patch, "window": window, "h": 30.0, "sigma": 10.0, "dtype": dtype, "iterations": 2}
    monkeypatch.setenv(cuda.ALTERNATIVES_VARIABLE, "nlfilt_windowed_tiled")
    tiled = nlfilt.denoise(image, device="gpu", **options)
    cpu = nlfilt.denoise(image, device="cpu", **options)
    numpy.testing.assert_allclose(tiled, cpu, rtol=1e-9 if dtype == numpy.float64 else 2e-4)
