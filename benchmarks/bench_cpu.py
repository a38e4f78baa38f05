"""CPU speed of nlfilt's operators, the constants of its cost estimate, and scikit-image side by side.

Usage: python benchmarks/bench_cpu.py [--sizes 64 128 256] [--window-sizes 256 512 1024] [--write]

Measured side by side in one run (shared machines are noisy, so every time is
the best of a few repeats, and only the ratios in one table mean something):

* the float32 GEMM rate (2048^3 product) and the vectorised exp rate (NumPy,
  2^22 float32 values), which give the global-mode bound for N pixels and
  patch vectors of d values: N^2 * 2d flops at the GEMM rate plus N^2 exp
  evaluations at the exp rate;
* seconds per application of the global operator ``K V`` (gray, patch 3 and
  7, two right-hand-side columns) for each kernel, per pixel pair evaluated
  (the tiles pair their query rows with the pixels from the tile on, about
  N^2 / 2 pairs), and its ratio to the bound;
* seconds per application of the windowed NLM operator (patch 7, window 21);
* the per-unit costs behind :func:`nlfilt.cost.estimate_cpu_seconds`,
  next to the constants in ``nlfilt/cost.py`` and the kernel classes of
  ``nlfilt/kernels.py`` (which are rounded from
  such runs): per evaluated pair, patch dimension and NTK layer in the global
  mode; per pixel and window offset for the weights, the kept weights, the
  channels and each right-hand-side column in the windowed mode; and the
  call overheads per offset and product;
* the estimate against the measured time of ``nlfilt.denoise`` in every
  mode;
* a one-shot ``nlfilt.denoise`` (patch 7, window 21) and scikit-image's
  ``denoise_nl_means(fast_mode=True, patch_size=7, patch_distance=10)`` on the
  same 512 x 512 gray image, when scikit-image is installed.

With --write the tables go to benchmarks/results/cpu.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy

import nlfilt
from nlfilt import backend as backend_module
from nlfilt import cost, filters, jit
from nlfilt.backend import get_backend
from nlfilt.cost import estimate_cpu_seconds, expected_applications
from nlfilt.filters import build_filter
from nlfilt.kernels import ArcCosKernel, NLMKernel, NTKKernel, kernel_class
from nlfilt.resolve import prepare

from harness import DATA, machine, psnr, write

SET12 = DATA / "set12"
SIGMA = 25.0
PATCH = 7

#: The modes of the estimate table: (name, image side, channels (0: gray), denoise options).
MODES = [
    ("window nlm t1", 256, 0, {}),
    ("window nlm t5", 256, 0, {"iterations": 5}),
    ("window nlm auto", 256, 0, {"iterations": "auto"}),
    ("window nlm auto", 128, 3, {"iterations": "auto"}),
    ("window nlm sinkhorn t1", 192, 0, {"normalize": "sinkhorn"}),
    ("window nlm sinkhorn auto", 192, 0, {"normalize": "sinkhorn", "iterations": "auto"}),
    ("window nlm pilot auto", 256, 0, {"guide": "pilot", "iterations": "auto"}),
    ("window arccos t1", 256, 0, {"kernel": "arccos", "window": 11}),
    ("window arccos t1", 128, 3, {"kernel": "arccos", "window": 11}),
    ("global nlm t1", 96, 0, {"window": None}),
    ("global nlm t1", 64, 3, {"window": None}),
    ("global nlm auto", 64, 0, {"window": None, "iterations": "auto"}),
    ("global arccos t1", 128, 0, {"kernel": "arccos"}),
    ("global arccos t1", 64, 3, {"kernel": "arccos"}),
    ("global arccos auto", 64, 0, {"kernel": "arccos", "iterations": "auto"}),
    ("global arccos pilot auto", 48, 0, {"kernel": "arccos", "iterations": "auto", "guide": "pilot"}),
    ("global ntk t1", 64, 0, {"kernel": "ntk"}),
    ("global ntk auto", 48, 0, {"kernel": "ntk", "iterations": "auto"}),
    ("global ntk depth 2 t1", 64, 0, {"kernel": "ntk", "depth": 2}),
    ("global ntk depth 2 auto", 48, 0, {"kernel": "ntk", "depth": 2, "iterations": "auto"}),
    ("window nlm t1", 1024, 3, {}),
]


def best_time(function, repeats: int) -> float:
    """Best wall time of ``repeats`` calls (after one warm-up call when repeats > 1)."""
    if repeats > 1:
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def gemm_rate() -> float:
    rng = numpy.random.default_rng(0)
    left = rng.random((2048, 2048), dtype=numpy.float32)
    right = rng.random((2048, 2048), dtype=numpy.float32)
    return 2 * 2048**3 / best_time(lambda: left @ right, 3)


def exp_rate() -> float:
    values = -10 * numpy.random.default_rng(0).random(1 << 22, dtype=numpy.float32)
    out = numpy.empty_like(values)
    return values.size / best_time(lambda: numpy.exp(values, out=out), 5)


def test_image(size: int, channels: int = 0) -> numpy.ndarray:
    """A noisy image of ``size`` x ``size`` (gray, or ``channels`` channels), float32: :func:`scene`'s."""
    return scene(size, channels)[1]


