"""GPU conformance and speed check, one prepared command for a lent GPU machine.

Usage (on the GPU machine, from the repository root, nlfilt installed or not):

    NLFILT_REQUIRE_GPU=1 python3 -m pytest -m gpu && python3 benchmarks/gpu_check.py --write

Prints tables and, with ``--write``, stores them in
benchmarks/results/gpu-<device>.md:

* the device, the software and the one-off CUDA compilation time;
* conformance of every GPU path against the NumPy float64 path on 64 x 64
  crops of two photographs (gray and RGB) with Gaussian noise of standard
  deviation 25: the windowed NLM kernels (``nlfilt_windowed_box``, the
  default, and ``nlfilt_windowed_nlm``, one thread per pixel), the windowed
  array code on CuPy (arccos, ntk), the global GEMM tiles (the default), the
  fused global kernel (``nlfilt_global_fused``), automatic stopping (stepwise
  and Krylov), Sinkhorn and ``guide='pilot'``.  Each row gives the maximum
  relative error of one product ``K V`` (float32 and float64), of one
  application ``W y`` (float32), and the PSNR of the final estimate on NumPy
  float64 with the GPU's difference from it (float32, float64);
* the global mode, one product ``K V`` on 512² and 1024² gray (patch 7, NLM
  and arccos), GEMM tiles and fused kernel, with the ratio to the
  exp-throughput bound (N² evaluations at 3.9e12 per second on an H100) and
  to the targets of 36 ms (NLM) and 54 ms (arccos) at 512²;
* windowed NLM (patch 7, window 21) at 512², 2048², 4096², both kernels, with
  the ratio to the 20 ms target at 4096² and to the exp bound (N x 441
  evaluations);
* a batch of gray 512² PNG images through the command line (``nlfilt
  denoise`` on a folder): the default collaborative method (200 images; 100
  with one writer thread) and ``--method filter`` (1,000 images, default
  and alternative kernels): images per second and the
  share of the wall time spent inside ``nlfilt.denoise`` (GPU work
  synchronised, so it holds the kernels, their launches and the transfers;
  the rest is decoding, encoding and file work);
* the collaborative filter (``denoise_collaborative``): the GPU against
  NumPy float64 on the same crops (PSNR difference), and its time at 512² and
  1024² against NumPy;
* each timing next to the NumPy path on the same machine, timed at the
  smallest size of its group and scaled by pairs (global) or pixels
  (windowed, batch); the table says which.

Every timer stops after a device synchronisation; every timing is the best of
repeated calls after a warm-up call.  Each section runs on its own: one that
fails prints its traceback, is recorded as failed, and the others still run.
``--dry-run`` runs the whole script on the CPU at tiny sizes, to check it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imageio.v3 as iio
import numpy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, installed or not

import nlfilt  # noqa: E402
from nlfilt import cuda  # noqa: E402
from nlfilt.filters import build_filter  # noqa: E402
from nlfilt.resolve import prepare  # noqa: E402

from harness import psnr, write  # noqa: E402

#: Kernel evaluations per second on an H100 (exp throughput): the bound of the global mode.
EXP_RATE_H100 = 3.9e12
#: The issue's targets for one product on an H100, seconds.
TARGETS = {("global", "nlm", 512): 0.036, ("global", "arccos", 512): 0.054, ("windowed", "nlm", 4096): 0.020}
NOISE = 25.0


def synchronize(device: str) -> None:
    if device == "gpu":
        import cupy

        cupy.cuda.Device().synchronize()


def best_time(function, device: str, repeats: int = 2) -> float:
    function()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times, default=float("nan"))


def host(array) -> numpy.ndarray:
    return array.get() if hasattr(array, "get") else numpy.asarray(array)


@contextlib.contextmanager
def alternative(name: str | None):
    """Use the alternative CUDA path ``name`` ('all'; None: the defaults) for the duration of the block."""
    previous = os.environ.get(cuda.ALTERNATIVES_VARIABLE)
    os.environ[cuda.ALTERNATIVES_VARIABLE] = name or ""
    try:
        yield
    finally:
        if previous is None:
            del os.environ[cuda.ALTERNATIVES_VARIABLE]
        else:
            os.environ[cuda.ALTERNATIVES_VARIABLE] = previous


def photo(size: int, colour: bool) -> numpy.ndarray:
    """A size x size crop of a photograph shipped with scikit-image (a synthetic scene without it)."""
    try:
        from skimage import data
        image = (data.astronaut()[30:30 + 4 * size:4, 150:150 + 4 * size:4] if colour
                 else data.camera()[60:60 + 4 * size:4, 180:180 + 4 * size:4])
        return image.astype(numpy.float64)
    except ImportError:
        grid = numpy.linspace(0, 6 * numpy.pi, size)
        clean = 120 + 60 * numpy.sin(grid)[:, None] * numpy.cos(grid / 2)[None, :]
        return numpy.stack([clean * (0.8 + 0.1 * c) for c in range(3)], axis=2) if colour else clean


def noisy_image(size: int, channels: int = 0, seed: int = 0) -> numpy.ndarray:
    """A smooth synthetic scene with noise (the timing image; its content does not change the cost)."""
    grid = numpy.linspace(0, 6 * numpy.pi, size)
    clean = 120 + 60 * numpy.sin(grid)[:, None] * numpy.cos(grid / 2)[None, :]
    if channels:
        clean = numpy.stack([clean * (0.8 + 0.1 * c) for c in range(channels)], axis=2)
    return (clean + numpy.random.default_rng(seed).normal(0, 20, clean.shape)).astype(numpy.float32)



def relative_error(actual, expected) -> float:
    return float(numpy.abs(host(actual) - expected).max() / numpy.abs(expected).max())


# --- conformance -------------------------------------------------------------------------------------

#: (path, kernel options, alternative CUDA path or None); every row runs on gray and RGB.
PER_PIXEL = "nlfilt_windowed_nlm"
FUSED = "nlfilt_global_fused"
MMA = "nlfilt_global_mma"
TILED = "nlfilt_windowed_tiled"
PATHS = [
    ("windowed box (nlfilt_windowed_box)", {"kernel": "nlm", "window": 7}, None),
    ("windowed box (nlfilt_windowed_box)", {"kernel": "nlm", "window": 21, "patch": 7}, None),
    ("windowed per pixel (nlfilt_windowed_nlm)", {"kernel": "nlm", "window": 7}, PER_PIXEL),
    ("windowed per pixel (nlfilt_windowed_nlm)", {"kernel": "nlm", "window": 21, "patch": 7}, PER_PIXEL),
    ("windowed tiled (nlfilt_windowed_tiled)", {"kernel": "nlm", "window": 7}, TILED),
    ("windowed tiled (nlfilt_windowed_tiled)", {"kernel": "nlm", "window": 21, "patch": 7}, TILED),
    ("windowed array code on CuPy", {"kernel": "arccos", "window": 7, "iterations": 1}, None),
    ("windowed array code on CuPy", {"kernel": "ntk", "window": 7, "depth": 2, "iterations": 1}, None),
    ("global GEMM tiles", {"kernel": "nlm", "window": None}, None),
    ("global GEMM tiles", {"kernel": "arccos", "window": None}, None),
    ("global GEMM tiles", {"kernel": "ntk", "window": None, "depth": 2}, None),
    ("global fused (nlfilt_global_fused)", {"kernel": "nlm", "window": None}, FUSED),
    ("global fused (nlfilt_global_fused)", {"kernel": "arccos", "window": None}, FUSED),
    ("global fused (nlfilt_global_fused)", {"kernel": "ntk", "window": None, "depth": 2}, FUSED),
    ("global tensor cores (nlfilt_global_mma; float32)", {"kernel": "nlm", "window": None}, MMA),
    ("global tensor cores (nlfilt_global_mma; float32)", {"kernel": "arccos", "window": None}, MMA),
    ("global tensor cores (nlfilt_global_mma; float32)", {"kernel": "ntk", "window": None, "depth": 2}, MMA),
    ("automatic stopping, stepwise (SURE)", {"kernel": "nlm", "iterations": "auto"}, None),
    ("automatic stopping, Krylov (SURE)", {"kernel": "nlm", "window": None, "iterations": "auto"}, None),
    ("automatic stopping, Krylov (SURE)", {"kernel": "arccos", "window": None, "iterations": "auto"}, None),
    ("Sinkhorn", {"kernel": "nlm", "normalize": "sinkhorn"}, None),
    ("Sinkhorn", {"kernel": "nlm", "window": None, "normalize": "sinkhorn"}, None),
    ("guide='pilot'", {"kernel": "nlm", "guide": "pilot"}, None),
]


def products(image: numpy.ndarray, device: str, dtype, options: dict):
    """(K V, W y) of the filter of ``image`` for ``options``, as NumPy arrays."""
    build = {key: options.get(key) for key in ("patch", "window", "h", "sigma")}
    backend, array, resolved = prepare(image, kernel=options["kernel"], depth=options.get("depth", 1),
                                       device=device, dtype=dtype, memory_budget=2**30,
                                       normalize=options.get("normalize"), iterations=options["iterations"],
                                       **build)
    filter_ = build_filter(backend, array, resolved, reuse=False)
    vectors = numpy.random.default_rng(1).standard_normal((filter_.size, 2))
    product = filter_.affinity.matmul(backend.asarray(vectors, dtype=dtype))
    flat = array.reshape(-1, array.shape[2])
    return host(product), host(filter_.apply(flat))


def conformance(device: str, lines: list[str], size: int) -> None:
    lines += ["\n## Conformance against the NumPy float64 path\n",
              f"{size}x{size} crops of scikit-image's camera (gray) and astronaut (RGB), Gaussian noise of "
              f"standard deviation {NOISE:g} (seed 0), sigma passed; patch 5 unless named; 3 twicing steps "
              "unless named.  K V: max relative error of one product with two random columns; W y: one "
              "application of the filter to the image; PSNR: the final estimate against the clean crop.\n",
              "| path | options | image | K V float32 | K V float64 | W y float32 | PSNR NumPy f64 "
              "| GPU f32 - NumPy | GPU f64 - NumPy | steps (NumPy/GPU) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path, options, choice in PATHS:
        options = dict({"patch": 5, "window": 11, "iterations": 3}, **options)
        if options["kernel"] == "nlm":
            options.setdefault("h", 0.8 * NOISE)
        if options["kernel"] == "nlm" or options["iterations"] == "auto":
            options["sigma"] = NOISE
        for colour in (False, True):
            clean = photo(size, colour)
            noisy = clean + numpy.random.default_rng(0).normal(0, NOISE, clean.shape)
            call = {key: value for key, value in options.items() if key not in ("depth",)}
            if options["kernel"] == "ntk":
                call["depth"] = options["depth"]
            with alternative(choice):
                expected_kv, expected_wy = products(noisy, "cpu", numpy.float64, options)
                expected, expected_info = nlfilt.denoise(noisy, device="cpu", dtype=numpy.float64,
                                                         return_info=True, **call)
                kv, wy, differences, steps = [], None, [], []
                for dtype in (numpy.float32, numpy.float64):
                    actual_kv, actual_wy = products(noisy, device, dtype, options)
                    kv.append(relative_error(actual_kv, expected_kv))
                    if dtype == numpy.float32:
                        wy = relative_error(actual_wy, expected_wy)
                    actual, info = nlfilt.denoise(noisy, device=device, dtype=dtype, return_info=True, **call)
                    differences.append(psnr(host(actual), clean) - psnr(expected, clean))
                    steps.append(info.iterations)
            shown = ", ".join(f"{key}={value}" for key, value in options.items()
                              if key not in ("kernel", "sigma", "h"))
            lines.append(f"| {path} | {options['kernel']}, {shown} | {'RGB' if colour else 'gray'} | "
                         f"{kv[0]:.1e} | {kv[1]:.1e} | {wy:.1e} | {psnr(expected, clean):.2f} | "
                         f"{differences[0]:+.4f} | {differences[1]:+.4f} | "
                         f"{expected_info.iterations}/{'/'.join(map(str, steps))} |")
            print(lines[-1], flush=True)


# --- timings -----------------------------------------------------------------------------------------

def operator_seconds(image: numpy.ndarray, device: str, kernel: str, patch: int, window: int | None,
                     budget: int, repeats: int = 2) -> float:
    """Best time of one product ``K V`` (two columns: a gray image and its row sums), float32."""
    extra = {"sigma": 20.0, "h": 16.0} if kernel == "nlm" else {}
    backend, array, options = prepare(image, kernel=kernel, patch=patch, window=window, depth=1,
                                      device=device, dtype=numpy.float32, memory_budget=budget,
                                      h=extra.get("h"), sigma=extra.get("sigma"))
    affinity = build_filter(backend, array, options, reuse=False).affinity
    vectors = backend.xp.ones((array.shape[0] * array.shape[1], 2), dtype=numpy.float32)
    return best_time(lambda: affinity.matmul(vectors), device, repeats=repeats)


def ratio_to_target(kind: str, kernel: str, size: int, seconds: float) -> str:
    target = TARGETS.get((kind, kernel, size))
    return "" if target is None else f"{seconds / target:.2f} ({target * 1e3:.0f} ms)"


def global_timings(device: str, sizes: list[int], reference_size: int, lines: list[str]) -> None:
    lines += ["\n## Global mode, one product K V (gray, patch 7, float32, two columns)\n",
              f"NumPy: timed at {reference_size}² on this machine's host cores and scaled by pairs.  Bound: "
              "N² kernel evaluations at 3.9e12 exp per second.\n",
              "| kernel | image | GEMM tiles ms | fused ms | tensor cores ms | tiles / bound | "
              "fused / bound | tensor cores / bound | best / target | NumPy s (scaled) | speedup (best) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for kernel in ("nlm", "arccos"):
        cpu_seconds = operator_seconds(noisy_image(reference_size), "cpu", kernel, 7, None, 2**30, repeats=1)
        for size in sizes:
            image = noisy_image(size)
            repeats = 1 if size >= 1024 else 3
            with alternative(None):
                tiles = operator_seconds(image, device, kernel, 7, None, 16 * 2**30, repeats)
            with alternative(FUSED):
                fused = operator_seconds(image, device, kernel, 7, None, 16 * 2**30, repeats)
            with alternative(MMA):
                mma = operator_seconds(image, device, kernel, 7, None, 16 * 2**30, repeats)
            pairs = float(size**2) ** 2
            bound = pairs / EXP_RATE_H100
            best = min(tiles, fused, mma)
            cpu = cpu_seconds * pairs / float(reference_size**2) ** 2
            lines.append(f"| {kernel} | {size}x{size} | {tiles * 1e3:.2f} | {fused * 1e3:.2f} | "
                         f"{mma * 1e3:.2f} | {tiles / bound:.2f} | {fused / bound:.2f} | {mma / bound:.2f} | "
                         f"{ratio_to_target('global', kernel, size, best)} | {cpu:.1f} | {cpu / best:.0f}x |")
            print(lines[-1], flush=True)


def windowed_timings(device: str, sizes: list[int], lines: list[str]) -> None:
    lines += ["\n## Windowed NLM, one product K V (gray, patch 7, window 21, float32, two columns)\n",
              f"NumPy: timed at {sizes[0]}² on the host cores and scaled by pixels.  Bound: N x 441 "
              "evaluations at 3.9e12 exp per second.  Difference: max relative difference of the per-pixel "
              "and the tiled kernels' denoised images from the box kernel's.\n",
              "| image | box (default) ms | per pixel ms | tiled ms | box / bound | per pixel / bound | "
              "tiled / bound | best / target | difference (per pixel, tiled) | NumPy s (scaled) | "
              "speedup (best) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    cpu_seconds = operator_seconds(noisy_image(sizes[0]), "cpu", "nlm", 7, 21, 2**30, repeats=1)
    cpu_per_pixel = cpu_seconds / sizes[0] ** 2
    for size in sizes:
        image = noisy_image(size)
        options = {"patch": 7, "window": 21, "h": 16.0, "sigma": 20.0, "device": device}
        with alternative(None):
            box_seconds = operator_seconds(image, device, "nlm", 7, 21, 2**30, repeats=3)
            box = host(nlfilt.denoise(image, **options))
        with alternative(PER_PIXEL):
            pixel_seconds = operator_seconds(image, device, "nlm", 7, 21, 2**30, repeats=3)
            pixel = host(nlfilt.denoise(image, **options))
        with alternative(TILED):
            tiled_seconds = operator_seconds(image, device, "nlm", 7, 21, 2**30, repeats=3)
            tiled = host(nlfilt.denoise(image, **options))
        differences = [float(abs(box - other).max() / abs(box).max()) for other in (pixel, tiled)]
        bound = size**2 * 441 / EXP_RATE_H100
        best = min(box_seconds, pixel_seconds, tiled_seconds)
        cpu = cpu_per_pixel * size**2
        lines.append(f"| {size}x{size} | {box_seconds * 1e3:.2f} | {pixel_seconds * 1e3:.2f} | "
                     f"{tiled_seconds * 1e3:.2f} | {box_seconds / bound:.1f} | {pixel_seconds / bound:.1f} | "
                     f"{tiled_seconds / bound:.1f} | {ratio_to_target('windowed', 'nlm', size, best)} | "
                     f"{differences[0]:.1e}, {differences[1]:.1e} | {cpu:.2f} | {cpu / best:.0f}x |")
        print(lines[-1], flush=True)


#: The collaborative filter's GPU paths: the array code on CuPy (the default) and its CUDA kernels.
COLLABORATIVE_PATHS = [("array code on CuPy", None), ("CUDA kernels (nlfilt_bm)", "nlfilt_bm")]


def collaborative_checks(device: str, sizes: list[int], lines: list[str]) -> None:
    """The collaborative filter on both GPU paths: members and stages against the CPU's, the whole filter
    against NumPy float64 on the photographs, and its time against NumPy and the cost model."""
    from nlfilt import collaborative
    from nlfilt.backend import get_backend
    from nlfilt.cost import estimate_collaborative_seconds

    lines += ["\n## Collaborative filter (denoise_collaborative)\n",
              "Groups: nlfilt_bm_match's members against the CPU's on the 64x64 photographs' guides "
              "(identical is required); stage 1: nlfilt_bm_filter against the CPU's array code (max "
              "relative difference).  Conformance: 64x64 crops as above, sigma 25 given; timing: the "
              "synthetic gray image, sigma given, float32, against NumPy on this host and the cost model's "
              "GPU estimate.\n",
              "| image | members identical | stage 1 f32 | stage 1 f64 |", "| --- | --- | --- | --- |"]
    for colour in (False, True):
        clean = photo(64, colour)
        noisy = clean + numpy.random.default_rng(0).normal(0, NOISE, clean.shape)
        image = noisy if colour else noisy[:, :, None]
        twin = collaborative.ArrayGroups(get_backend("cpu"), image.shape, patch=8, step=4)
        work = image @ collaborative.OPPONENT.T if colour else image
        levels = collaborative.quantise(numpy, collaborative.guide(numpy, work, colour), NOISE)
        members = twin.match(levels, radius=12, group=16)
        row = f"| {'RGB' if colour else 'gray'} | "
        if device == "gpu":
            import cupy

            from nlfilt.cuda.groups import CudaGroups

            kernels = CudaGroups(collaborative.ArrayGroups(get_backend("gpu"), image.shape, patch=8, step=4))
            found = kernels.match(cupy.asarray(levels), radius=12, group=16).get()
            row += f"{bool((found == members).all())} | "
            for dtype in (numpy.float32, numpy.float64):
                expected = twin.filter(work.astype(dtype), None, members, NOISE, threshold=2.7)
                actual = kernels.filter(cupy.asarray(work, dtype=dtype), None, cupy.asarray(members), NOISE,
                                        threshold=2.7)
                row += f"{relative_error(actual, expected):.1e} | "
        else:
            row += "(no GPU) | | |"
        lines.append(row)
        print(lines[-1], flush=True)
    lines += ["", "| path | image | PSNR NumPy f64 | GPU f32 - NumPy | GPU f64 - NumPy | max relative "
              "difference f32 |", "| --- | --- | --- | --- | --- | --- |"]
    for path, choice in COLLABORATIVE_PATHS:
        with alternative(choice):
            for colour, low_snr in itertools.product((False, True), (False, True)):
                clean = photo(64, colour)
                noisy = clean + numpy.random.default_rng(0).normal(0, NOISE, clean.shape)
                call = {"sigma": NOISE, "low_snr": low_snr}  # low_snr: the coarse scale (nlfilt.pyramid)
                expected = nlfilt.denoise_collaborative(noisy, **call, device="cpu", dtype=numpy.float64)
                actual = [host(nlfilt.denoise_collaborative(noisy, **call, device=device, dtype=dtype))
                          for dtype in (numpy.float32, numpy.float64)]
                image = ("RGB" if colour else "gray") + (", low signal-to-noise" if low_snr else "")
                lines.append(f"| {path} | {image} | {psnr(expected, clean):.2f} | "
                             f"{psnr(actual[0], clean) - psnr(expected, clean):+.4f} | "
                             f"{psnr(actual[1], clean) - psnr(expected, clean):+.4f} | "
                             f"{relative_error(actual[0], expected):.1e} |")
                print(lines[-1], flush=True)
    lines += ["", "| path | image | GPU s | NumPy s | speedup | GPU estimate s | estimate / time |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for size in sizes:
        image = noisy_image(size)
        started = time.perf_counter()
        nlfilt.denoise_collaborative(image, sigma=20.0, device="cpu")
        cpu = time.perf_counter() - started
        estimate = estimate_collaborative_seconds(image.shape, "gpu")
        for path, choice in COLLABORATIVE_PATHS:
            with alternative(choice):
                gpu = best_time(functools.partial(nlfilt.denoise_collaborative, image, sigma=20.0,
                                                  device=device), device)
            lines.append(f"| {path} | {size}x{size} gray | {gpu:.4f} | {cpu:.2f} | {cpu / gpu:.0f}x | "
                         f"{estimate:.4f} | {estimate / gpu:.2f} |")
            print(lines[-1], flush=True)
    series_checks(device, lines)


def series_checks(device: str, lines: list[str]) -> None:
    """A stack filtered as a series (nlfilt.series): the stack matching's array code on CuPy and its CUDA
    kernel (nlfilt_bm_match_series, opt-in) against the compiled CPU kernel (identical members
    required), the filter against the CPU's, and its time (array code, then with the kernels)."""
    from nlfilt import collaborative, cuda
    from nlfilt.accelerate import accelerate
    from nlfilt.backend import get_backend
    from nlfilt.cost import estimate_collaborative_seconds
    from nlfilt.jit_groups import CompiledGroups

    stack = numpy.stack([numpy.roll(noisy_image(128), (2 * t, 3 * t), axis=(0, 1)) for t in range(8)])
    levels = collaborative.quantise(numpy, stack.astype(numpy.float64), 20.0)
    twin = collaborative.ArrayGroups(get_backend("cpu"), (128, 128, 1), patch=8, step=3, frames=8)
    members = CompiledGroups(twin).match_series(levels, radius=9, follow=5, reach=4, group=16)
    lines += ["\n## Series (denoise_collaborative of a stack)\n",
              "8 frames of the synthetic 128x128 image moving 2 and 3 pixels per frame, sigma 20 given; then "
              "16 frames of 256x256 for the time.\n",
              "| members identical (array code) | members identical (nlfilt_bm_match_series) | max relative "
              "difference f32 | device s | device s, nlfilt_bm kernels | CPU s | speedup | GPU estimate s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    backend = get_backend(device)  # the array code on CuPy (NumPy in a dry run)
    on_device = collaborative.ArrayGroups(backend, (128, 128, 1), patch=8, step=3, frames=8)
    found = host(on_device.match_series(backend.xp.asarray(levels), radius=9, follow=5, reach=4, group=16))
    os.environ[cuda.ALTERNATIVES_VARIABLE] = "nlfilt_bm"  # the kernels, for the members and a second time
    try:
        kernel = accelerate(backend, collaborative.ArrayGroups(backend, (128, 128, 1), patch=8, step=3,
                                                               frames=8))
        by_kernel = host(kernel.match_series(backend.xp.asarray(levels), radius=9, follow=5, reach=4,
                                             group=16))
    finally:
        os.environ.pop(cuda.ALTERNATIVES_VARIABLE, None)
    expected = nlfilt.denoise_collaborative(stack, sigma=20.0, channel_axis=None, device="cpu")
    actual = nlfilt.denoise_collaborative(stack, sigma=20.0, channel_axis=None, device=device)
    long = numpy.stack([numpy.roll(noisy_image(256), (2 * t, 3 * t), axis=(0, 1)) for t in range(16)])
    started = time.perf_counter()
    nlfilt.denoise_collaborative(long, sigma=20.0, channel_axis=None, device="cpu")
    cpu = time.perf_counter() - started
    gpu = best_time(functools.partial(nlfilt.denoise_collaborative, long, sigma=20.0, channel_axis=None,
                                      device=device), device)
    estimate = estimate_collaborative_seconds((*long.shape, 1), "gpu")
    os.environ[cuda.ALTERNATIVES_VARIABLE] = "nlfilt_bm"
    try:
        with_kernels = best_time(functools.partial(nlfilt.denoise_collaborative, long, sigma=20.0,
                                                   channel_axis=None, device=device), device)
    finally:
        os.environ.pop(cuda.ALTERNATIVES_VARIABLE, None)
    lines.append(f"| {bool((found == members).all())} | {bool((by_kernel == members).all())} | "
                 f"{relative_error(actual, expected):.1e} | {gpu:.3f} | {with_kernels:.3f} | {cpu:.2f} | "
                 f"{cpu / gpu:.1f}x | {estimate:.3f} |")
    print(lines[-1], flush=True)


class TimedDenoise:
    """Within the block, ``nlfilt.denoise`` and ``nlfilt.denoise_collaborative`` add the (synchronised)
    time spent inside them to :attr:`seconds`."""

    NAMES = ("denoise", "denoise_collaborative")

    def __init__(self, device: str) -> None:
        self.device = device
        self.seconds = 0.0
        self.inner = {name: getattr(nlfilt, name) for name in self.NAMES}

    def __enter__(self) -> TimedDenoise:
        for name, function in self.inner.items():
            setattr(nlfilt, name, self._timed(function))
        return self

    def __exit__(self, *exc_info) -> None:
        for name, function in self.inner.items():
            setattr(nlfilt, name, function)

    def _timed(self, function):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                synchronize(self.device)
                self.seconds += time.perf_counter() - start
        return call


def batch_timing(device: str, count: int, cpu_count: int, size: int, lines: list[str]) -> None:
    from click.testing import CliRunner

    from nlfilt.cli import main

    folder = Path(tempfile.mkdtemp(prefix="nlfilt-batch-"))
    rows = []
    try:
        def write(index: int) -> None:
            iio.imwrite(folder / f"{index:04d}.png",
                        numpy.clip(noisy_image(size, seed=index), 0, 255).astype(numpy.uint8))

        with ThreadPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(write, range(count)))
        inputs = sorted(folder.glob("*.png"))
        from nlfilt.cli import denoise as command

        runs = [("NumPy, collaborative (the default)", "cpu", None, cpu_count, None, []),
                ("GPU, collaborative, one writer thread", device, None, min(count, 100), 1, []),
                ("GPU, collaborative (the default)", device, None, min(count, 200), None, []),
                ("GPU, --method filter (NLM, box kernel)", device, None, count, None, ["--method", "filter"]),
                ("GPU, --method filter, alternative kernels", device, "all", count, None,
                 ["--method", "filter"])]
        for label, name, choice, files, writers, extra in runs:
            timed = TimedDenoise(name)
            command.WRITER_THREADS = writers
            try:
                with alternative(choice), timed:
                    start = time.perf_counter()
                    result = CliRunner().invoke(main, ["denoise", *extra, *map(str, inputs[:files]), "-o",
                                                       str(folder / f"out-{len(rows)}"), "--device", name,
                                                       "--quiet"])
                    wall = time.perf_counter() - start
            finally:
                command.WRITER_THREADS = None
            if result.exit_code != 0:
                raise RuntimeError(f"CLI batch on {name} failed: {result.output}")
            rows.append(f"| {label} | {files} | {wall:.1f} | {files / wall:.1f} | "
                        f"{timed.seconds / wall:.0%} | {timed.seconds / files * 1e3:.1f} |")
        lines += [f"\n## Command-line batch: nlfilt denoise on a folder of {size}x{size} gray PNG (sigma "
                  "estimated; --method filter: NLM, patch 5, window 11)\n",
                  "| run | images | wall s | images per s | share in denoising | ms per image in it |",
                  "| --- | --- | --- | --- | --- | --- |", *rows]
        print("\n".join(lines[-(3 + len(rows)):]), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def network_timing(device: str, width: int, steps: int, lines: list[str]) -> None:
    """compare-network's training (nlfilt.network, depth 2, float32, 32x32 gray) on the device and on the
    CPU: seconds per step, the speed-up, the outputs' agreement after 3 steps, and the kernel movement."""
    from nlfilt.network import ntk_eigenvalue, train

    image = noisy_image(32)
    eigenvalue = ntk_eigenvalue(image, depth=2)
    settings = dict(width=width, depth=2, eigenvalue=eigenvalue, seed=1)
    train(image, steps=1, device=device, **settings)  # warm-up (CuPy's kernels and cuBLAS handles)
    synchronize(device)
    start = time.perf_counter()
    run = train(image, steps=steps, device=device, **settings)
    synchronize(device)
    device_step = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    moved = run.kernel_change().movement
    kernel_seconds = time.perf_counter() - start
    start = time.perf_counter()
    reference = train(image, steps=3, device="cpu", **settings)
    cpu_step = (time.perf_counter() - start) / 3
    short = train(image, steps=3, device=device, **settings)
    agreement = relative_error(short.outputs[3], reference.outputs[3])
    lines += [f"\n## Tangent CNN training (compare-network): width {width}, depth 2, float32, 32x32 gray\n",
              "| device | s per step | speed-up | kernel movement after the steps (s to form it) | "
              "|f_3 device - f_3 CPU| / |f_3 CPU| |",
              "| --- | --- | --- | --- | --- |",
              f"| {device} ({steps} steps) | {device_step:.4f} | {cpu_step / device_step:.1f}x | "
              f"{moved:.5f} ({kernel_seconds:.2f}) | {agreement:.2e} |",
              f"| cpu (3 steps) | {cpu_step:.4f} | 1.0x | | |"]
    print("\n".join(lines[-5:]), flush=True)


def device_of(args: argparse.Namespace) -> str:
    return "cpu" if args.dry_run else "gpu"


def device_name(device: str) -> str:
    if device != "gpu":
        return f"cpu-{platform.machine()}"
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    return name.decode() if isinstance(name, bytes) else name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="About 5 minutes on one H100 (measured 2026-11-27: "
                                            "conformance 62 s, global 116 s, batch about 100 s).")
    parser.add_argument("--write", action="store_true", help="store the tables in benchmarks/results/")
    parser.add_argument("--dry-run", action="store_true", help="run on the CPU at tiny sizes")
    parser.add_argument("--images", type=int, default=1000, help="images in the command-line batch")
    parser.add_argument("--sections", default="", help="comma-separated sections to run (default: all)")
    parser.add_argument("--one-product", metavar="KERNEL:SIZE",
                        help="only build one global operator (patch 7, float32) on a SIZE x SIZE gray "
                             "image and apply it once, e.g. under a profiler: ncu --print-summary "
                             "per-kernel python3 benchmarks/gpu_check.py --one-product nlm:512")
    args = parser.parse_args()
    if args.one_product:
        kernel, size = args.one_product.split(":")
        operator_seconds(noisy_image(int(size)), device_of(args), kernel, 7, None, 16 * 2**30, repeats=0)
        return
    dry = args.dry_run
    device = device_of(args)
    nlfilt.backend.get_backend(device)  # a clear error now if no GPU is usable
    started = time.perf_counter()
    name = device_name(device)
    lines = [f"# GPU check: {name}\n",
             f"nlfilt {nlfilt.__version__}, NumPy {numpy.__version__}, Python {platform.python_version()}, "
             f"{os.cpu_count()} host cores; produced by `python3 benchmarks/gpu_check.py --write`"
             + (" (dry run on the CPU)" if dry else "") + ".\n"]
    failures = []
    sections = []
    if not dry:
        import cupy

        lines.append(f"CuPy {cupy.__version__}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, driver "
                     f"{cupy.cuda.runtime.driverGetVersion()}.\n")

        def compile_all() -> None:
            compile_started = time.perf_counter()
            for dtype in (numpy.float32, numpy.float64):
                cuda.kernel("nlfilt_patches", dtype)  # compiles the whole module for this dtype
            lines.append(f"Compilation of the CUDA kernels (NVRTC, float32 and float64, once; excluded from "
                         f"the timings below): {time.perf_counter() - compile_started:.1f} s.\n")
        sections.append(("compilation", compile_all))
    print("\n".join(lines), flush=True)
    sections += [
        ("conformance", lambda: conformance(device, lines, 24 if dry else 64)),
        ("global timings", lambda: global_timings(device, [32, 48] if dry else [512, 1024],
                                                  24 if dry else 256, lines)),
        ("windowed timings", lambda: windowed_timings(device, [64, 96] if dry else [512, 2048, 4096], lines)),
        ("collaborative", lambda: collaborative_checks(device, [64] if dry else [512, 1024], lines)),
        ("network", lambda: network_timing(device, 64 if dry else 4096, 3 if dry else 100, lines)),
        ("batch", lambda: batch_timing(device, 4 if dry else args.images, 2 if dry else 20,
                                       64 if dry else 512, lines)),
    ]
    chosen = {name.strip() for name in args.sections.split(",") if name.strip()}
    for title, section in sections:
        if chosen and title not in chosen:
            continue
        section_started = time.perf_counter()
        try:
            section()
        except Exception:
            failures.append(title)
            trace = traceback.format_exc()
            print(trace, flush=True)
            lines.append(f"\n**{title}: failed**\n\n```\n{trace.strip()[-3000:]}\n```\n")
        print(f"[{title}: {time.perf_counter() - section_started:.1f} s]", flush=True)
    lines.append(f"\nTotal time: {time.perf_counter() - started:.0f} s"
                 + (f"; failed sections: {', '.join(failures)}" if failures else ""))
    print("\n" + "\n".join(lines))
    if args.write:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")
        out = write(f"gpu-{slug}.md", "\n".join(lines))
        print(f"written to {out}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
