"""Measure the PSNR behind nlfilt's default patch, window and h on Set12.

Usage: python benchmarks/tune_defaults.py [--data ../shared/data/set12] [--write]

Every image gets additive white Gaussian noise of sigma 25 (8-bit units, seed =
image index), as in ../shared/data/README.md.

* nlm: the one-shot filter on the full images, sigma estimated from each image
  (what a user gets by default), over patch x window x h/sigma.
* arccos and ntk: twicing on the central 48 x 48 crop of each image (global
  mode costs N^2 per step), PSNR after 1, 3, 10, 30 and 100 steps, over patch x
  window (global and windowed).

Prints the tables and, with --write, stores them in benchmarks/results/defaults.md.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy

from nlfilt.backend import get_backend
from nlfilt.filters import build_filter
from nlfilt.noise import estimate_sigma
from nlfilt.resolve import prepare

from harness import DATA, add_noise, load_images, machine, psnr, write

SIGMA = 25.0
CHECKPOINTS = (1, 3, 10, 30, 100)



def load_set12(folder: Path) -> list[tuple[numpy.ndarray, numpy.ndarray]]:
    return [(clean, add_noise(clean, SIGMA, seed)) for seed, (_, clean) in enumerate(load_images(folder))]


def tune_nlm(pairs, lines: list[str]) -> None:
    patches, windows, ratios = (3, 5, 7), (11, 15, 21), (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    sigmas = [estimate_sigma(numpy, noisy[:, :, None]) for _, noisy in pairs]
    noisy_psnr = numpy.mean([psnr(noisy, clean) for clean, noisy in pairs])
    lines.append(f"Noisy input: {noisy_psnr:.2f} dB.  Estimated sigma (true 25): "
                 f"mean {numpy.mean(sigmas):.2f}, range {min(sigmas):.2f} to {max(sigmas):.2f}\n")
    lines.append("| patch | window | " + " | ".join(f"h = {r} sigma" for r in ratios) + " |")
    lines.append("|" + " --- |" * (2 + len(ratios)))
    from nlfilt import denoise

    best = (0.0, None)
    for patch, window in itertools.product(patches, windows):
        row = []
        for ratio in ratios:
            scores = [psnr(denoise(noisy, patch=patch, window=window, sigma=sigma, h=ratio * sigma,
                                   device="cpu"), clean)
                      for (clean, noisy), sigma in zip(pairs, sigmas, strict=True)]
            row.append(float(numpy.mean(scores)))
            best = max(best, (row[-1], (patch, window, ratio)), key=lambda item: item[0])
        lines.append(f"| {patch} | {window} | " + " | ".join(f"{value:.2f}" for value in row) + " |")
        print(lines[-1], flush=True)
    lines.append(f"\nBest: {best[0]:.2f} dB at patch, window, h/sigma = {best[1]}\n")


def central_crop(image: numpy.ndarray, crop: int) -> numpy.ndarray:
    top = (image.shape[0] - crop) // 2
    left = (image.shape[1] - crop) // 2
    return image[top : top + crop, left : left + crop]


def tune_tangent(pairs, kernel: str, lines: list[str], crop: int = 48) -> None:
    backend = get_backend("cpu")
    lines.append(f"### {kernel} (central {crop}x{crop} crops; mean PSNR after t twicing steps)\n")
    from nlfilt import denoise

    nlm = numpy.mean([psnr(denoise(central_crop(noisy, crop), device="cpu"), central_crop(clean, crop))
                      for clean, noisy in pairs])
    lines.append(f"For comparison, nlm with its defaults on the same crops: {nlm:.2f} dB.\n")
    lines.append("| patch | window | noisy | " + " | ".join(f"t = {t}" for t in CHECKPOINTS) + " |")
    lines.append("|" + " --- |" * (3 + len(CHECKPOINTS)))
    for patch, window in itertools.product((3, 5, 7), (None, 11)):
        scores = numpy.zeros(len(CHECKPOINTS))
        noisy_scores = []
        for clean, noisy in pairs:
            clean_crop = central_crop(clean, crop)
            noisy_crop = central_crop(noisy, crop)
            noisy_scores.append(psnr(noisy_crop, clean_crop))
            _, array, options = prepare(noisy_crop, kernel=kernel, patch=patch, window=window, h=None,
                                         sigma=None, depth=1, device="cpu", dtype=numpy.float32,
                                         memory_budget=256 * 2**20)
            filter_ = build_filter(backend, array, options, reuse=True)
            flat = array.reshape(-1, 1)
            estimate = filter_.apply(flat)
            for step in range(1, CHECKPOINTS[-1] + 1):
                if step > 1:
                    estimate += filter_.apply(flat - estimate)
                if step in CHECKPOINTS:
                    scores[CHECKPOINTS.index(step)] += psnr(estimate.reshape(crop, crop), clean_crop)
        scores /= len(pairs)
        label = "global" if window is None else window
        lines.append(f"| {patch} | {label} | {numpy.mean(noisy_scores):.2f} | "
                     + " | ".join(f"{value:.2f}" for value in scores) + " |")
        print(lines[-1], flush=True)
    lines.append("")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA / "set12")
    parser.add_argument("--write", action="store_true", help="store the tables in benchmarks/results/")
    parser.add_argument("--skip-nlm", action="store_true")
    args = parser.parse_args()
    pairs = load_set12(args.data)
    started = time.perf_counter()
    lines = ["# Default parameters, measured on Set12 (AWGN sigma = 25, seeds 0..11)\n",
             machine("tune_defaults.py")]
    if not args.skip_nlm:
        lines.append("## nlm: mean PSNR (dB) of the one-shot filter, sigma estimated per image\n")
        tune_nlm(pairs, lines)
    lines.append("## arccos and ntk: twicing, mean PSNR (dB)\n")
    for kernel in ("arccos", "ntk"):
        tune_tangent(pairs, kernel, lines)
    lines.append(f"Total time: {time.perf_counter() - started:.0f} s")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write("defaults.md", text)


if __name__ == "__main__":
    main()
