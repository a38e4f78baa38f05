"""What Adam does to the filter, in both parametrisations: one report for the deep image prior's question.

Runs, and writes into ``benchmarks/results/adam_standard.md`` (after each part,
so an interrupted run keeps what it measured):

1. for the standard parametrisation (the deep image prior's) and the NTK one,
   :mod:`ntk_vs_network`'s measurements on 32 x 32 Set12 crops: the tangent
   kernel's movement, scale and shape change against the width for GD and
   Adam (1e-3, 1e-2), depth 1 and 2, and the PSNR curves
   (``adam_standard_<parametrisation>.png``);
2. the answer: for each parametrisation and depth, whether Adam's change of
   shape at 1e-2 grows or shrinks with the width, against GD's;
3. the filter maps of one pixel on a whole 256 x 256 image (Set12 05.png,
   noise sigma 25): ``nlfilt compare-network --filter-map`` in each
   parametrisation (closed form within a tent window, GD- and Adam-trained
   networks; ``adam_standard_filter_map_<parametrisation>.png``), with the
   kernels' changes estimated from sampled rows and the run's time;
4. :mod:`adapted_filter`'s table: each trained network's kernel used as a
   filter against the closed form's.

With ``--write`` every training run, filter map and the adapted-filter table is
also kept in ``benchmarks/results/records/`` as it is made; a later run takes
what is there and measures only the rest (``--fresh``: everything again).

    python benchmarks/adam_standard.py --write   # about 2.7 hours on 2 CPU cores from no records
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import adapted_filter
import imageio.v3 as iio
import ntk_vs_network
import numpy

from harness import DATA, RESULTS, Records, machine, write

PARAMETRIZATIONS = ("standard", "ntk")  # the deep image prior's first
MAP_IMAGE = "05.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA / "set12")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--widths", default="64,256,1024,4096", help="widths for depth 1")
    parser.add_argument("--depth2-widths", default="64,256,1024,2048,4096",
                        help="widths for depth 2 (4096: about 17 minutes per crop and parametrisation on "
                             "2 CPU cores)")
    parser.add_argument("--map-width", type=int, default=1024,
                        help="width of the 256 x 256 filter maps' runs")
    parser.add_argument("--skip-maps", action="store_true", help="leave out the 256 x 256 filter maps")
    parser.add_argument("--write", action="store_true",
                        help="write the report, and keep what is measured in results/records/")
    parser.add_argument("--fresh", action="store_true",
                        help="measure everything again (the records are kept)")
    args = parser.parse_args()
    folder = RESULTS / "records" if args.write else None
    records = {name: Records(folder / f"{name}.jsonl" if folder else None, fresh=args.fresh)
               for name in ("ntk_vs_network", "adam_standard")}
    started = time.perf_counter()
    header = ["# What Adam does to the filter: standard and NTK parametrisations\n",
              machine("adam_standard.py", time.strftime("%Y-%m-%d")),
              "The paper behind nlfilt (Tachella, Tang & Davies, CVPR 2021) says Adam, unlike gradient "
              "descent, adapts the non-local filter during training. Below, for both parametrisations, how "
              "far each trained network's own tangent kernel moved (and how much of it is a change of shape "
              "rather than of scale), the answer, the filter maps on a whole image, and the adapted kernels "
              "used as filters.\n"]
    # the parts in the order they are shown; measured in the order of PARTS (the deep image prior's first)
    shown = ("standard", "ntk", "answer", "maps", "adapted")
    parts: dict[str, str] = {}
    shapes: dict[str, dict] = {}

    def save() -> str:
        missing = [name for name in shown if name not in parts]
        elapsed = time.perf_counter() - started
        note = [] if not missing else [f"(Not yet measured when this was written, {elapsed:.0f} s into the "
                                       f"run: {', '.join(missing)}.)\n"]
        text = "\n".join(header + [parts[name] for name in shown if name in parts] + note)
        if not missing:
            text += f"\nTotal time {time.perf_counter() - started:.0f} s.\n"
        if args.write:
            write("adam_standard.md", text)
        return text

    def parametrisation(name: str) -> None:
        options = ntk_vs_network.arguments(
            ["--data", str(args.data), "--steps", str(args.steps), "--widths", args.widths,
             "--depth2-widths", args.depth2_widths, "--parametrization", name])
        figure = RESULTS / f"adam_standard_{name}.png" if args.write else None
        text, shapes[name] = ntk_vs_network.measure(options, figure, records["ntk_vs_network"])
        parts[name] = demoted(text, f"{name} parametrisation") + (
            f"\n![{name}]({figure.name})\n" if figure is not None else "")
        parts["answer"] = answer(shapes)
        save()

    parametrisation("standard")
    if not args.skip_maps:
        title = "## Filter maps of one pixel on a whole 256 x 256 image\n"
        parts["maps"] = "\n".join([title, *filter_maps(args, records["adam_standard"])])
        save()
    options = adapted_filter.arguments(["--data", str(args.data), "--steps", str(args.steps)])
    key = {"script": "adapted_filter", "steps": args.steps, "width": options.width,
           "twicing_steps": options.twicing_steps}
    table = records["adam_standard"].get(key) or records["adam_standard"].put(
        key, {"text": adapted_filter.measure(options)})
    parts["adapted"] = demoted(table["text"], "the adapted filter as a denoiser")
    save()
    parametrisation("ntk")
    print(save())


def demoted(text: str, title: str) -> str:
    """``text`` with its headings one level down, its first heading titled ``title``, and its machine
    line dropped (the report has one)."""
    lines = [line for line in text.splitlines() if not line.startswith("Machine:")]
    lines = [("#" + line if line.startswith("#") else line) for line in lines]
    if lines and lines[0].startswith("## "):
        lines[0] = f"## {title[0].upper()}{title[1:]}: {lines[0][3:]}"
    return "\n".join(lines) + "\n"


def answer(shapes: dict[str, dict]) -> str:
    """Whether Adam (the last rate) changes the kernel's shape more with the width, per parametrisation
    and depth, against GD: the claim holds where Adam's change of shape does not vanish as the width grows
    while GD's does."""
    lines = ["## The answer\n", "| parametrisation | depth | GD shape change (smallest -> largest width) | "
             "Adam 0.01 shape change (smallest -> largest width) | Adam adapts the filter? |",
             "| --- | --- | --- | --- | --- |"]
    for parametrization, table in shapes.items():
        for depth in (1, 2):
            widths = sorted({width for (label, d, width) in table if d == depth})
            if len(widths) < 2:
                continue
            gd = [table["GD", depth, width] for width in (widths[1], widths[-1])]
            adam = [table["Adam 0.01", depth, width] for width in (widths[1], widths[-1])]
            adapts = adam[1] >= 0.5 * adam[0] and adam[1] > 5 * gd[1]
            verdict = ("yes: its change of shape stays or grows with the width, GD's vanishes" if adapts else
                       "no: beyond a change of scale its kernel's shape settles as the width grows")
            lines.append(f"| {parametrization} | {depth} | {gd[0]:.4f} -> {gd[1]:.4f} (widths {widths[1]} -> "
                         f"{widths[-1]}) | {adam[0]:.4f} -> {adam[1]:.4f} | {verdict} |")
    lines.append("\n(Widths from the second smallest on: the smallest networks are far from any limit.)\n")
    return "\n".join(lines)