def scene(size: int, channels: int = 0) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(clean, noisy) images of ``size`` x ``size`` (gray, or ``channels`` channels), float32, noise of
    standard deviation SIGMA: Set12 tiled when present, else a synthetic scene."""
    if (SET12 / "12.png").exists():
        import imageio.v3 as iio

        names = ["12.png"] if not channels else [f"{index:02d}.png" for index in range(1, channels + 1)]
        base = numpy.stack([iio.imread(SET12 / name).astype(numpy.float64)[:256, :256] for name in names], 2)
    else:
        grid = numpy.linspace(0, 8 * numpy.pi, 512)
        plane = 128 + 60 * numpy.sin(grid)[:, None] * numpy.cos(grid / 3)[None, :]
        base = numpy.stack([plane * (0.8 + 0.1 * c) for c in range(max(channels, 1))], 2)
    reps = -(-size // base.shape[0])
    tiled = numpy.tile(base, (reps, reps, 1))[:size, :size]
    noisy = tiled + numpy.random.default_rng(size).normal(0, SIGMA, tiled.shape)
    if not channels:
        tiled, noisy = tiled[:, :, 0], noisy[:, :, 0]
    return tiled.astype(numpy.float32), noisy.astype(numpy.float32)


def build(image: numpy.ndarray, kernel: str, window: int | None, *, patch: int = PATCH, depth: int = 1,
          reuse: bool = False) -> filters.Filter:
    """The filter ``nlfilt.denoise`` builds for these options (NLM with sigma 25, h 20)."""
    extra = {"sigma": SIGMA, "h": 0.8 * SIGMA} if kernel == "nlm" else {}
    _, array, options = prepare(image, kernel=kernel, patch=patch, window=window, depth=depth, device="cpu",
                                 dtype=numpy.float32, memory_budget=nlfilt.DEFAULT_MEMORY_BUDGET,
                                 h=extra.get("h"), sigma=extra.get("sigma"))
    return build_filter(get_backend("cpu"), array, options, reuse=reuse)


def array_code(affinity):
    """The array-code operator of ``affinity`` (the twin of a compiled or CUDA operator, else itself)."""
    return getattr(affinity, "twin", affinity)


def operator_seconds(image: numpy.ndarray, kernel: str, window: int | None, repeats: int, *,
                     patch: int = PATCH, depth: int = 1, columns: int = 2, compiled: bool = True) -> float:
    """Seconds for one application of the affinity operator to (N, ``columns``) vectors (weights not kept):
    the operator nlfilt computes with, or with ``compiled=False`` its array-code twin."""
    affinity = build(image, kernel, window, patch=patch, depth=depth).affinity
    if not compiled:
        affinity = array_code(affinity)
    vectors = numpy.ones((affinity.size, columns), dtype=numpy.float32)
    return best_time(lambda: affinity.matmul(vectors), repeats)


def windowed_seconds(image: numpy.ndarray, kernel: str, *, window: int = 11, depth: int = 1,
                     repeats: int = 3) -> dict[str, float]:
    """Nanoseconds per pixel and offset of windowed products of the array code (patch 5): the first product
    of an operator that does not keep its weights ('nlm' only) and of one that does, both with one column,
    and a later product of the latter with one and with C columns."""
    channels = image.shape[2] if image.ndim == 3 else 1
    pixels = image.shape[0] * image.shape[1]

    def first(reuse: bool) -> float:
        times = []
        for _ in range(repeats):
            affinity = array_code(build(image, kernel, window, patch=5, depth=depth, reuse=reuse).affinity)
            vectors = numpy.ones((pixels, 1), dtype=numpy.float32)
            started = time.perf_counter()
            affinity.matmul(vectors)
            times.append(time.perf_counter() - started)
        return min(times) / (pixels * len(affinity.offsets)) * 1e9

    kept = array_code(build(image, kernel, window, patch=5, depth=depth, reuse=True).affinity)
    per_unit = 1e9 / (pixels * len(kept.offsets))
    one, many = (numpy.ones((pixels, count), dtype=numpy.float32) for count in (1, channels))
    kept.matmul(one)
    return {"fresh": first(False) if kernel == "nlm" else float("nan"), "kept": first(True),
            "later": best_time(lambda: kept.matmul(one), repeats) * per_unit,
            "later_columns": best_time(lambda: kept.matmul(many), repeats) * per_unit}


def cost_constants(global_sizes: list[int]) -> list[str]:
    """Measure the per-unit costs of the estimate; return the table lines."""
    rows = []  # (constant, value in nlfilt.filters, measured)
    pairs = {}
    for kernel, depth in (("nlm", 1), ("arccos", 1), ("ntk", 1), ("ntk", 2)):
        for patch in (3, 7):
            values = []
            for size in global_sizes:
                seconds = operator_seconds(test_image(size), kernel, None, 3 if size <= 128 else 1,
                                           patch=patch, depth=depth)
                values.append(seconds / cost._global_pairs(size * size) * 1e9)
            pairs[kernel, depth, patch] = min(values)
    per_dim = sum((pairs[kernel, 1, 7] - pairs[kernel, 1, 3]) / 40 for kernel in ("nlm", "arccos", "ntk")) / 3
    rows.append(("GLOBAL_NS_PER_PAIR_AND_DIM", cost.GLOBAL_NS_PER_PAIR_AND_DIM, per_dim))
    for kernel in ("nlm", "arccos", "ntk"):
        rows.append((f"{kernel_class(kernel).__name__}.global_ns_per_pair",
                     kernel_class(kernel).global_ns_per_pair, pairs[kernel, 1, 3] - 9 * per_dim))
    rows.append(("NTKKernel.global_ns_per_layer", kernel_class("ntk").global_ns_per_layer,
                 pairs["ntk", 2, 3] - pairs["ntk", 1, 3]))

    gray, colour = test_image(512), test_image(512, 3)
    nlm, nlm_colour = windowed_seconds(gray, "nlm"), windowed_seconds(colour, "nlm")
    column = (nlm_colour["later_columns"] - nlm_colour["later"]) / 2
    fresh = nlm["fresh"] - nlm["later"]
    rows.append(("WINDOWED_NS_PER_COLUMN", cost.WINDOWED_NS_PER_COLUMN, column))
    rows.append(("NLMKernel.windowed_ns_per_weight", kernel_class("nlm").windowed_ns_per_weight, fresh))
    kept_cost = nlm["kept"] - nlm["fresh"]
    rows.append(("WINDOWED_NS_PER_KEPT_WEIGHT", cost.WINDOWED_NS_PER_KEPT_WEIGHT, kept_cost))
    rows.append(("WINDOWED_NS_PER_CHANNEL", cost.WINDOWED_NS_PER_CHANNEL,
                 (nlm_colour["fresh"] - nlm_colour["later"] - fresh) / 3))
    layers = {}
    for kernel, depth in (("arccos", 1), ("ntk", 1), ("ntk", 2)):
        measured = windowed_seconds(gray, kernel, depth=depth)
        layers[kernel, depth] = measured["kept"] - measured["later"] - kept_cost
    rows.append(("ArcCosKernel.windowed_ns_per_weight", kernel_class("arccos").windowed_ns_per_weight,
                 layers["arccos", 1]))
    rows.append(("NTKKernel.windowed_ns_per_weight", kernel_class("ntk").windowed_ns_per_weight,
                 layers["ntk", 1]))
    rows.append(("NTKKernel.windowed_ns_per_layer", kernel_class("ntk").windowed_ns_per_layer,
                 layers["ntk", 2] - layers["ntk", 1]))

    tiny = test_image(32)  # overheads: the arrays are too small to matter
    small = windowed_seconds(tiny, "nlm", window=21, repeats=5)
    offset_us = small["later"] * 32 * 32 * 1e-3
    rows.append(("WINDOWED_SECONDS_PER_OFFSET (us)", cost.WINDOWED_SECONDS_PER_OFFSET * 1e6, offset_us))
    rows.append(("WINDOWED_SECONDS_PER_WEIGHING (us)", cost.WINDOWED_SECONDS_PER_WEIGHING * 1e6,
                 (small["fresh"] - small["later"]) * 32 * 32 * 1e-3))
    rows.extend(compiled_constants())
    product = sum(operator_seconds(test_image(16), kernel, None, 5) for kernel in ("nlm", "arccos")) / 2
    rows.append(("SECONDS_PER_PRODUCT (ms)", cost.SECONDS_PER_PRODUCT * 1e3, product * 1e3))

    lines = ["\n## Constants of the cost estimate (nlfilt/cost.py, nlfilt/kernels.py) and this run's "
             "measurement\n",
             "Global: ns per evaluated pair (patch 3 and 7, gray, best over the sizes); windowed: ns per "
             "pixel and offset (512x512, patch 5, window 11); overheads on 16x16 and 32x32 images.\n",
             "| constant | nlfilt.filters | measured |", "| --- | --- | --- |"]
    lines += [f"| {name} | {value:g} | {measured:.3g} |" for name, value, measured in rows]
    return lines


def compiled_constants() -> list[tuple[str, float, float]]:
    """The compiled operator's constants (512x512, window 11, gray and RGB, patch 3 and 7, 1 and 4 columns):
    rows of (constant, value in nlfilt.cost, measured)."""
    rng = numpy.random.default_rng(1)
    weight, column = {}, []
    for channels, patch in ((0, 3), (0, 7), (3, 7)):
        affinity = build(test_image(512, channels), "nlm", 11, patch=patch).affinity
        per_unit = 1e9 / (affinity.size * (11 * 11 + 1) // 2)  # one of each pair of opposite offsets
        one, four = (numpy.asfortranarray(rng.random((affinity.size, count), dtype=numpy.float32))
                     for count in (1, 4))
        seconds = {count: best_time(lambda v=vectors: affinity.matmul(v), 3) * per_unit  # noqa: B023
                   for count, vectors in ((1, one), (4, four))}
        column.append((seconds[4] - seconds[1]) / 3)
        weight[channels, patch] = seconds[1] - column[-1]
    per_side = (weight[0, 7] - weight[0, 3]) / 4
    per_column = sum(column) / len(column)
    own = {}  # the tangent kernels' weights (patch 3, gray, one column)
    for kernel, depth in (("arccos", 1), ("ntk", 1), ("ntk", 2)):
        affinity = build(test_image(512, 0), kernel, 11, patch=3, depth=depth).affinity
        per_unit = 1e9 / (affinity.size * (11 * 11 + 1) // 2)
        vector = rng.random((affinity.size, 1), dtype=numpy.float32)
        seconds = best_time(lambda a=affinity, v=vector: a.matmul(v), 3) * per_unit
        own[kernel, depth] = seconds - per_column - 3 * per_side
    nlm = weight[0, 3] - 3 * per_side
    return [("NLMKernel.compiled_ns_per_weight", NLMKernel.compiled_ns_per_weight, nlm),
            ("ArcCosKernel.compiled_ns_per_weight", ArcCosKernel.compiled_ns_per_weight, own["arccos", 1]),
            ("NTKKernel.compiled_ns_per_weight", NTKKernel.compiled_ns_per_weight, own["ntk", 1]),
            ("NTKKernel.compiled_ns_per_layer", NTKKernel.compiled_ns_per_layer,
             own["ntk", 2] - own["ntk", 1]),
            ("COMPILED_NS_PER_PATCH_SIDE", cost.COMPILED_NS_PER_PATCH_SIDE, per_side),
            ("COMPILED_NS_PER_CHANNEL", cost.COMPILED_NS_PER_CHANNEL, (weight[3, 7] - weight[0, 7]) / 2),
            ("COMPILED_NS_PER_COLUMN", cost.COMPILED_NS_PER_COLUMN, per_column)]


def estimate_table() -> list[str]:
    """The estimate against the best of three measured ``nlfilt.denoise`` calls, for every mode."""
    lines = ["\n## Estimated against measured time of nlfilt.denoise\n",
             "The estimate the command line makes before a file (sigma estimated, typical products with K); "
             "best of three runs.\n",
             "| mode | image | products with K (expected / made) | estimated s | measured s | ratio |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, size, channels, call in MODES:
        image = test_image(size, channels)
        iterations, guided = call.get("iterations", 1), call.get("guide") is not None
        options = {key: call.get(key, default) for key, default in
                   (("kernel", "nlm"), ("window", "auto"), ("depth", 1), ("normalize", None))}
        _, _, resolved = prepare(image, patch=None, h=None, sigma=None, device="cpu", dtype=numpy.float32,
                                 memory_budget=nlfilt.DEFAULT_MEMORY_BUDGET, iterations=iterations, **options)
        expected = expected_applications(resolved, iterations, guided)
        estimated = estimate_cpu_seconds(image.shape, resolved, expected, iterations=iterations,
                                         guided=guided)
        measured = best_time(lambda: nlfilt.denoise(image, device="cpu", **call), 3)  # noqa: B023
        _, info = nlfilt.denoise(image, device="cpu", return_info=True, **call)
        shape = f"{size}x{size}" + (" RGB" if channels else "")
        lines.append(f"| {name} | {shape} | {expected} / {info.applications} | {estimated:.3f} | "
                     f"{measured:.3f} | {estimated / measured:.2f} |")
        print(lines[-1], flush=True)
    return lines


@contextlib.contextmanager
def host_threads(count: int):
    """nlfilt's CPU backend with ``count`` worker threads inside the block."""
    original = backend_module._cpu_backend
    fixed = dataclasses.replace(original(), workers=count)
    backend_module._cpu_backend = lambda: fixed
    try:
        yield
    finally:
        backend_module._cpu_backend = original


