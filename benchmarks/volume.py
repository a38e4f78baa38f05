"""Volumes: the collaborative filter of cubes against the slices as a series, one by one, and bm4d.

Each clean volume is a synthetic phantom (``--depth`` x ``--size`` x
``--size`` voxels): 25 ellipsoids of random extent and level over a
background, with a smooth 3-D texture (seeded, so the same volume every
run).  Noise of each sigma is added, rounded and clipped to 8 bits, and the
volume is denoised

* slice by slice with the default method (``nlfilt.denoise_collaborative``
  of each slice, sigma given);
* as a series of slices (``nlfilt.denoise_collaborative`` of the stack,
  :mod:`nlfilt.series`);
* as one volume of cubes (``stack='volume'``, :mod:`nlfilt.volume`);
* by bm4d (PyPI ``bm4d``, given the true sigma).

An anisotropic row keeps every third slice of a volume three times as deep
(slices 3 voxels apart): cubes told the spacing, cubes not told, the series.
The table gives the mean PSNR and the seconds per volume, measured side by
side in one run, and the cube filter's cost-model estimate against its time.

    python benchmarks/volume.py --write     # writes benchmarks/results/volume.md
"""

from __future__ import annotations

import argparse
import time

import numpy

import nlfilt
from nlfilt.cost import estimate_collaborative_seconds

from harness import machine, psnr, write


def phantom(depth: int, size: int, seed: int) -> numpy.ndarray:
    """A clean (depth, size, size) volume in 8-bit levels (see the module docstring)."""
    rng = numpy.random.default_rng(seed)
    z, y, x = numpy.mgrid[0:depth, 0:size, 0:size].astype(float)
    volume = numpy.full((depth, size, size), 60.0)
    scale = size / 72
    for _ in range(25):
        centre = rng.uniform(0, (depth, size, size))
        axes = (rng.uniform(4, 12) * depth / 24, rng.uniform(5, 20) * scale, rng.uniform(5, 20) * scale)
        inside = sum(((axis - middle) / extent) ** 2
                     for axis, middle, extent in zip((z, y, x), centre, axes, strict=True)) <= 1
        volume[inside] = rng.uniform(20, 230)
    for _ in range(4):
        volume += 8 * numpy.sin(rng.uniform(0.05, 0.3) * z + rng.uniform(0.05, 0.4) * y
                                + rng.uniform(0.05, 0.4) * x + rng.uniform(0, 6))
    return numpy.clip(volume, 0, 255)


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def run_bm4d(noisy: numpy.ndarray, sigma: float) -> numpy.ndarray:
    import bm4d  # noqa: PLC0415 - an optional peer

    return bm4d.bm4d(noisy.transpose(1, 2, 0) / 255, sigma / 255).transpose(2, 0, 1) * 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigmas", nargs="+", type=float, default=[15.0, 25.0, 50.0])
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=2, help="volumes per sigma")
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/volume.md")
    args = parser.parse_args()
    from importlib.metadata import version  # noqa: PLC0415

    lines = ["# Volumes: the collaborative filter of cubes\n",
             machine("volume.py", f"bm4d {version('bm4d')}"),
             f"{args.seeds} synthetic volumes of {args.depth}x{args.size}x{args.size} voxels per sigma "
             "(ellipsoids and a smooth texture), noise rounded and clipped to 8 bits; every method given "
             "the true sigma.  dB: mean over the volumes; s: seconds per volume.\n",
             "| sigma | slices dB | series dB | cubes dB | bm4d dB | cubes - series | cubes - bm4d | "
             "s slices | s series | s cubes | s bm4d | cubes estimate / time |", "| --- " * 12 + "|"]
    print("\n".join(lines), flush=True)
    for sigma in args.sigmas:
        rows = []
        for seed in range(args.seeds):
            clean = phantom(args.depth, args.size, seed)
            noise = sigma * numpy.random.default_rng(1000 + seed).standard_normal(clean.shape)
            noisy = numpy.clip(numpy.round(clean + noise), 0, 255)
            slices, slice_time = timed(lambda noisy=noisy, sigma=sigma: numpy.stack(
                [nlfilt.denoise_collaborative(plane, sigma=sigma, device="cpu") for plane in noisy]))
            series, series_time = timed(nlfilt.denoise_collaborative, noisy, sigma=sigma, channel_axis=None,
                                        device="cpu")
            cubes, cube_time = timed(nlfilt.denoise_collaborative, noisy, sigma=sigma, channel_axis=None,
                                     stack="volume", device="cpu")
            peer, peer_time = timed(run_bm4d, noisy, sigma)
            estimate = estimate_collaborative_seconds((*noisy.shape, 1), volume=True) / cube_time
            rows.append([psnr(slices, clean, clip=True), psnr(series, clean, clip=True),
                         psnr(cubes, clean, clip=True), psnr(peer, clean, clip=True), slice_time,
                         series_time, cube_time, peer_time, estimate])
        mean = numpy.mean(rows, axis=0)
        lines.append(f"| {sigma:g} | {mean[0]:.2f} | {mean[1]:.2f} | {mean[2]:.2f} | {mean[3]:.2f} | "
                     f"{mean[2] - mean[1]:+.2f} | {mean[2] - mean[3]:+.2f} | {mean[4]:.1f} | {mean[5]:.1f} | "
                     f"{mean[6]:.1f} | {mean[7]:.1f} | {mean[8]:.2f} |")
        print(lines[-1], flush=True)
    # anisotropic: every third slice of a volume three times as deep
    lines += ["\nAnisotropic: every third slice of a volume three times as deep (slices 3 voxels apart), "
              "sigma 25.\n", "| cubes told the spacing (3, 1, 1) dB | cubes, isotropic dB | series dB |",
              "| --- | --- | --- |"]
    clean = phantom(3 * args.depth, args.size, 7)[::3]
    noise = 25 * numpy.random.default_rng(7).standard_normal(clean.shape)
    noisy = numpy.clip(numpy.round(clean + noise), 0, 255)
    told = nlfilt.denoise_collaborative(noisy, sigma=25.0, channel_axis=None, stack="volume",
                                        spacing=(3.0, 1.0, 1.0), device="cpu")
    isotropic = nlfilt.denoise_collaborative(noisy, sigma=25.0, channel_axis=None, stack="volume",
                                             device="cpu")
    series = nlfilt.denoise_collaborative(noisy, sigma=25.0, channel_axis=None, device="cpu")
    lines.append(f"| {psnr(told, clean, clip=True):.2f} | {psnr(isotropic, clean, clip=True):.2f} | "
                 f"{psnr(series, clean, clip=True):.2f} |")
    print(lines[-1], flush=True)
    text = "\n".join(lines)
    if args.write:
        write("volume.md", text)


if __name__ == "__main__":
    main()
