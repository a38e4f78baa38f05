"""GPU conformance and speed check, one prepared command for a lent GPU machine.

Usage (on the GPU machine, from the repository root; the GPU tests first):

    NLFILT_REQUIRE_GPU=1 python3 -m pytest -m gpu -q && python3 benchmarks/gpu_check.py --write

Prints one table and, with --write, stores it in benchmarks/results/gpu-<device>.md:

* the device;
* conformance: max relative error of the GPU (float32 and float64) against the
  NumPy float64 path, for every kernel, global and windowed, gray and colour;
* one operator application (``K V``) in the global mode at 256², 512², 1024²
  (NLM and arccos, patch 5 and 7) and its ratio to the exp-throughput bound
  (N² kernel evaluations at 3.9e12 per second on an H100);
* the unverified kernels (``NLFILT_UNVERIFIED_KERNELS``): the fused global operator
  ``nlfilt_global_fused``:
  its conformance against the NumPy float64 path, and one application at 512²
  and 1024² (patch 7, NLM and arccos) next to the GEMM-tile path, with the ratio
  to the exp bound;
* windowed NLM (patch 7, window 21) at 512², 2048², 4096²;
* 100 gray 512² images through the command line path (``nlfilt denoise`` on a folder);
* each with the speedup over the NumPy path on the same machine.  NumPy is timed
  at the smallest size of each group and scaled by the pairs (global) or
  pixels (windowed, batch) to the larger ones; the table says which.

``--dry-run`` runs the same script on the CPU at tiny sizes, to check the script.
It runs from a checkout without installing nlfilt.  Every timer stops after a
device synchronisation; the CUDA kernels are compiled once at the start, timed
and reported on their own, and every timing is the best of repeated calls after
a warm-up call.

Planned work, estimated for one H100: conformance (48 small runs) under 20 s;
the global timings at 1024² (4 kernel/patch pairs, 2 calls each, about 1e12 pairs
per call near the exp bound) about 20 s, their NumPy references at 256² (3 calls
of 3-10 s each per pair, on the 16 host cores fewer) about 1 minute; the fused
checks about 20 s; windowed up to 4096² a few seconds; the batch of 100 images
about 20 s: about 3 minutes in all, 6 minutes at the most.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, installed or not

import nlfilt  # noqa: E402
from nlfilt import cuda  # noqa: E402
from nlfilt.api import prepare  # noqa: E402
from nlfilt.backend import get_backend  # noqa: E402
from nlfilt.filters import build_filter  # noqa: E402

EXP_RATE_H100 = 3.9e12  # kernel evaluations per second: the global-mode bound


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
    return min(times)


def noisy_image(size: int, channels: int = 0, seed: int = 0) -> numpy.ndarray:
    grid = numpy.linspace(0, 6 * numpy.pi, size)
    clean = 120 + 60 * numpy.sin(grid)[:, None] * numpy.cos(grid / 2)[None, :]
    if channels:
        clean = numpy.stack([clean * (0.8 + 0.1 * c) for c in range(channels)], axis=2)
    return (clean + numpy.random.default_rng(seed).normal(0, 20, clean.shape)).astype(numpy.float32)


def operator_seconds(image: numpy.ndarray, device: str, kernel: str, patch: int, window: int | None,
                     budget: int) -> float:
    extra = {"sigma": 20.0, "h": 16.0} if kernel == "nlm" else {}
    backend = get_backend(device)
    _, array, options = prepare(image, kernel=kernel, patch=patch, window=window, depth=1, device=device,
                                dtype=numpy.float32, memory_budget=budget, h=extra.get("h"),
                                sigma=extra.get("sigma"))
    affinity = build_filter(backend, array, options, reuse=False).affinity
    vectors = backend.xp.ones((array.shape[0] * array.shape[1], 2), dtype=numpy.float32)
    # one timed call (after the warm-up) from 1024x1024 on, two below
    return best_time(lambda: affinity.matmul(vectors), device, repeats=1 if array.size >= 2**20 else 2)


def conformance(device: str, lines: list[str], title: str = "Conformance against the NumPy float64 path",
                windows: tuple[int | None, ...] = (None, 7)) -> None:
    lines += [f"\n## {title} (max relative error)\n",
              "| kernel | mode | image | float32 | float64 |", "| --- | --- | --- | --- | --- |"]
    for kernel in nlfilt.KERNELS:
        extra = {"h": 30.0, "sigma": 15.0} if kernel == "nlm" else {"depth": 2} if kernel == "ntk" else {}
        for window in windows:
            for channels in (0, 3):
                image = noisy_image(40, channels, seed=channels)
                options = dict(extra, kernel=kernel, patch=5, window=window, iterations=3)
                expected = nlfilt.denoise(image, device="cpu", dtype=numpy.float64, **options)
                errors = []
                for dtype in (numpy.float32, numpy.float64):
                    actual = nlfilt.denoise(image, device=device, dtype=dtype, **options)
                    actual = actual.get() if hasattr(actual, "get") else actual
                    errors.append(numpy.abs(actual - expected).max() / numpy.abs(expected).max())
                mode = "global" if window is None else f"window {window}"
                layout = "gray" if not channels else "RGB"
                lines.append(f"| {kernel} | {mode} | 40x40 {layout} | {errors[0]:.1e} | {errors[1]:.1e} |")
                print(lines[-1], flush=True)


def global_timings(device: str, sizes: list[int], lines: list[str]) -> None:
    lines += ["\n## Global mode, one operator application (gray)\n",
              "| kernel | patch | image | GPU s | NumPy s | speedup | ratio to exp bound |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for kernel in ("nlm", "arccos"):
        for patch in (5, 7):
            cpu_per_pair = None
            for size in sizes:
                pairs = float(size**2) ** 2
                seconds = operator_seconds(noisy_image(size), device, kernel, patch, None, 8 * 2**30)
                if cpu_per_pair is None:
                    cpu_seconds = operator_seconds(noisy_image(size), "cpu", kernel, patch, None, 2**30)
                    cpu_per_pair, cpu_note = cpu_seconds / pairs, ""
                else:
                    cpu_seconds, cpu_note = cpu_per_pair * pairs, f" (scaled from {sizes[0]}²)"
                bound = pairs / EXP_RATE_H100
                lines.append(f"| {kernel} | {patch} | {size}x{size} | {seconds:.4f} | "
                             f"{cpu_seconds:.2f}{cpu_note} | {cpu_seconds / seconds:.0f}x | "
                             f"{seconds / bound:.1f} |")
                print(lines[-1], flush=True)


@contextlib.contextmanager
def unverified(name: str | None):
    """Use the unverified kernel ``name`` (None: none of them) for the duration of the block."""
    previous = os.environ.get(cuda.UNVERIFIED_VARIABLE)
    os.environ[cuda.UNVERIFIED_VARIABLE] = name or ""
    try:
        yield
    finally:
        if previous is None:
            del os.environ[cuda.UNVERIFIED_VARIABLE]
        else:
            os.environ[cuda.UNVERIFIED_VARIABLE] = previous


def fused_checks(device: str, sizes: list[int], lines: list[str]) -> None:
    with unverified("nlfilt_global_fused"):
        conformance(device, lines, "Fused global operator (nlfilt_global_fused) against NumPy float64",
                    windows=(None,))
    lines += ["\n## Fused global operator against the GEMM tiles, one application (gray, patch 7, float32)\n",
              "| kernel | image | GEMM tiles s | fused s | fused / tiles | fused: ratio to exp bound |",
              "| --- | --- | --- | --- | --- | --- |"]
    for kernel in ("nlm", "arccos"):
        for size in sizes:
            image = noisy_image(size)
            with unverified(None):
                tiles = operator_seconds(image, device, kernel, 7, None, 8 * 2**30)
            with unverified("nlfilt_global_fused"):
                fused = operator_seconds(image, device, kernel, 7, None, 8 * 2**30)
            bound = float(size**2) ** 2 / EXP_RATE_H100
            lines.append(f"| {kernel} | {size}x{size} | {tiles:.4f} | {fused:.4f} | {fused / tiles:.2f} | "
                         f"{fused / bound:.1f} |")
            print(lines[-1], flush=True)


def windowed_timings(device: str, sizes: list[int], lines: list[str]) -> None:
    lines += ["\n## Windowed NLM, one operator application (gray, patch 7, window 21)\n",
              "nlfilt_windowed_nlm (default) and the unverified nlfilt_windowed_box (O(1) per pixel and "
              "offset); box: its max relative difference from the default on the same image.\n",
              "| image | GPU s | box s | box difference | NumPy s | speedup (default) |",
              "| --- | --- | --- | --- | --- | --- |"]
    cpu_per_pixel = None
    for size in sizes:
        image = noisy_image(size)
        with unverified(None):
            seconds = operator_seconds(image, device, "nlm", 7, 21, 2**30)
            default = nlfilt.denoise(image, device=device, patch=7, window=21, h=16.0, sigma=20.0)
        with unverified("nlfilt_windowed_box"):
            box_seconds = operator_seconds(image, device, "nlm", 7, 21, 2**30)
            box = nlfilt.denoise(image, device=device, patch=7, window=21, h=16.0, sigma=20.0)
        difference = float(abs(box - default).max() / abs(default).max())
        if cpu_per_pixel is None:
            cpu_seconds = operator_seconds(image, "cpu", "nlm", 7, 21, 2**30)
            cpu_per_pixel, cpu_note = cpu_seconds / size**2, ""
        else:
            cpu_seconds, cpu_note = cpu_per_pixel * size**2, f" (scaled from {sizes[0]}²)"
        lines.append(f"| {size}x{size} | {seconds:.4f} | {box_seconds:.4f} | {difference:.1e} | "
                     f"{cpu_seconds:.2f}{cpu_note} | {cpu_seconds / seconds:.0f}x |")
        print(lines[-1], flush=True)


def batch_timing(device: str, count: int, size: int, lines: list[str]) -> None:
    from click.testing import CliRunner

    from nlfilt.cli import main

    folder = Path(tempfile.mkdtemp(prefix="nlfilt-batch-"))
    try:
        for index in range(count):
            iio.imwrite(folder / f"{index:03d}.png", numpy.clip(noisy_image(size, seed=index), 0, 255)
                        .astype(numpy.uint8))
        runs = {}
        for name, files, target in ((device, count, "out-gpu"), ("cpu", min(count, 5), "out-cpu")):
            inputs = sorted(folder.glob("*.png"))[:files]
            start = time.perf_counter()
            result = CliRunner().invoke(main, ["denoise", *map(str, inputs), "-o", str(folder / target),
                                               "--device", name, "--quiet"])
            runs[name] = (time.perf_counter() - start) / files
            if result.exit_code != 0:
                raise RuntimeError(f"CLI batch on {name} failed: {result.output}")
        lines += ["\n## Command-line batch (nlfilt denoise on a folder, defaults)\n",
                  "| images | GPU s | NumPy s | speedup |", "| --- | --- | --- | --- |",
                  f"| {count} x {size}x{size} gray PNG | {runs[device] * count:.2f} | "
                  f"{runs['cpu'] * count:.1f} (scaled from {min(count, 5)} images) | "
                  f"{runs['cpu'] / runs[device]:.0f}x |"]
        print("\n".join(lines[-4:]), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def device_name(device: str) -> str:
    if device != "gpu":
        return f"cpu-{platform.machine()}"
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    return name.decode() if isinstance(name, bytes) else name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="About 3 minutes on one H100 by the estimate in this "
                                            "script's docstring (6 minutes at the most).")
    parser.add_argument("--write", action="store_true", help="store the table in benchmarks/results/")
    parser.add_argument("--dry-run", action="store_true", help="run on the CPU at tiny sizes")
    args = parser.parse_args()
    device = "cpu" if args.dry_run else "gpu"
    get_backend(device)  # a clear error now if no GPU is usable
    started = time.perf_counter()
    name = device_name(device)
    lines = [f"# GPU check: {name}\n",
             f"nlfilt {nlfilt.__version__}, NumPy {numpy.__version__}; produced by "
             "`python3 benchmarks/gpu_check.py --write`"
             + (" (dry run on the CPU)" if args.dry_run else "") + ".\n"]
    if not args.dry_run:
        import cupy

        lines.append(f"CuPy {cupy.__version__}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}.\n")
    print("\n".join(lines), flush=True)
    if device == "gpu":
        compile_started = time.perf_counter()
        for dtype in (numpy.float32, numpy.float64):
            cuda.kernel("nlfilt_patches", dtype)  # compiles the whole module for this dtype
        lines.append(f"Compilation of the CUDA kernels (NVRTC, float32 and float64, once; excluded from "
                     f"the timings below): {time.perf_counter() - compile_started:.1f} s.\n")
        print(lines[-1], flush=True)
    conformance(device, lines)
    global_timings(device, [32, 48] if args.dry_run else [256, 512, 1024], lines)
    fused_checks(device, [32, 48] if args.dry_run else [512, 1024], lines)
    windowed_timings(device, [64, 96] if args.dry_run else [512, 2048, 4096], lines)
    batch_timing(device, 3 if args.dry_run else 100, 64 if args.dry_run else 512, lines)
    lines.append(f"\nTotal time: {time.perf_counter() - started:.0f} s")
    print("\n" + "\n".join(lines))
    if args.write:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")
        out = ROOT / "benchmarks" / "results" / f"gpu-{slug}.md"
        out.write_text("\n".join(lines) + "\n")
        print(f"written to {out}")


if __name__ == "__main__":
    main()