@contextlib.contextmanager
def array_code_only():
    """Inside the block nlfilt computes with its array code (as without numba)."""
    original = jit.load_numba
    jit.load_numba = lambda: None
    try:
        yield
    finally:
        jit.load_numba = original


#: Seconds to wait before each timing: OpenCV's worker threads keep spinning for a moment after a call,
#: which would slow whatever is timed next on a 2-core machine.
SETTLE = 0.5


def eight_bit(image: numpy.ndarray) -> numpy.ndarray:
    """``image`` rounded and clipped to 8 bits, as a camera stores it."""
    return numpy.clip(numpy.rint(image), 0, 255).astype(numpy.uint8)



def opencv_denoise(cv2, noisy: numpy.ndarray, h: float, patch: int, window: int) -> numpy.ndarray:
    """OpenCV's fast NLM on an 8-bit image (its coloured variant for RGB: CIELAB, h for L and ab)."""
    if noisy.ndim == 3:
        return cv2.fastNlMeansDenoisingColored(noisy, None, h, h, patch, window)
    return cv2.fastNlMeansDenoising(noisy, None, h, patch, window)


def side_by_side(ours, theirs, repeats: int) -> tuple[float, float]:
    """Best times of ``ours()`` and of ``theirs()`` over ``repeats`` calls each, each series after a
    warm-up call of its own.  Series, not alternating calls: the first large allocations after the other
    library has freed gigabytes make the kernel compact memory for huge pages (measured here: 1.9 s of
    system time in a 4.9 s nlfilt call on 4096x4096 RGB right after OpenCV's, 0.1 s in the next call)."""
    times = []
    for function in (ours, theirs):
        time.sleep(SETTLE)
        times.append(best_time(function, max(2, repeats)))  # best_time warms up first
    return times[0], times[1]


