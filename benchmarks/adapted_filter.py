"""The filter a trained network ends with, used as a denoiser: does Adam's adaptation make a better filter?

On 32 x 32 centre crops of Set12 with noise sigma 25, nlfilt.network's CNN is
trained on the noisy crop (input and target) for ``--steps`` steps by gradient
descent and by Adam (1e-2), in the NTK and the standard parametrisation, depth
1 and 2.  Each network's empirical tangent kernel at the end, ``Theta_T``, is
then used as a filter the way nlfilt uses the closed-form ntk kernel ``K``:
``W = Theta_T / lambda_max``, twicing ``z_t = z_{t-1} + W (y - z_{t-1})``, its
step chosen by SURE (exact here: ``W``'s eigenvectors give ``z_t`` and the
divergence ``sum(1 - (1 - lambda_i)^t)`` for every t at once).  The table
compares, in PSNR against the clean crop, that adapted filter (the SURE step
and the best step), the closed-form filter ``K`` treated the same way, and the
network's own output (after the last step, and at its best step).

    python benchmarks/adapted_filter.py --write   # benchmarks/results/adapted_filter.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy
from ntk_vs_network import CROPS

import nlfilt
from nlfilt.network import ADAM_LEARNING_RATE, PARAMETRIZATIONS, ntk_eigenvalue, train

from harness import DATA, centre_crops, machine, psnr, write

SIGMA = 25.0


def twicing(kernel: numpy.ndarray, noisy: numpy.ndarray, clean: numpy.ndarray, sigma: float,
            steps: int) -> tuple[list[float], int]:
    """(PSNR of ``z_t`` for ``t = 1 .. steps``, the step a fixed-filter SURE would pick) for twicing with
    ``W = kernel / lambda_max`` on ``noisy``.  That SURE takes ``W`` as fixed (divergence ``sum(1 - (1 -
    lambda_i)^t)``), which a kernel made from the noisy image itself is not: it picks too late."""
    values, vectors = numpy.linalg.eigh((kernel + kernel.T) / 2)
    values = numpy.clip(values / values.max(), 0, 1)
    flat = noisy.ravel()
    coefficients = vectors.T @ flat
    curve, risks = [], []
    for t in range(1, steps + 1):
        gains = 1 - (1 - values) ** t
        estimate = vectors @ (gains * coefficients)
        risks.append(numpy.sum((flat - estimate) ** 2) + 2 * sigma**2 * gains.sum() - flat.size * sigma**2)
        curve.append(psnr(estimate.reshape(noisy.shape), clean))
    return curve, int(numpy.argmin(risks)) + 1


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's options (``argv``: those to parse instead of ``sys.argv``'s)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA / "set12")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--twicing-steps", type=int, default=400, help="largest twicing step SURE may pick")
    parser.add_argument("--write", action="store_true")
    return parser.parse_args(argv)


def main() -> None:
    args = arguments()
    text = measure(args)
    print(text)
    if args.write:
        write("adapted_filter.md", text)


def measure(args: argparse.Namespace) -> str:
    """Run the measurements of ``args``; return the report (Markdown)."""
    started = time.perf_counter()
    crops = centre_crops(args.data, CROPS, 32, SIGMA)
    rows: dict[tuple, list[list[float]]] = {}
    for depth in (1, 2):
        for name, clean, noisy in crops:
            eigenvalue = ntk_eigenvalue(noisy, depth=depth)
            closed = nlfilt.filter_matrix(noisy, kernel="ntk", depth=depth, window=None, dtype=numpy.float64,
                                          device="cpu") * eigenvalue
            # the step nlfilt's own stopping picks for the closed-form filter (SURE with a twin run)
            _, info = nlfilt.denoise(noisy, kernel="ntk", depth=depth, window=None, iterations="auto",
                                     sigma=SIGMA, max_iterations=args.twicing_steps, dtype=numpy.float64,
                                     device="cpu", return_info=True)
            chosen = int(info.iterations)
            curve, naive = twicing(closed, noisy, clean, SIGMA, args.twicing_steps)
            rows.setdefault((depth, "closed-form K", "-"), []).append(
                [numpy.nan, numpy.nan, curve[chosen - 1], chosen, max(curve), int(numpy.argmax(curve)) + 1,
                 naive])
            for parametrization in PARAMETRIZATIONS:
                for optimizer in ("gd", "adam"):
                    run = train(noisy, width=args.width, depth=depth, steps=args.steps, optimizer=optimizer,
                                eigenvalue=eigenvalue if parametrization == "ntk" else None, seed=1,
                                dtype=numpy.float64, parametrization=parametrization)
                    kernel = run.network.backend.to_host(run.network.tangent_kernel(run.patches))[0, 0]
                    network = [psnr(output, clean) for output in run.outputs[1:]]
                    curve, naive = twicing(kernel, noisy, clean, SIGMA, args.twicing_steps)
                    rows.setdefault((depth, parametrization, optimizer), []).append(
                        [network[-1], max(network), curve[chosen - 1], chosen, max(curve),
                         int(numpy.argmax(curve)) + 1, naive])
                    print(f"depth {depth} {name} {parametrization} {optimizer}: network {network[-1]:.2f} "
                          f"(best {max(network):.2f}), its kernel as a filter {curve[chosen - 1]:.2f} at "
                          f"t={chosen} (best {max(curve):.2f} at t={int(numpy.argmax(curve)) + 1}; fixed-W "
                          f"SURE picks t={naive}) ({time.perf_counter() - started:.0f} s)", flush=True)
    lines = ["# The trained network's kernel as a filter: does Adam's adaptation make a better one?\n",
             machine("adapted_filter.py"),
             f"32x32 centre crops of Set12 {', '.join(CROPS)}, noise sigma {SIGMA:g} (unclipped); networks "
             f"of width {args.width} trained {args.steps} steps (GD: 1 / lambda_max of the kernel it "
             f"follows; Adam: {ADAM_LEARNING_RATE:g}), float64; each kernel used as W = Theta / lambda_max "
             f"with twicing, at the step nlfilt's own stopping (SURE with a twin run) picks for the "
             "closed-form filter K on the same image, and at its best step (an oracle).  A SURE that takes "
             "W as fixed picks too late (last column): W is made from the noisy image itself.  PSNR (dB), "
             "means over the crops; steps: means.\n",
             "| depth | network | optimizer | network after training | network, best step | its kernel as a "
             "filter, at nlfilt's step | that step | its kernel as a filter, best step | best step | fixed-W "
             "SURE step |",
             "| --- " * 10 + "|"]
    for (depth, parametrization, optimizer), values in rows.items():
        columns = numpy.array(values, dtype=float).T
        mean = [float(numpy.mean(column)) for column in columns]  # NaN for the closed form's network
        cells = ["–" if numpy.isnan(value) else f"{value:.2f}" for value in mean[:2]]
        lines.append(f"| {depth} | {parametrization} | {optimizer} | {cells[0]} | {cells[1]} | "
                     f"{mean[2]:.2f} | {mean[3]:.0f} | {mean[4]:.2f} | {mean[5]:.0f} | {mean[6]:.0f} |")
    lines.append(f"\nTotal time {time.perf_counter() - started:.0f} s.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