def filter_maps(args: argparse.Namespace, records: Records) -> list[str]:
    """``nlfilt compare-network --filter-map`` on the whole noisy 05.png in each parametrisation: its
    output and the figure's link (from ``records`` where they hold it and its figure is there)."""
    lines = []
    clean = iio.imread(args.data / MAP_IMAGE).astype(numpy.float64)
    noisy = numpy.clip(numpy.round(clean + 25 * numpy.random.default_rng(0).standard_normal(clean.shape)),
                       0, 255).astype(numpy.uint8)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "noisy.png"
        iio.imwrite(path, noisy)
        for parametrization in PARAMETRIZATIONS:
            where = RESULTS if args.write else Path(folder)  # a trial run writes nothing into the results
            figure = where / f"adam_standard_filter_map_{parametrization}.png"
            command = ["compare-network", str(path), "--width", str(args.map_width), "--steps",
                       str(args.steps), "--parametrization", parametrization, "--filter-map", "128", "128",
                       "-o", str(figure), "--quiet", "--max-minutes", "0"]
            key = {"script": "compare-network", "image": MAP_IMAGE, "sigma": 25, "width": args.map_width,
                   "steps": args.steps, "parametrization": parametrization}
            found = records.get(key)
            if found is None or not figure.exists():
                clock = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "nlfilt", *command], capture_output=True,
                                      text=True)
                found = {"seconds": time.perf_counter() - clock, "returncode": done.returncode,
                         "output": (done.stdout.strip() or done.stderr).replace(str(path), path.name)}
                if done.returncode == 0:
                    records.put(key, found)
            shown = " ".join(part if not part.startswith("/") else Path(part).name for part in command)
            lines += [f"`nlfilt {shown}` ({MAP_IMAGE}, {clean.shape[0]}x{clean.shape[1]}, sigma 25 rounded "
                      f"and clipped to 8 bits; {found['seconds']:.0f} s):\n", "```", found["output"], "```\n"]
            if found["returncode"] == 0:
                lines.append(f"![filter map, {parametrization}]({figure.name})\n")
    return lines


if __name__ == "__main__":
    main()
