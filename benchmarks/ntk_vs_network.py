"""Gradient descent on wide CNNs follows nlfilt's ntk filter; Adam adapts it.

On 32 x 32 crops of Set12 with noise sigma 25, trains nlfilt.network's ReLU
CNN (input and target the noisy crop, squared loss, zero initial output) by
full-batch gradient descent with learning rate 1 / lambda_max (nlfilt's step)
and by Adam, and compares its output after t steps with nlfilt's closed-form
twicing ``z_t`` (ntk kernel, global, patch 3):

* the relative difference |f_t - z_t| / |z_t| at t = 10, 50, 200 for widths
  64 ... 4096 and depth 1 and 2, and how it shrinks with the width (the theory:
  about 1 / sqrt(C), a factor 0.5 per 4x width);
* PSNR against the clean crop over the steps for GD, Adam and the filter;
* how far the hidden weights moved (|W - W_0| / |W_0|) under GD and Adam.

    python benchmarks/ntk_vs_network.py --write   # benchmarks/results/ntk_vs_network.md and .png
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy

import nlfilt
from nlfilt.network import ADAM_LEARNING_RATE, ntk_twicing, train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CROPS = ("01.png", "05.png", "08.png")


def psnr(estimate: numpy.ndarray, clean: numpy.ndarray) -> float:
    return float(10 * numpy.log10(255**2 / numpy.mean((estimate - clean) ** 2)))


def relative(a: numpy.ndarray, b: numpy.ndarray) -> float:
    return float(numpy.linalg.norm(a - b) / numpy.linalg.norm(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "set12")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--widths", default="64,256,1024,4096")
    parser.add_argument("--depth2-widths", default="64,256,1024",
                        help="widths for depth 2 (4096 takes about 20 minutes per crop on 2 CPU cores)")
    parser.add_argument("--curve-width", type=int, default=1024, help="width of the GD and Adam PSNR curves")
    parser.add_argument("--adam-lr", type=float, default=ADAM_LEARNING_RATE)
    parser.add_argument("--float32", action="store_true", help="train in float32 (about 2x faster)")
    parser.add_argument("--output", default="ntk_vs_network", help="name of the result files")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if not args.data.is_dir():
        parser.error(f"--data {args.data} is not a folder")
    widths = {1: [int(w) for w in args.widths.split(",") if w],
              2: [int(w) for w in args.depth2_widths.split(",") if w]}
    dtype = numpy.float32 if args.float32 else numpy.float64
    checkpoints = [t for t in (10, 50, 200) if t <= args.steps]
    started = time.perf_counter()
    crops = []
    for index, name in enumerate(CROPS):
        clean = iio.imread(args.data / name).astype(numpy.float64)
        top = (clean.shape[0] - 32) // 2
        clean = clean[top : top + 32, top : top + 32]
        noisy = clean + 25 * numpy.random.default_rng(index).standard_normal(clean.shape)
        crops.append((name, clean, noisy))

    differences: dict[tuple[int, int], list[list[float]]] = {}
    curves: dict[tuple[str, int], list[list[float]]] = {}
    movement: dict[tuple[str, int], list[float]] = {}
    for depth in (1, 2):
        if not widths[depth]:
            continue
        for name, clean, noisy in crops:
            closed, eigenvalue = ntk_twicing(noisy, depth=depth, steps=args.steps)
            curves.setdefault(("closed form", depth), []).append([psnr(z, clean) for z in closed[1:]])
            for width in widths[depth]:
                run = train(noisy, width=width, depth=depth, steps=args.steps, eigenvalue=eigenvalue, seed=1,
                            dtype=dtype)
                differences.setdefault((depth, width), []).append(
                    [relative(run.outputs[t], closed[t]) for t in checkpoints])
                if width == args.curve_width:
                    curves.setdefault(("GD", depth), []).append([psnr(f, clean) for f in run.outputs[1:]])
                    movement.setdefault(("GD", depth), []).append(run.movement[-1])
                print(f"depth {depth} {name} width {width}: difference at t={checkpoints[-1]} "
                      f"{differences[(depth, width)][-1][-1]:.4f} ({time.perf_counter() - started:.0f} s)",
                      flush=True)
            if args.curve_width in widths[depth]:
                adam = train(noisy, width=args.curve_width, depth=depth, steps=args.steps, optimizer="adam",
                             learning_rate=args.adam_lr, seed=1, dtype=dtype)
                curves.setdefault(("Adam", depth), []).append([psnr(f, clean) for f in adam.outputs[1:]])
                movement.setdefault(("Adam", depth), []).append(adam.movement[-1])

    command = " ".join(sys.argv[1:])
    lines = ["# Gradient descent on wide CNNs against nlfilt's ntk filter", "",
             f"`python benchmarks/ntk_vs_network.py {command}` on {platform.machine()} "
             f"(CPU, {numpy.dtype(dtype).name}), "
             f"nlfilt {nlfilt.__version__}, {time.strftime('%Y-%m-%d')}. 32x32 centre crops of Set12 "
             f"{', '.join(CROPS)}, noise sigma 25; patch 3; GD with learning rate 1 / lambda_max; Adam with "
             f"learning rate {args.adam_lr:g}; means over the crops.", "",
             "## Relative difference |f_t - z_t| / |z_t| between the network (GD) and the filter", "",
             "| depth | width | " + " | ".join(f"t = {t}" for t in checkpoints)
             + " | ratio to the previous width (theory ~0.5 per 4x) |",
             "| --- | --- |" + " --- |" * (len(checkpoints) + 1)]
    for depth in (1, 2):
        previous = None
        for width in widths[depth]:
            means = numpy.mean(differences[(depth, width)], axis=0)
            ratio = "" if previous is None else f"{means[-1] / previous:.2f}"
            lines.append(f"| {depth} | {width} | " + " | ".join(f"{value:.4f}" for value in means)
                         + f" | {ratio} |")
            previous = means[-1]
    lines += ["", f"## PSNR over the steps (width {args.curve_width} for GD and Adam)", "",
              "| depth | trajectory | PSNR at t = 1 | best PSNR (at t) | PSNR at t = "
              f"{args.steps} | hidden-weight movement at t = {args.steps} |",
              "| --- | --- | --- | --- | --- | --- |"]
    for depth in (1, 2):
        for kind in ("closed form", "GD", "Adam"):
            if (kind, depth) not in curves:
                continue
            curve = numpy.mean(curves[(kind, depth)], axis=0)
            best = int(numpy.argmax(curve))
            moved = f"{numpy.mean(movement[(kind, depth)]):.4f}" if (kind, depth) in movement else ""
            lines.append(f"| {depth} | {kind} | {curve[0]:.2f} | {curve[best]:.2f} ({best + 1}) | "
                         f"{curve[-1]:.2f} | {moved} |")
    lines += ["", f"Total time {time.perf_counter() - started:.0f} s.", ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        (RESULTS / f"{args.output}.md").write_text(text)
        if all(widths.values()) and curves:
            plot(differences, curves, widths, checkpoints, args, RESULTS / f"{args.output}.png")


def plot(differences, curves, widths, checkpoints, args, path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - the bench extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for depth, marker in ((1, "o"), (2, "s")):
        sizes = widths[depth]
        values = [numpy.mean(differences[(depth, width)], axis=0)[-1] for width in sizes]
        left.loglog(sizes, values, marker=marker, label=f"depth {depth}, t = {checkpoints[-1]}")
        left.loglog(sizes, values[0] * numpy.sqrt(sizes[0] / numpy.array(sizes)), "k:", linewidth=0.8)
    left.set_xlabel("width C")
    left.set_ylabel("|f_t - z_t| / |z_t|")
    left.set_title("network (GD) vs closed-form filter; dotted: 1/sqrt(C)")
    left.legend()
    steps = numpy.arange(1, args.steps + 1)
    for (kind, depth), runs in curves.items():
        style = {"closed form": "k-", "GD": "C0--", "Adam": "C3-"}[kind]
        right.plot(steps, numpy.mean(runs, axis=0), style, alpha=1.0 if depth == 1 else 0.5,
                   label=f"{kind}, depth {depth}")
    right.set_xscale("log")
    right.set_xlabel("step t")
    right.set_ylabel("PSNR (dB)")
    right.set_title(f"PSNR over the steps (width {args.curve_width})")
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
