"""CPU speed of nlfilt's operators, against this machine's own bounds and scikit-image.

Usage: python benchmarks/bench_cpu.py [--sizes 64 128 256] [--write]

Measured side by side in one run (shared machines are noisy, so only the
ratios in one table mean something):

* the float32 GEMM rate (2048^3 product) and the vectorised exp rate (NumPy,
  2^22 float32 values), which give the global-mode bound for N pixels and
  patch vectors of d values: N^2 * 2d flops at the GEMM rate plus N^2 exp
  evaluations at the exp rate;
* seconds per application of the global operator ``K V`` (gray, patch 7, one
  channel plus the row-sum column) for each kernel, and its ratio to the bound
  (below 1 is possible: ``K`` is symmetric, so nlfilt evaluates each pair once);
* seconds per application of the windowed NLM operator (patch 7, window 21);
* a one-shot ``nlfilt.denoise`` (patch 7, window 21) and scikit-image's
  ``denoise_nl_means(fast_mode=True, patch_size=7, patch_distance=10)`` on the
  same 512 x 512 gray image, when scikit-image is installed.

With --write the table goes to benchmarks/results/cpu.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy

import nlfilt
from nlfilt.api import prepare
from nlfilt.backend import get_backend
from nlfilt.filters import build_filter

ROOT = Path(__file__).resolve().parents[1]
SET12 = ROOT.parent / "shared" / "data" / "set12"
SIGMA = 25.0
PATCH = 7


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


def test_image(size: int) -> numpy.ndarray:
    """A noisy gray image of ``size`` x ``size``: Set12 when present, else a synthetic scene."""
    if (SET12 / "12.png").exists():
        import imageio.v3 as iio

        base = iio.imread(SET12 / "12.png").astype(numpy.float64)  # 512 x 512
    else:
        grid = numpy.linspace(0, 8 * numpy.pi, 512)
        base = 128 + 60 * numpy.sin(grid)[:, None] * numpy.cos(grid / 3)[None, :]
    reps = -(-size // base.shape[0])
    tiled = numpy.tile(base, (reps, reps))[:size, :size]
    noisy = tiled + numpy.random.default_rng(size).normal(0, SIGMA, tiled.shape)
    return noisy.astype(numpy.float32)


def operator_seconds(image: numpy.ndarray, kernel: str, window: int | None, repeats: int) -> float:
    """Seconds for one application of the affinity operator to (N, 2) vectors."""
    extra = {"sigma": SIGMA, "h": 0.8 * SIGMA} if kernel == "nlm" else {}
    backend = get_backend("cpu")
    _, array, options = prepare(image, kernel=kernel, patch=PATCH, window=window, depth=1, device="cpu",
                                 dtype=numpy.float32, memory_budget=nlfilt.DEFAULT_MEMORY_BUDGET,
                                 h=extra.get("h"), sigma=extra.get("sigma"))
    affinity = build_filter(backend, array, options, reuse=False).affinity
    vectors = numpy.ones((array.shape[0] * array.shape[1], 2), dtype=numpy.float32)
    return best_time(lambda: affinity.matmul(vectors), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256],
                        help="sides of the global-mode images")
    parser.add_argument("--window-sizes", type=int, nargs="+", default=[256, 512, 1024],
                        help="sides of the windowed-mode images")
    parser.add_argument("--write", action="store_true", help="store the table in benchmarks/results/cpu.md")
    args = parser.parse_args()

    lines = ["# CPU benchmark\n",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
             f"NumPy {numpy.__version__}, nlfilt {nlfilt.__version__}; "
             "produced by `python benchmarks/bench_cpu.py --write`.\n"]
    gemm, exps = gemm_rate(), exp_rate()
    lines.append(f"Measured in this run: float32 GEMM {gemm / 1e9:.1f} GFLOP/s, "
                 f"NumPy float32 exp {exps / 1e6:.0f} M/s.\n")
    lines.append("## Global mode, one operator application (gray, patch 7)\n")
    lines.append("| kernel | image | pixel pairs | seconds | ns / pair | bound (s) | ratio to bound |")
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(lines), flush=True)
    dims = PATCH * PATCH
    for kernel in nlfilt.KERNELS:
        for size in args.sizes:
            pairs = float(size**2) ** 2
            seconds = operator_seconds(test_image(size), kernel, None, 3 if size <= 128 else 1)
            bound = pairs * 2 * dims / gemm + pairs / exps
            lines.append(f"| {kernel} | {size}x{size} | {pairs:.2e} | {seconds:.3f} | "
                         f"{seconds / pairs * 1e9:.2f} | {bound:.3f} | {seconds / bound:.2f} |")
            print(lines[-1], flush=True)

    header = ["\n## Windowed NLM, one operator application (gray, patch 7, window 21)\n",
              "| image | seconds | ns / pixel |", "| --- | --- | --- |"]
    lines.extend(header)
    print("\n".join(header), flush=True)
    for size in args.window_sizes:
        seconds = operator_seconds(test_image(size), "nlm", 21, 3 if size <= 512 else 1)
        lines.append(f"| {size}x{size} | {seconds:.3f} | {seconds / size**2 * 1e9:.0f} |")
        print(lines[-1], flush=True)

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
        out = ROOT / "benchmarks" / "results" / "cpu.md"
        out.write_text("\n".join(lines) + "\n")
        print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
