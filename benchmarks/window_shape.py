"""Tent against box search windows: NLM, and the tangent filters that the tent makes usable.

For every Set12 image (or the images of a folder given with --data), noise of
sigma 25 (seed = the image's index, as float; ``--clip`` rounds and clips it
to 8 bits), sigma estimated by nlfilt:

* NLM one-shot, patch 5, window 11: box against tent;
* 'arccos' and 'ntk' (depth 2) windowed (window 11) with the tent and
  automatic stopping, on the whole image;
* on the central 128 x 128 crop: the same tapered windowed filters against
  the global ones with automatic stopping (the global mode is N^2 work, so it
  runs on crops on the CPU).

PSNR (dB), the chosen step t and seconds, measured side by side in one run.

    python benchmarks/window_shape.py --write      # writes benchmarks/results/window_shape.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy

import nlfilt

from harness import DATA, add_noise, load_images, machine, psnr, write

SIGMA = 25.0
CROP = 128



def timed(image: numpy.ndarray, **options) -> tuple[numpy.ndarray, int, float]:
    started = time.perf_counter()
    estimate, info = nlfilt.denoise(image, device="cpu", return_info=True, **options)
    return estimate, info.iterations, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA / "set12",
                        help="folder of clean gray images")
    parser.add_argument("--clip", action="store_true", help="round and clip the noisy images to 8 bits")
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/window_shape.md")
    args = parser.parse_args()
    tangent = {"arccos": {"kernel": "arccos"}, "ntk 2": {"kernel": "ntk", "depth": 2}}
    whole = ["| image | NLM box | NLM tent | " + " | ".join(f"{name} tent auto: dB, t, s" for name in tangent)
             + " |", "| --- | --- | --- | --- | --- |"]
    crops = [f"| image ({CROP}x{CROP} crop) | "
             + " | ".join(f"{name} tent auto: dB, t, s | {name} global auto: dB, t, s" for name in tangent)
             + " |", "| --- | --- | --- | --- | --- |"]
    sums: dict[str, list[float]] = {}
    for index, (image_name, clean) in enumerate(load_images(args.data)):
        if clean.ndim == 3:
            clean = clean.mean(axis=2)
        noisy = add_noise(clean, SIGMA, index, clip=args.clip)
        cells = [image_name + f" ({clean.shape[0]}x{clean.shape[1]})"]
        for shape in ("box", "tent"):
            estimate, _, seconds = timed(noisy, window_shape=shape)
            cells.append(f"{psnr(estimate, clean):.2f} ({seconds:.2f} s)")
            sums.setdefault(f"NLM {shape}", []).append(psnr(estimate, clean))
        for name, options in tangent.items():
            estimate, steps, seconds = timed(noisy, window=11, window_shape="tent", iterations="auto",
                                             **options)
            cells.append(f"{psnr(estimate, clean):.2f}, {steps}, {seconds:.1f}")
            sums.setdefault(f"{name} tent whole", []).append(psnr(estimate, clean))
        whole.append("| " + " | ".join(cells) + " |")
        print(whole[-1], flush=True)
        top, left = (clean.shape[0] - CROP) // 2, (clean.shape[1] - CROP) // 2
        crop, noisy_crop = clean[top:top + CROP, left:left + CROP], noisy[top:top + CROP, left:left + CROP]
        cells = [image_name]
        for name, options in tangent.items():
            for mode, window in (("tent", 11), ("global", None)):
                extra = {"window_shape": "tent"} if window else {}
                estimate, steps, seconds = timed(noisy_crop, window=window, iterations="auto", **extra,
                                                 **options)
                cells.append(f"{psnr(estimate, crop):.2f}, {steps}, {seconds:.1f}")
                sums.setdefault(f"{name} {mode} crop", []).append(psnr(estimate, crop))
        crops.append("| " + " | ".join(cells) + " |")
        print(crops[-1], flush=True)
    means = ", ".join(f"{name} {numpy.mean(values):.2f}" for name, values in sums.items())
    lines = ["# Search-window shape: tent against box\n",
             machine("window_shape.py"),
             f"Noise sigma {SIGMA:g}{', rounded and clipped to 8 bits' if args.clip else ''}, estimated by "
             "nlfilt; windows of 11, tangent filters with automatic stopping (SURE).\n",
             "## Whole images\n", *whole, "\n## Crops: tapered windowed against global\n", *crops,
             f"\nMean PSNR (dB): {means}."]
    print(lines[-1])
    if args.write:
        write("window_shape.md", "\n".join(lines))


if __name__ == "__main__":
    main()
