"""The command line's time estimate against the time it takes, for every mode, at several image sizes.

``nlfilt denoise`` refuses an image whose estimated time exceeds --max-minutes
(and stops one that runs over twice that).  This script makes each estimate as
the command line does (its options resolved into a plan, the method's
``seconds``) and times the method's own ``denoise`` on the same image, once
(noise sigma 25 on a Set12 photo, or a synthetic scene without the data;
sigma estimated, as on the command line).  The target: every ratio estimate /
time within [0.5, 2].  A mode is left out at a size where its estimate is over
--budget seconds (say so in the table), so that the run ends in minutes.

    python benchmarks/cost_check.py                    # 128 and 256
    python benchmarks/cost_check.py --sizes 128 256 512 --budget 600 --write
"""

from __future__ import annotations

import argparse
import time

import numpy

from nlfilt.cli.options import RunOptions
from nlfilt.methods import method

from harness import DATA, add_noise, load_images, machine, write

#: (name, options of nlfilt denoise as its parameters, colour, frames of a series (--stack series) or 0)
#: of every mode checked.
MODES = [
    ("collaborative", {"method": "collaborative"}, False, 0),
    ("collaborative RGB", {"method": "collaborative"}, True, 0),
    ("collaborative series 8 frames", {"method": "collaborative"}, False, 8),
    ("collaborative series 8 frames RGB", {"method": "collaborative"}, True, 8),
    ("window nlm t1", {"method": "filter"}, False, 0),
    ("window nlm t1 RGB", {"method": "filter"}, True, 0),
    ("window nlm auto", {"method": "filter", "iterations": "auto"}, False, 0),
    ("window nlm sinkhorn auto", {"method": "filter", "normalize": "sinkhorn", "iterations": "auto"}, False,
     0),
    ("window nlm pilot auto", {"method": "filter", "guide": "pilot", "iterations": "auto"}, False, 0),
    ("window arccos t1", {"method": "filter", "kernel": "arccos", "window": 11}, False, 0),
    ("window arccos auto", {"method": "filter", "kernel": "arccos", "window": 11, "iterations": "auto"},
     False, 0),
    ("window ntk t1", {"method": "filter", "kernel": "ntk", "window": 11}, False, 0),
    ("global nlm t1", {"method": "filter", "window": None}, False, 0),
    ("global nlm auto", {"method": "filter", "window": None, "iterations": "auto"}, False, 0),
    ("global arccos t1", {"method": "filter", "kernel": "arccos"}, False, 0),
    ("global arccos t1 RGB", {"method": "filter", "kernel": "arccos"}, True, 0),
    ("global arccos auto", {"method": "filter", "kernel": "arccos", "iterations": "auto"}, False, 0),
    ("global ntk t1", {"method": "filter", "kernel": "ntk"}, False, 0),
    ("global ntk auto", {"method": "filter", "kernel": "ntk", "iterations": "auto"}, False, 0),
    ("global ntk depth 2 t1", {"method": "filter", "kernel": "ntk", "depth": 2}, False, 0),
]


def test_image(side: int, colour: bool) -> numpy.ndarray:
    """A noisy side x side float32 image (H, W, C), 8-bit units: a Set12 / Set5 photo cropped or
    mirrored to size, or a synthetic scene."""
    images = load_images(DATA / ("set5" if colour else "set12"))
    if images:
        clean = images[0][1].astype(numpy.float64)
    else:
        rows, cols = numpy.mgrid[:256, :256]
        clean = 128 + 60 * numpy.sin(cols / 7.0) * (rows > 80) + 50 * ((rows - cols) % 32 < 16)
        if colour:
            clean = numpy.stack([clean, clean[::-1], clean.T], axis=2)
    while min(clean.shape[:2]) < side:
        clean = numpy.concatenate([clean, clean[::-1]], axis=0)
        clean = numpy.concatenate([clean, clean[:, ::-1]], axis=1)
    clean = clean[:side, :side]
    noisy = add_noise(clean, 25.0, side, clip=True).astype(numpy.float32)
    return noisy if noisy.ndim == 3 else noisy[:, :, None]


def check(sizes: list[int], budget: float) -> list[str]:
    lines = ["| mode | image | estimated s | measured s | estimate / time | within [0.5, 2] |",
             "| --- | --- | --- | --- | --- | --- |"]
    print("\n".join(lines), flush=True)
    outside = []
    for side in sizes:
        for name, params, colour, frames in MODES:
            image = test_image(side, colour)
            if frames:  # a camera panning over the scene
                image = numpy.stack([numpy.roll(image, (2 * t, 3 * t), axis=(0, 1)) for t in range(frames)])
            run = RunOptions.from_params(dict(params, sigma=None, device="cpu"),
                                         stack="series" if frames else None)
            plan = run.plan(image.shape, numpy.uint8, "cpu")
            chosen = method(run.method)
            estimated = chosen.seconds(image.shape, plan)
            extent = (f"{frames}x" if frames else "") + f"{side}x{side}" + (" RGB" if colour else "")
            if estimated > budget:
                lines.append(f"| {name} | {extent} | {estimated:.1f} | not run (over --budget {budget:g} s) "
                             f"| | |")
            else:
                warm = test_image(32, colour)  # compiled kernels loaded, caches filled, before timing
                warm = numpy.stack([warm] * frames) if frames else warm
                chosen.denoise(warm, run.plan(warm.shape, numpy.uint8, "cpu"), None)
                started = time.perf_counter()
                chosen.denoise(image, plan, None)
                measured = time.perf_counter() - started
                ratio = estimated / measured
                within = 0.5 <= ratio <= 2
                if not within:
                    outside.append(f"{name} {extent}")
                lines.append(f"| {name} | {extent} | {estimated:.2f} | {measured:.2f} | {ratio:.2f} | "
                             f"{'yes' if within else 'NO'} |")
            print(lines[-1], flush=True)
    verdict = "every mode run within [0.5, 2]" if not outside else f"outside [0.5, 2]: {', '.join(outside)}"
    lines.append(f"\nTarget: {verdict}.")
    print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--budget", type=float, default=120.0,
                        help="leave out a mode whose estimate at a size is over this many seconds")
    parser.add_argument("--write", action="store_true", help="store the table in benchmarks/results/cost.md")
    args = parser.parse_args()
    lines = ["# The command line's time estimate against the time taken\n", machine("cost_check.py"),
             "", "Each estimate made as `nlfilt denoise` makes it (sigma estimated), against one run of the "
             "method on the same image (8-bit noise, sigma 25).\n"]
    print("\n".join(lines), flush=True)
    lines += check(args.sizes, args.budget)
    if args.write:
        write("cost.md", "\n".join(lines))


if __name__ == "__main__":
    main()