def opencv_h(cv2, channels: int, patch: int, window: int) -> float:
    """OpenCV's h with the best PSNR on the 512x512 image, from 0.4 to 1.4 sigma in steps of 0.1 sigma."""
    clean, noisy = scene(512, channels)
    noisy = eight_bit(noisy)
    factors = [0.4 + 0.1 * step for step in range(11)]
    scores = [psnr(opencv_denoise(cv2, noisy, factor * SIGMA, patch, window), clean) for factor in factors]
    return factors[int(numpy.argmax(scores))] * SIGMA


def opencv_table(cv2, sizes: list[int], channels: int, patch: int, window: int) -> list[str]:
    """nlfilt.denoise and OpenCV side by side on the same 8-bit noisy images, one table."""
    h = opencv_h(cv2, channels, patch, window)
    kind = "RGB" if channels else "gray"
    lines = [f"\n### {kind}, patch {patch}, window {window}\n",
             f"OpenCV h = {h:.1f} (its best PSNR at 512x512 over 0.4-1.4 sigma); nlfilt h = 0.8 sigma "
             f"(its default), sigma = {SIGMA:g} given to both.\n",
             "| image | nlfilt s | OpenCV s | ratio | nlfilt ns / pixel | nlfilt PSNR | OpenCV PSNR |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    print("\n".join(lines), flush=True)
    per_pixel = {}
    for size in sizes:
        clean, noisy = scene(size, channels)
        noisy = eight_bit(noisy)
        as_float = noisy.astype(numpy.float32)
        ours, theirs = side_by_side(
            lambda: nlfilt.denoise(as_float, patch=patch, window=window, sigma=SIGMA, device="cpu"),  # noqa: B023
            lambda: opencv_denoise(cv2, noisy, h, patch, window),  # noqa: B023
            3 if size <= 1024 else 2)
        estimate = nlfilt.denoise(as_float, patch=patch, window=window, sigma=SIGMA, device="cpu")
        ours_psnr = psnr(estimate, clean)
        theirs_psnr = psnr(opencv_denoise(cv2, noisy, h, patch, window), clean)
        per_pixel[size] = ours / size**2 * 1e9
        lines.append(f"| {size}x{size} | {ours:.3f} | {theirs:.3f} | {ours / theirs:.2f} | "
                     f"{per_pixel[size]:.0f} | {ours_psnr:.2f} | {theirs_psnr:.2f} |")
        print(lines[-1], flush=True)
    if len(per_pixel) > 1:
        small, large = 512 if 512 in per_pixel else min(per_pixel), max(per_pixel)
        lines.append(f"\nTime per pixel at {large}x{large} / at {small}x{small}: "
                     f"{per_pixel[large] / per_pixel[small]:.2f}.")
        print(lines[-1], flush=True)
    return lines


def thread_table(cv2, size: int) -> list[str]:
    """Speed-up from one to two threads, nlfilt and OpenCV (gray, patch 7, window 21)."""
    _, noisy = scene(size)
    noisy = eight_bit(noisy)
    as_float = noisy.astype(numpy.float32)
    lines = [f"\n## Threads (gray {size}x{size}, patch 7, window 21)\n",
             "| threads | nlfilt s | OpenCV s |", "| --- | --- | --- |"]
    times = {}
    for count in (1, 2):
        time.sleep(SETTLE)
        with host_threads(count):
            ours = best_time(lambda: nlfilt.denoise(as_float, patch=7, window=21, sigma=SIGMA,
                                                    device="cpu"), 2)
        theirs = float("nan")
        if cv2 is not None:
            previous = cv2.getNumThreads()
            cv2.setNumThreads(count)
            time.sleep(SETTLE)
            theirs = best_time(lambda: cv2.fastNlMeansDenoising(noisy, None, 0.8 * SIGMA, 7, 21), 2)
            cv2.setNumThreads(previous)
        times[count] = (ours, theirs)
        lines.append(f"| {count} | {ours:.3f} | {theirs:.3f} |")
    lines.append(f"\nSpeed-up from 1 to 2 threads: nlfilt {times[1][0] / times[2][0]:.2f}x, "
                 f"OpenCV {times[1][1] / times[2][1]:.2f}x.")
    print("\n".join(lines), flush=True)
    return lines


def peak_memory_child(which: str, size: int, channels: int) -> None:
    """(In a child process.)  Print the peak resident memory of one call above what the process held
    before it (the noisy image included), as JSON."""
    _, noisy = scene(size, channels)
    if which == "opencv":
        import cv2

        image = eight_bit(noisy)
        run = lambda: opencv_denoise(cv2, image, 0.8 * SIGMA, 7, 21)  # noqa: E731
        opencv_denoise(cv2, image[:64, :64], 0.8 * SIGMA, 7, 21)
    else:
        image = noisy
        if which == "array code":
            jit.load_numba = lambda: None  # for the rest of this child process
        run = lambda: nlfilt.denoise(image, patch=7, window=21, sigma=SIGMA, device="cpu")  # noqa: E731
        nlfilt.denoise(image[:64, :64], patch=7, window=21, sigma=SIGMA, device="cpu")
    del noisy
    status = Path("/proc/self/status")
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current resident set

    def kib(field: str) -> int:
        line = next(line for line in status.read_text().splitlines() if line.startswith(field))
        return int(line.split()[1])

    before = kib("VmRSS:")
    run()
    print(json.dumps({"peak_mib": (kib("VmHWM:") - before) / 1024, "image_mib": size * size * max(channels, 1)
                      * 4 / 2**20}))


def memory_table(size: int) -> list[str]:
    """Peak memory of one windowed NLM call at ``size`` (each in a fresh process)."""
    lines = [f"\n## Peak memory (gray {size}x{size}, patch 7, window 21, one call, fresh process)\n",
             "Resident memory at the call's peak above what the process held before it; the float32 image "
             f"is {size * size * 4 / 2**20:.0f} MiB.\n",
             "| implementation | peak MiB | x float32 image |", "| --- | --- | --- |"]
    for which in ("nlfilt", "array code", "opencv"):
        done = subprocess.run([sys.executable, __file__, "--peak-memory", which, str(size)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            lines.append(f"| {which} | failed: {done.stderr.strip().splitlines()[-1]} | |")
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        name = {"nlfilt": "nlfilt (compiled)", "array code": "nlfilt array code (without numba)",
                "opencv": "OpenCV (8-bit)"}[which]
        ratio = result["peak_mib"] / result["image_mib"]
        lines.append(f"| {name} | {result['peak_mib']:.0f} | {ratio:.2f} |")
        print(lines[-1], flush=True)
    return lines


#: The paths of the paths table: (name, denoise options).
PATHS = [("one step", {}), ("twicing, 3 steps", {"iterations": 3}), ("Sinkhorn", {"normalize": "sinkhorn"}),
         ("automatic stopping", {"iterations": "auto"}), ("pilot, automatic stopping",
                                                          {"guide": "pilot", "iterations": "auto"})]


def paths_table(size: int) -> list[str]:
    """nlfilt.denoise with the compiled operator against the array code, in every windowed path."""
    image = test_image(size)
    lines = [f"\n## Windowed paths, compiled against array code (gray {size}x{size}, default patch and "
             "window, sigma given)\n",
             "| path | products with K | compiled s | array code s | speed-up |",
             "| --- | --- | --- | --- | --- |"]
    for name, call in PATHS:
        options = {"sigma": SIGMA, "device": "cpu", **call}
        compiled = best_time(lambda: nlfilt.denoise(image, **options), 2)  # noqa: B023
        _, info = nlfilt.denoise(image, return_info=True, **options)
        with array_code_only():
            array = best_time(lambda: nlfilt.denoise(image, **options), 2)  # noqa: B023
        lines.append(f"| {name} | {info.applications} | {compiled:.3f} | {array:.3f} | "
                     f"{array / compiled:.1f}x |")
        print(lines[-1], flush=True)
    return lines


def against_opencv(sizes: list[int]) -> list[str]:
    """The comparison with OpenCV: gray and RGB at patch 7, window 21, and the default patch and window;
    threads; peak memory at the largest size."""
    lines = ["\n## Windowed NLM against OpenCV (one call each, same 8-bit noisy images)\n",
             f"nlfilt.denoise (float32, device='cpu', the compiled operator, numba {numba_version()}) and "
             "OpenCV's fastNlMeansDenoising / fastNlMeansDenoisingColored with the same patch and window, "
             "each with its own threads; the clean images tiled from Set12 (a synthetic scene without it), "
             f"noise sigma {SIGMA:g} rounded and clipped to 8 bits.\n"]
    try:
        import cv2
    except ImportError:
        print("OpenCV is not installed: no comparison")
        return lines + ["OpenCV is not installed, so no comparison."]
    lines[-1] = lines[-1].replace("OpenCV's", f"OpenCV {cv2.__version__}'s ({cv2.getNumThreads()} threads)")
    print("\n".join(lines), flush=True)
    default = kernel_class("nlm")
    for channels in (0, 3):
        lines.extend(opencv_table(cv2, sizes, channels, 7, 21))
    for channels in (0, 3):
        lines.extend(opencv_table(cv2, [size for size in sizes if size <= 2048], channels, default.patch,
                                  default.window))
    lines.extend(thread_table(cv2, 2048))
    lines.extend(memory_table(max(sizes)))
    return lines


def numba_version() -> str:
    numba = jit.load_numba()
    return numba.__version__ if numba is not None else "not installed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256],
                        help="sides of the global-mode images (those up to 128 also give the constants)")
    parser.add_argument("--window-sizes", type=int, nargs="+", default=[256, 512, 1024],
                        help="sides of the windowed-mode images")
    parser.add_argument("--opencv-sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096],
                        help="sides of the images of the comparison with OpenCV")
    parser.add_argument("--write", action="store_true", help="store the table in benchmarks/results/cpu.md")
    parser.add_argument("--peak-memory", nargs=2, metavar=("WHICH", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_memory:
        peak_memory_child(args.peak_memory[0], int(args.peak_memory[1]), 0)
        return

    lines = ["# CPU benchmark\n",
             machine("bench_cpu.py")]
    gemm, exps = gemm_rate(), exp_rate()
    lines.append(f"Measured in this run: float32 GEMM {gemm / 1e9:.1f} GFLOP/s, "
                 f"NumPy float32 exp {exps / 1e6:.0f} M/s.\n")
    lines.append("## Global mode, one operator application (gray, patch 7)\n")
    lines.append("The bound counts all N^2 pixel pairs; the operator evaluates each pair once (K is "
                 "symmetric), about N^2 / 2 of them.\n")
    lines.append("| kernel | image | pixel pairs | pairs evaluated | seconds | ns / evaluated pair "
                 "| bound (s) | ratio to bound |")
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(lines), flush=True)
    dims = PATCH * PATCH
    for kernel in nlfilt.KERNELS:
        for size in args.sizes:
            pairs = float(size**2) ** 2
            evaluated = cost._global_pairs(size * size)
            seconds = operator_seconds(test_image(size), kernel, None, 3 if size <= 128 else 1)
            bound = pairs * 2 * dims / gemm + pairs / exps
            lines.append(f"| {kernel} | {size}x{size} | {pairs:.2e} | {evaluated:.2e} | {seconds:.3f} | "
                         f"{seconds / evaluated * 1e9:.2f} | {bound:.3f} | {seconds / bound:.2f} |")
            print(lines[-1], flush=True)

    header = ["\n## Windowed NLM, one operator application (gray, patch 7, window 21, two columns)\n",
              "| image | compiled s | compiled ns / pixel | array code s | array code ns / pixel |",
              "| --- | --- | --- | --- | --- |"]
    lines.extend(header)
    print("\n".join(header), flush=True)
    for size in args.window_sizes:
        image = test_image(size)
        compiled = operator_seconds(image, "nlm", 21, 3 if size <= 512 else 1)
        array = operator_seconds(image, "nlm", 21, 3 if size <= 512 else 1, compiled=False)
        lines.append(f"| {size}x{size} | {compiled:.3f} | {compiled / size**2 * 1e9:.0f} | {array:.3f} | "
                     f"{array / size**2 * 1e9:.0f} |")
        print(lines[-1], flush=True)

    lines.extend(against_opencv(args.opencv_sizes))
    lines.extend(paths_table(512))

    constants = cost_constants([size for size in args.sizes if size <= 128] or [64])
    print("\n".join(constants), flush=True)
    lines.extend(constants)
    lines.extend(estimate_table())

    first_of_last_section = len(lines)
    lines.append("\n## One-shot windowed NLM on 512x512 gray, against scikit-image\n")
    image = test_image(512)
    ours = best_time(lambda: nlfilt.denoise(image, patch=7, window=21, sigma=SIGMA, h=0.8 * SIGMA,
                                            device="cpu"), 3)
    try:
        from skimage.restoration import denoise_nl_means
    except ImportError:
        lines.append(f"nlfilt.denoise: {ours:.3f} s; scikit-image is not installed, so no comparison.")
    else:
        import skimage

        theirs = best_time(lambda: denoise_nl_means(image, patch_size=7, patch_distance=10, h=0.8 * SIGMA,
                                                    sigma=SIGMA, fast_mode=True), 3)
        lines.append("| method | seconds | ratio to scikit-image |")
        lines.append("| --- | --- | --- |")
        lines.append(f"| nlfilt.denoise(patch=7, window=21) | {ours:.3f} | {ours / theirs:.2f} |")
        lines.append(f"| scikit-image {skimage.__version__} denoise_nl_means(fast_mode=True, 7, 10) | "
                     f"{theirs:.3f} | 1.00 |")
    print("\n".join(lines[first_of_last_section:]), flush=True)
    if args.write:
        write("cpu.md", "\n".join(lines))


if __name__ == "__main__":
    main()
