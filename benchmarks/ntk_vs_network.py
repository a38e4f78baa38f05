"""Gradient descent on wide CNNs follows nlfilt's ntk filter; Adam adapts it.

On 32 x 32 crops of Set12 with noise sigma 25, trains nlfilt.network's ReLU
CNN (input and target the noisy crop, squared loss, zero initial output) by
full-batch gradient descent with learning rate 1 / lambda_max (nlfilt's step)
and by Adam, and compares it with nlfilt's closed-form twicing ``z_t`` (ntk
kernel, global, patch 3):

* the relative difference |f_t - z_t| / |z_t| at t = 10, 50, 200 for widths
  64 ... 4096 and depth 1 and 2, and how it shrinks with the width (the theory:
  about 1 / sqrt(C), a factor 0.5 per 4x width);
* how far the network's empirical tangent kernel moved during training,
  |Theta_T - Theta_0|_F / |Theta_0|_F, and how much of it is a change of
  shape rather than of scale, against the width, for GD and for Adam
  at each learning rate (the lazy regime: GD's kernel stays put, the more so
  the wider the network);
* PSNR against the clean crop over the steps for GD, Adam and the filter;
* the training time per step (the device and precision of the run).

With ``--write`` each training run's values are also kept in
``benchmarks/results/records/ntk_vs_network.jsonl``: a later run with one more
width trains only that width's networks and rebuilds the whole report.

    python benchmarks/ntk_vs_network.py --write   # benchmarks/results/ntk_vs_network.md and .png
    python benchmarks/ntk_vs_network.py --parametrization standard --output ntk_vs_network_standard --write

With ``--parametrization standard`` (the deep image prior's: weights uniform in
+-1/sqrt(fan_in), no forward factors) gradient descent steps 1 / lambda_max of
the network's own initial kernel, which is not nlfilt's ntk kernel: the first
table then measures how far that network is from the ntk filter.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy

from nlfilt.backend import get_backend
from nlfilt.network import ADAM_LEARNING_RATE, PARAMETRIZATIONS, ntk_twicing, train

from harness import DATA, RESULTS, Records, centre_crops, machine, psnr, write

CROPS = ("01.png", "05.png", "08.png")



def relative(a: numpy.ndarray, b: numpy.ndarray) -> float:
    return float(numpy.linalg.norm(a - b) / numpy.linalg.norm(b))


def integers(text: str) -> list[int]:
    return [int(value) for value in text.split(",") if value]


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's options (``argv``: those to parse instead of ``sys.argv``'s)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA / "set12")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--widths", default="64,256,1024,4096", help="widths for depth 1")
    parser.add_argument("--depth2-widths", default="64,256,1024,2048",
                        help="widths for depth 2 (4096: about 5 minutes per run on 2 CPU cores)")
    parser.add_argument("--curve-width", type=int, default=1024, help="width of the GD and Adam PSNR curves")
    parser.add_argument("--adam-lrs", default=f"1e-3,{ADAM_LEARNING_RATE:g}",
                        help="Adam learning rates whose kernel movement is measured (the last: PSNR curve)")
    parser.add_argument("--float64", action="store_true", help="train in float64 (float32 by default)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--parametrization", default="ntk", choices=PARAMETRIZATIONS)
    parser.add_argument("--output", default="ntk_vs_network", help="name of the result files")
    parser.add_argument("--write", action="store_true",
                        help="write the report, and keep each training run's values in "
                             "results/records/ntk_vs_network.jsonl, where a later run finds them")
    parser.add_argument("--fresh", action="store_true", help="measure every run again (the records are kept)")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"--data {args.data} is not a folder")
    return args


def main() -> None:
    args = arguments()
    records = Records(RESULTS / "records" / "ntk_vs_network.jsonl" if args.write else None, fresh=args.fresh)
    text, _ = measure(args, RESULTS / f"{args.output}.png" if args.write else None, records)
    print(text)
    if args.write:
        write(f"{args.output}.md", text)


def train_once(args: argparse.Namespace, crop: tuple, depth: int, width: int, rate: float | None,
               closed: list, eigenvalue: float) -> dict:
    """One training run on ``crop`` (name, clean, noisy): GD (``rate`` None) or Adam at ``rate``; what
    the report needs from it, JSON-able: the seconds per step, the kernel's movement, change of shape and
    the hidden weights' movement at the end, the PSNR after each step and (GD) the relative difference from
    the closed form ``closed`` after each step."""
    name, clean, noisy = crop
    settings = dict(steps=args.steps, seed=1, dtype=numpy.float64 if args.float64 else numpy.float32,
                    device=args.device, parametrization=args.parametrization)
    clock = time.perf_counter()
    if rate is None:
        own = args.parametrization != "ntk"  # GD's step: 1 / lambda_max of the network's own kernel
        run = train(noisy, width=width, depth=depth, eigenvalue=None if own else eigenvalue, **settings)
    else:
        run = train(noisy, width=width, depth=depth, optimizer="adam", learning_rate=rate, **settings)
    seconds = (time.perf_counter() - clock) / args.steps
    change = run.kernel_change()
    values = {"seconds_per_step": seconds, "movement": change.movement, "shape": change.shape,
              "hidden": run.movement[-1], "psnr": [psnr(f, clean) for f in run.outputs[1:]]}
    if rate is None:
        values["difference"] = [relative(run.outputs[t], closed[t]) for t in range(1, args.steps + 1)]
    return values


def measure(args: argparse.Namespace, figure: Path | None = None,
            records: Records | None = None) -> tuple[str, dict[tuple, float]]:
    """Run the measurements of ``args``; return the report (Markdown) and the kernels' mean change of shape
    by (optimizer label, depth, width), and draw the report into ``figure``.  Each training run found in
    ``records`` is taken from there, and each one made is added to them."""
    records = records if records is not None else Records(None)
    widths = {1: integers(args.widths), 2: integers(args.depth2_widths)}
    rates = [float(value) for value in args.adam_lrs.split(",") if value]
    dtype = numpy.float64 if args.float64 else numpy.float32
    checkpoints = [t for t in (10, 50, 200) if t <= args.steps]
    started = time.perf_counter()
    crops = centre_crops(args.data, CROPS, 32, 25.0)
    labels = ["GD"] + [f"Adam {rate:g}" for rate in rates]

    differences: dict[tuple[int, int], list[list[float]]] = {}
    curves: dict[tuple[str, int], list[list[float]]] = {}
    kernel_moved: dict[tuple[str, int, int], list[float]] = {}  # (optimizer label, depth, width)
    kernel_shape: dict[tuple[str, int, int], list[float]] = {}
    hidden_moved: dict[tuple[str, int, int], list[float]] = {}
    step_time: dict[tuple[int, int], list[float]] = {}
    measured, first = 0, len(records.used)
    for depth in (1, 2):
        for crop in crops:
            name, clean, noisy = crop
            if not widths[depth]:
                continue
            closed, eigenvalue = ntk_twicing(noisy, depth=depth, steps=args.steps)
            curves.setdefault(("closed form", depth), []).append([psnr(z, clean) for z in closed[1:]])
            for width in widths[depth]:
                for label, rate in zip(labels, [None, *rates], strict=True):
                    key = {"script": "ntk_vs_network", "parametrization": args.parametrization,
                           "depth": depth, "width": width, "crop": name, "crop_size": 32, "sigma": 25.0,
                           "patch": 3, "steps": args.steps, "seed": 1, "dtype": numpy.dtype(dtype).name,
                           "device": args.device, "optimizer": "gd" if rate is None else "adam",
                           "learning_rate": rate}
                    values = records.get(key)
                    if values is None:
                        values = records.put(
                            key, train_once(args, crop, depth, width, rate, closed, eigenvalue))
                        measured += 1
                    kernel_moved.setdefault((label, depth, width), []).append(values["movement"])
                    kernel_shape.setdefault((label, depth, width), []).append(values["shape"])
                    hidden_moved.setdefault((label, depth, width), []).append(values["hidden"])
                    if rate is None:
                        step_time.setdefault((depth, width), []).append(values["seconds_per_step"])
                        differences.setdefault((depth, width), []).append(
                            [values["difference"][t - 1] for t in checkpoints])
                    if width == args.curve_width and label in ("GD", labels[-1]):
                        curves.setdefault((label, depth), []).append(values["psnr"])
                print(f"depth {depth} {name} width {width}: difference at t={checkpoints[-1]} "
                      f"{differences[(depth, width)][-1][-1]:.4f}, kernel movement "
                      + " ".join(f"{label} {kernel_moved[(label, depth, width)][-1]:.4f}" for label in labels)
                      + f" ({time.perf_counter() - started:.0f} s)", flush=True)

    backend = get_backend(args.device)
    where = f"{platform.machine()} CPU, {backend.workers} threads" if args.device == "cpu" else "GPU"
    lines = ["# Wide CNNs against nlfilt's ntk filter: gradient descent follows it, Adam adapts it", "",
             machine("ntk_vs_network.py", time.strftime("%Y-%m-%d")),
             f"On {where} ({numpy.dtype(dtype).name}), {args.parametrization} parametrisation. 32x32 "
             f"centre crops of Set12 {', '.join(CROPS)}, noise sigma 25; patch 3; {args.steps} steps; GD "
             "with learning rate 1 / lambda_max (of the ntk filter's K, or in the standard parametrisation "
             "of the network's initial kernel); Adam with learning rates "
             f"{', '.join(f'{rate:g}' for rate in rates)}; means over the crops.", "",
             "## Relative difference |f_t - z_t| / |z_t| between the network (GD) and the filter", "",
             "| depth | width | " + " | ".join(f"t = {t}" for t in checkpoints)
             + " | ratio to the previous width (theory ~0.5 per 4x) | s per training step |",
             "| --- | --- |" + " --- |" * (len(checkpoints) + 2)]
    for depth in (1, 2):
        previous = previous_width = None
        for width in widths[depth]:
            means = numpy.mean(differences[(depth, width)], axis=0)
            ratio = "" if previous is None else f"{means[-1] / previous:.2f} (x{width // previous_width})"
            lines.append(f"| {depth} | {width} | " + " | ".join(f"{value:.4f}" for value in means)
                         + f" | {ratio} | {numpy.mean(step_time[(depth, width)]):.3f} |")
            previous, previous_width = means[-1], width
    lines += ["", f"## How far the empirical tangent kernel moved: |Theta_T - Theta_0|_F / |Theta_0|_F at "
              f"T = {args.steps}", "",
              "Theta is the finite network's own tangent kernel (from its Jacobians, all layers), at the end "
              "of training and at initialisation. Each cell: the movement / its change of shape "
              "|Theta_T / |Theta_T| - Theta_0 / |Theta_0|| (what is left once the scale is set aside) "
              "(the hidden weights' movement |W - W_0| / |W_0|).",
              "", "| depth | width | " + " | ".join(labels) + " |", "| --- | --- |" + " --- |" * len(labels)]
    for depth in (1, 2):
        for width in widths[depth]:
            cells = [f"{numpy.mean(kernel_moved[(label, depth, width)]):.4f} / "
                     f"{numpy.mean(kernel_shape[(label, depth, width)]):.4f} "
                     f"({numpy.mean(hidden_moved[(label, depth, width)]):.4f})" for label in labels]
            lines.append(f"| {depth} | {width} | " + " | ".join(cells) + " |")
    lines += ["", f"## PSNR over the steps (width {args.curve_width} for GD and Adam {rates[-1]:g})", "",
              f"| depth | trajectory | PSNR at t = 1 | best PSNR (at t) | PSNR at t = {args.steps} |",
              "| --- | --- | --- | --- | --- |"]
    for (kind, depth), runs in sorted(curves.items(), key=lambda item: item[0][1]):
        curve = numpy.mean(runs, axis=0)
        best = int(numpy.argmax(curve))
        lines.append(f"| {depth} | {kind} | {curve[0]:.2f} | {curve[best]:.2f} ({best + 1}) | "
                     f"{curve[-1]:.2f} |")
    lines += ["", records.summary(first), "",
              f"Total time {time.perf_counter() - started:.0f} s ({measured} training runs made, "
              f"{len(records.used) - first - measured} taken from the records; s per training step as "
              "measured).", ""]
    if figure is not None and all(widths.values()) and curves:
        plot(differences, kernel_moved, labels, curves, widths, checkpoints, args, figure)
    return "\n".join(lines), {key: float(numpy.mean(values)) for key, values in kernel_shape.items()}


def plot(differences, kernel_moved, labels, curves, widths, checkpoints, args, path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - the bench extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.4))
    for depth, marker in ((1, "o"), (2, "s")):
        sizes = widths[depth]
        values = [numpy.mean(differences[(depth, width)], axis=0)[-1] for width in sizes]
        left.loglog(sizes, values, marker=marker, label=f"depth {depth}, t = {checkpoints[-1]}")
        left.loglog(sizes, values[0] * numpy.sqrt(sizes[0] / numpy.array(sizes)), "k:", linewidth=0.8)
        for index, label in enumerate(labels):
            moved = [numpy.mean(kernel_moved[(label, depth, width)]) for width in sizes]
            middle.loglog(sizes, moved, marker=marker, color=f"C{index}",
                          linestyle="-" if depth == 1 else "--", label=f"{label}, depth {depth}")
    left.set_xlabel("width C")
    left.set_ylabel("|f_t - z_t| / |z_t|")
    left.set_title("network (GD) vs closed-form filter; dotted: 1/sqrt(C)")
    left.legend()
    middle.set_xlabel("width C")
    middle.set_ylabel("|Theta_T - Theta_0| / |Theta_0|")
    middle.set_title(f"tangent kernel movement after {args.steps} steps")
    middle.legend(fontsize=7)
    steps = numpy.arange(1, args.steps + 1)
    for (kind, depth), runs in curves.items():
        style = {"closed form": "k-", "GD": "C0--"}.get(kind, "C3-")
        right.plot(steps, numpy.mean(runs, axis=0), style, alpha=1.0 if depth == 1 else 0.5,
                   label=f"{kind}, depth {depth}")
    right.set_xscale("log")
    right.set_xlabel("step t")
    right.set_ylabel("PSNR (dB)")
    right.set_title(f"PSNR over the steps (width {args.curve_width})")
    right.legend(fontsize=8)
    figure.suptitle(f"nlfilt.network in the {args.parametrization} parametrisation against nlfilt's ntk "
                    "filter (32x32 Set12 crops, sigma 25)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
