"""Speed of the default method (the collaborative filter) against BM3D on the CPU, and its GPU launches.

Usage: python benchmarks/collaborative_speed.py [--sizes 512 1024 2048 4096] [--bm3d-sizes 512 1024]
       [--data FOLDER] [--write]

Measured side by side in one run (shared machines are noisy: each time is the
best of a few calls, and only the ratios in one table mean something):

* seconds and nanoseconds per pixel of ``nlfilt.denoise_collaborative`` on the
  CPU (compiled kernels) for gray images of each side, next to the ``bm3d``
  package's ``bm3d`` on the same noisy image (up to the sides of
  ``--bm3d-sizes``: BM3D takes minutes at 4096 x 4096), their ratio, and the
  cost model's estimate (:func:`nlfilt.cost.estimate_collaborative_seconds`)
  against the time;
* the growth of the time per pixel from the second size on, against the
  smallest of those;
* PSNR and time of both on the 512 x 512 images (gray, and colour against
  ``bm3d_rgb``), noise of standard deviation 25 and 50 in 8-bit units;
* peak working memory (tracemalloc) at 1024 x 1024 against the estimate
  (:func:`nlfilt.cost.estimate_collaborative_bytes`);
* the array operations of one image as batched on a GPU (the launches the
  CuPy path makes, counted on NumPy by :mod:`nlfilt.launches`).

The images are natural: a 512 x 512 image of the data folder (Set12's
``08.png`` by default) mirrored into larger ones.  With --write the tables go
to benchmarks/results/collaborative_speed.md.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import tracemalloc
from pathlib import Path

import imageio.v3 as iio
import numpy

import nlfilt
from nlfilt import collaborative
from nlfilt.cost import estimate_collaborative_bytes, estimate_collaborative_seconds
from nlfilt.launches import counting_backend

from harness import DATA, add_noise, machine, psnr, write

SIGMA = 25.0
QUALITY_SIGMAS = (25.0, 50.0)


def mirrored(image: numpy.ndarray, side: int) -> numpy.ndarray:
    """``image`` mirrored about its edges into a side x side image (no seams)."""
    tile = numpy.concatenate([image, image[::-1]], axis=0)
    tile = numpy.concatenate([tile, tile[:, ::-1]], axis=1)
    reps = (-(-side // tile.shape[0]), -(-side // tile.shape[1])) + (1,) * (image.ndim - 2)
    return numpy.tile(tile, reps)[:side, :side]


def noisy_of(clean: numpy.ndarray, seed: int = 0, sigma: float = SIGMA) -> numpy.ndarray:
    return add_noise(clean, sigma, seed).astype(numpy.float32)


def best_seconds(function, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return min(times), result


def ours(noisy: numpy.ndarray, sigma: float = SIGMA) -> numpy.ndarray:
    return nlfilt.denoise_collaborative(noisy, sigma=sigma, device="cpu")


def bm3d_of(bm3d, noisy: numpy.ndarray, sigma: float = SIGMA) -> numpy.ndarray:
    if noisy.ndim == 3:
        return 255 * bm3d.bm3d_rgb(noisy / 255, sigma / 255)
    return 255 * bm3d.bm3d(noisy / 255, sigma / 255)


def speed_table(gray: numpy.ndarray, sizes: list[int], bm3d_sizes: list[int], bm3d) -> list[str]:
    lines = ["\n## CPU time per image, gray (sigma 25 given to both)\n",
             "| image | nlfilt s | nlfilt ns / pixel | BM3D s | BM3D ns / pixel | nlfilt / BM3D | estimate s "
             "| estimate / time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    print("\n".join(lines), flush=True)
    per_pixel = {}
    for side in sizes:
        noisy = noisy_of(mirrored(gray, side))
        seconds, _ = best_seconds(lambda: ours(noisy), 3 if side <= 2048 else 2 if side <= 4096 else 1)  # noqa: B023
        per_pixel[side] = seconds / side**2
        estimate = estimate_collaborative_seconds(noisy.shape)
        theirs = "| not run | | "
        if bm3d is not None and side in bm3d_sizes:
            reference, _ = best_seconds(lambda: bm3d_of(bm3d, noisy), 2 if side <= 512 else 1)  # noqa: B023
            theirs = f"| {reference:.2f} | {reference / side**2 * 1e9:.0f} | {seconds / reference:.3f} "
        lines.append(f"| {side}x{side} | {seconds:.3f} | {seconds / side**2 * 1e9:.0f} {theirs}| "
                     f"{estimate:.3f} | {estimate / seconds:.2f} |")
        print(lines[-1], flush=True)
    if len(sizes) > 2:
        base = sizes[1]
        growth = ", ".join(f"{side}x{side}: {per_pixel[side] / per_pixel[base]:.2f}" for side in sizes[2:])
        lines.append(f"\nTime per pixel against {base}x{base}: {growth}.")
        print(lines[-1], flush=True)
    return lines


def quality_table(gray: numpy.ndarray, colour: numpy.ndarray | None, bm3d) -> list[str]:
    lines = ["\n## 512 x 512, the same noisy image for both\n",
             "At sigma 50 nlfilt takes its low signal-to-noise form (a coarse scale's estimate in the "
             "pilot).\n",
             "| image | sigma | nlfilt PSNR | nlfilt s | BM3D PSNR | BM3D s | time ratio | estimate s "
             "| estimate / time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (name, clean), sigma in itertools.product((("gray", gray), ("colour", colour)), QUALITY_SIGMAS):
        if clean is None:
            continue
        clean = mirrored(clean, 512).astype(numpy.float64)
        noisy = noisy_of(clean, seed=1, sigma=sigma)
        seconds, estimate = best_seconds(lambda: ours(noisy, sigma), 3)  # noqa: B023
        row = f"| {name} | {sigma:g} | {psnr(estimate, clean, clip=True):.2f} | {seconds:.3f} "
        if bm3d is not None:
            reference, theirs = best_seconds(lambda: bm3d_of(bm3d, noisy, sigma), 2)  # noqa: B023
            row += f"| {psnr(theirs, clean, clip=True):.2f} | {reference:.2f} | {seconds / reference:.3f} "
        else:
            row += "| | | "
        predicted = estimate_collaborative_seconds(noisy.shape)
        row += f"| {predicted:.3f} | {predicted / seconds:.2f} |"
        lines.append(row)
        print(row, flush=True)
    return lines


def memory_lines(gray: numpy.ndarray, colour: numpy.ndarray | None) -> list[str]:
    lines = ["\nPeak working memory at 1024x1024 (tracemalloc, besides the input):\n"]
    for name, clean in (("gray", gray), ("colour", colour)):
        if clean is None:
            continue
        noisy = noisy_of(mirrored(clean, 1024))
        ours(noisy[:64, :64])
        tracemalloc.start()
        try:
            ours(noisy)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        estimate = estimate_collaborative_bytes(noisy.shape)
        lines.append(f"- {name}: {peak / 2**20:.0f} MiB measured against {estimate / 2**20:.0f} MiB "
                     f"estimated (ratio {estimate / peak:.2f})")
        print(lines[-1], flush=True)
    return lines


def launch_table(gray: numpy.ndarray, colour: numpy.ndarray | None) -> list[str]:
    lines = ["\n## Array operations of one 512 x 512 image as batched on a GPU\n",
             "Counted on NumPy by nlfilt.launches (each is a kernel launch or a copy on CuPy; the CUDA "
             "kernels, opt-in through NLFILT_CUDA_ALTERNATIVES, make a few per stage instead).\n",
             "| image | match 1 | filter 1 | match 2 | filter 2 | whole image |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, clean in (("gray", gray), ("colour", colour)):
        if clean is None:
            continue
        image = noisy_of(mirrored(clean, 512))
        image = image[:, :, None] if image.ndim == 2 else image
        with counting_backend() as (backend, counter):
            groups = collaborative.ArrayGroups(backend, image.shape, patch=collaborative.PATCH,
                                               step=collaborative.STEP)
            marks = [counter.operations]

            def mark(done: float, total: int) -> None:
                marks.append(counter.operations)  # noqa: B023

            collaborative.collaborative_filter(groups, backend.asarray(image), SIGMA, progress=mark)
            marks[-1] = counter.operations  # the last step includes the way back to RGB
            counts = numpy.diff(marks).tolist()
        lines.append(f"| {name} | " + " | ".join(map(str, counts)) + f" | {sum(counts)} |")
        print(lines[-1], flush=True)
    return lines


def load(folder: Path, name: str) -> numpy.ndarray | None:
    path = folder / name
    return iio.imread(path).astype(numpy.float64) if path.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    parser.add_argument("--bm3d-sizes", type=int, nargs="*", default=[512, 1024, 2048, 4096],
                        help="sides at which BM3D runs too (about 27 microseconds per pixel on 2 cores)")
    parser.add_argument("--data", type=Path, default=DATA, help="folder with set12/08.png and set5/baby.png")
    parser.add_argument("--write", action="store_true",
                        help="store the tables in benchmarks/results/collaborative_speed.md")
    args = parser.parse_args()
    gray = load(args.data / "set12", "08.png")
    colour = load(args.data / "set5", "baby.png")
    if gray is None:
        sys.exit(f"no gray test image at {args.data / 'set12' / '08.png'}: pass --data")
    try:
        import bm3d
    except ImportError:
        bm3d = None
    versions = ""
    try:
        import numba

        versions += f"numba {numba.__version__}"
    except ImportError:
        versions += "no numba (array code)"
    if bm3d is not None:
        from importlib.metadata import version

        versions += f", bm3d {version('bm3d')}"
    lines = ["# The collaborative filter's speed\n",
             machine("collaborative_speed.py", versions)]
    print("\n".join(lines), flush=True)
    ours(noisy_of(gray[:64, :64]))  # the compiled kernels: loaded (or compiled) once
    if colour is not None:
        ours(noisy_of(colour[:64, :64]))
    lines += speed_table(gray, args.sizes, args.bm3d_sizes if bm3d is not None else [], bm3d)
    lines += quality_table(gray, colour, bm3d)
    lines += memory_lines(gray, colour)
    lines += launch_table(gray, colour)
    if args.write:
        write("collaborative_speed.md", "\n".join(lines))


if __name__ == "__main__":
    main()
