"""Twicing trajectories from Krylov bases against plain twicing: products with K and seconds.

For each filter, computes z_t for every t <= T by ``nlfilt.twicing_trajectory``
and by T plain steps, on the same image, and prints the products with K,
the seconds and the largest relative difference over t side by side.

    python benchmarks/trajectory.py --write        # writes benchmarks/results/trajectory.md
"""

from __future__ import annotations

import argparse
import time

import imageio.v3 as iio
import numpy

import nlfilt
from nlfilt.filters import build_filter
from nlfilt.resolve import prepare

from harness import DATA, add_noise, machine, write

CASES = {
    "arccos, patch 3": {"kernel": "arccos"},
    "ntk depth 2, patch 3": {"kernel": "ntk", "depth": 2},
    "NLM Sinkhorn, patch 5": {"kernel": "nlm", "normalize": "sinkhorn"},
    "NLM rows, patch 5": {"kernel": "nlm"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="side of the centre crop of Set12 01.png")
    parser.add_argument("--steps", default="100,1000", help="largest t")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    source = DATA / "set12" / "01.png"
    if source.exists():
        clean = iio.imread(source).astype(numpy.float64)
        top = (clean.shape[0] - args.size) // 2
        clean = clean[top : top + args.size, top : top + args.size]
    else:
        clean = numpy.add.outer(numpy.arange(args.size), numpy.arange(args.size)) * 2.0
    noisy = add_noise(clean, 25.0, 0)
    lines = ["# Twicing trajectories: Krylov against plain iteration", "", machine("trajectory.py"),
             f"CPU, global mode, {args.size}x{args.size} crop of Set12 01.png with noise sigma 25, float32, "
             f"{time.strftime('%Y-%m-%d')}.", "",
             "| filter | T | Krylov: products with K | Krylov s | plain: products | plain s | "
             "max over t of relative difference |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, options in CASES.items():
        for steps in (int(value) for value in args.steps.split(",")):
            started = time.perf_counter()
            path = nlfilt.twicing_trajectory(noisy, steps, window=None, device="cpu", **options)
            estimates = [path.estimate(t) for t in range(1, steps + 1)]
            krylov_seconds = time.perf_counter() - started
            started = time.perf_counter()
            # plain twicing with the same W (for arccos/ntk: the same lambda_max), step by step
            backend, image, resolved = prepare(noisy, kernel=options["kernel"], patch=None, window=None,
                                               h=None, sigma=None, depth=options.get("depth", 1),
                                               device="cpu", dtype=numpy.float32,
                                               memory_budget=nlfilt.DEFAULT_MEMORY_BUDGET,
                                               normalize=options.get("normalize"))
            filter_ = build_filter(backend, image, resolved, reuse=True)
            filter_.eigenvalue = path._krylov.filter.eigenvalue  # the same W as the trajectory
            flat = image.reshape(-1, 1)
            plain = numpy.zeros_like(flat)
            worst = 0.0
            for t in range(1, steps + 1):
                plain += filter_.apply(flat - plain)
                difference = numpy.linalg.norm(estimates[t - 1].reshape(-1, 1) - plain)
                worst = max(worst, difference / numpy.linalg.norm(plain))
            plain_seconds = time.perf_counter() - started
            lines.append(f"| {name} | {steps} | {path.applications} | {krylov_seconds:.2f} | "
                         f"{filter_.applications} | {plain_seconds:.2f} | {worst:.1e} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write("trajectory.md", text)


if __name__ == "__main__":
    main()
