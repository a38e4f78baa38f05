"""Plant plausible bugs one at a time and report which the test suite catches.

Usage: python benchmarks/mutation_check.py [--only NAME ...] [--tests PATH ...] [--write]

Each mutation replaces exact text in one or more package files (the text must
occur exactly once, so a mutation that no longer applies is reported as
stale rather than silently skipped).  The work happens in a temporary copy of
the checkout (tracked and untracked files, ignored ones left out), with the
project's data folder linked beside it so data-dependent tests still run; the
working tree is never touched.  For each mutation the tests run with
``pytest -x`` against the copy, and the mutation counts as caught when pytest
fails.  Not part of CI: a full run takes about 15-30 minutes on two cores.

With ``--write`` the table goes to benchmarks/results/mutations.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import ROOT, machine, write


@dataclass(frozen=True)
class Mutation:
    """A named bug: ``(file, old text, new text)`` replacements, applied together."""

    name: str
    area: str
    edits: tuple[tuple[str, str, str], ...]


def mutation(name: str, area: str, *edits: tuple[str, str, str]) -> Mutation:
    return Mutation(name, area, tuple(edits))


DENOISE = "nlfilt/cli/denoise.py"
INPUTS = "nlfilt/cli/inputs.py"
IMAGES = "nlfilt/images.py"
STOPPING = "nlfilt/stopping.py"
OPERATORS = "nlfilt/operators.py"
WORKERS = "nlfilt/workers.py"
NOISE = "nlfilt/noise.py"

COLLABORATIVE = "nlfilt/collaborative.py"
JIT_GROUPS = "nlfilt/jit_groups.py"
SERIES = "nlfilt/series.py"
VIDEO = "nlfilt/video.py"
VOLUME = "nlfilt/volume.py"
CLUSTER = "nlfilt/cli/cluster.py"
DASK = "nlfilt/dask.py"
NAPARI_WORK = "nlfilt/napari_plugin/work.py"
NAPARI_WIDGET = "nlfilt/napari_plugin/widget.py"

JIT = "nlfilt/jit.py"
KERNELS = "nlfilt/kernels.py"
ARGUMENTS = "nlfilt/arguments.py"

MUTATIONS = [
    # compiled CPU operator, channel_axis, formats and stacks (added 2026-11-27, second session)
    mutation("jit: the mirrored pair's term dropped", "jit",
             (JIT, "                                flat_out[unsigned(there + i)] += (weights[i]\n",
              "                                flat_out[unsigned(there + i)] += 0 * (weights[i]\n")),
    mutation("jit: sliding column sums keep the row that left the patch", "jit",
             (JIT, "sums[unsigned(base + i)] += (a - b) * (a - b) - (c - d) * (c - d)",
              "sums[unsigned(base + i)] += (a - b) * (a - b)")),
    mutation("jit: odd and even bands run side by side", "jit",
             (JIT, "self._phases = [bands[0::2], bands[1::2]]", "self._phases = [bands, []]")),
    mutation("jit: weights not clipped at the floor", "jit",
             (KERNELS, "fast_exp(min(max(offset - t[i], floor), zero))",
              "fast_exp(min(offset - t[i], zero))")),
    mutation("jit: cosines not divided by the partner's norm", "jit",
             (KERNELS, "cosine = t[i] * inverse[unsigned(here + i)] * inverse[unsigned(there + i)]",
              "cosine = t[i] * inverse[unsigned(here + i)] * inverse[unsigned(here + i)]")),
    mutation("jit: ntk's theta not scaled by (pi - phi) / pi", "jit",
             (KERNELS, "            theta[i] = theta[i] * angle * inverse_pi\n", "")),
    mutation("jit: tangent kernels compiled although their weights are kept", "jit",
             (JIT, "    if not keeps_weights:\n        return True\n", "    return True\n")),
    mutation("jit: row sums counted once per pair", "jit",
             (JIT, "                            if mirrored:\n"
                   "                                for i in range(count):\n"
                   "                                    flat_out[unsigned(there + i)] += weights[i]\n", "")),
    mutation("channel_axis: a long last axis taken as channels", "api",
             (ARGUMENTS, "        if shape[2] > MAX_AUTO_CHANNELS:", "        if False:")),
    mutation("channel_axis: result left channels-last", "api",
             (ARGUMENTS, "    return numpy.moveaxis(result, -1, axis)", "    return result")),
    mutation("16-bit colour PNG written by Pillow", "io",
             (IMAGES, 'if path.suffix.lower() == ".png" and pixels.dtype == numpy.uint16 and pixels.ndim '
                      '== 3:', "if False:")),
    mutation("stack: ImageJ metadata dropped", "io",
             (IMAGES, 'options.update(imagej=True, metadata={"axes": layout.axes, **layout.imagej})',
              'options.update(metadata={"axes": layout.axes})')),
    mutation("stack: written to a single-image format", "io",
             (IMAGES, 'if frames and suffix not in (".tif", ".tiff", ".png"):', "if False:")),
    mutation("WebP: gray written as RGB", "io",
             (IMAGES, 'if suffix == ".webp" and layout_channels in (0, 1, 2):', "if False:")),
    # collaborative filter, dask, clusters, streaming (added 2026-11-27)
    mutation("collaborative: colour estimate not taken back to RGB", "collaborative",
             (COLLABORATIVE, "return mix_channels(xp, estimate, OPPONENT) if colour else estimate",
              "return mix_channels(xp, estimate, OPPONENT.T) if colour else estimate")),
    mutation("collaborative: Wiener gains from the noisy group, not the pilot's (array code)",
             "collaborative",
             (COLLABORATIVE, "gains = transforms.forward(plane[index], count)", "gains = values.copy()")),
    mutation("collaborative: Wiener gains from the noisy group, not the pilot's (compiled)", "collaborative",
             (JIT_GROUPS, "_gather(guides[channel], origins, width, patch, work)",
              "_gather(planes[channel], origins, width, patch, work)")),
    mutation("collaborative: reference patch not forced into its own group (array code)", "collaborative",
             (COLLABORATIVE, "keys[:, offsets // 2] = -1  # the reference itself heads its group", "pass")),
    mutation("collaborative: the reference also a candidate of its own group (compiled)", "collaborative",
             (JIT_GROUPS, "if slots == 0 or (row_step == 0 and col_step == 0):", "if slots == 0:")),
    mutation("collaborative: candidates ranked by distance alone (ties in the order found)", "collaborative",
             (COLLABORATIVE, "keys *= offsets\n            keys += index",
              "keys *= offsets\n            keys += index * 0")),
    mutation("collaborative: guide quantised relative to its range (crops get other levels)", "collaborative",
             (COLLABORATIVE, "step = xp.maximum(sigma / LEVELS_PER_SIGMA, xp.abs(values).max() / MAX_LEVEL)",
              "step = xp.maximum(sigma / LEVELS_PER_SIGMA, (values.max() - values.min()) / 4096)\n"
              "    values -= values.min()")),
    mutation("collaborative: compiled bands filtered all at once (threads race)", "collaborative",
             (JIT_GROUPS, "for phase in (bands[0::2], bands[1::2]):", "for phase in (bands,):")),
    mutation("collaborative: scratch read before it is written", "collaborative",
             (JIT_GROUPS, "        out[_U(target + m)] = 0",
              "        out[_U(target + m)] = out[0] - out[0]")),
    mutation("collaborative: an all-zero pilot divides by zero", "collaborative",
             (JIT_GROUPS, "        total = max(total, gain_floor)", "        total = total")),
    # BM3D's transforms (added 2026-12-06)
    mutation("collaborative: hard-thresholding stage on the DCT, not the biorthogonal wavelet",
             "collaborative",
             (COLLABORATIVE, "*pair(patch, BIOR15 if hard else None)", "*pair(patch, None)")),
    mutation("collaborative: compiled inverse patch transform taken as the forward's transpose",
             "collaborative",
             (JIT_GROUPS, "(forward_patch, inverse_patch, forward_group.T, inverse_group.T))",
              "(forward_patch, forward_patch.T, forward_group.T, inverse_group.T))")),
    # colour channels weighted on their own, colour groups (added 2026-12-06, second session)
    mutation("collaborative: colour channels share their groups' weights", "collaborative",
             (COLLABORATIVE, "    if image.shape[-1] == 1:\n        return stage(0)",
              "    if pilot is None:\n"
              "        return groups.filter(image, pilot, members, sigma, threshold=threshold)\n"
              "    if image.shape[-1] == 1:\n        return stage(0)")),
    mutation("collaborative: colour images get the gray groups", "collaborative",
             (COLLABORATIVE, "group = COLOUR_GROUP if colour else GROUP", "group = GROUP")),
    # the second stage's empirical-Bayes estimate (added 2026-12-07)
    mutation("collaborative: second stage the Wiener estimate alone", "collaborative",
             (COLLABORATIVE, "            estimate += bayes\n", "")),
    mutation("collaborative: Bayes estimate of the noisy patches without the pilot's mean (array code)",
             "collaborative",
             (COLLABORATIVE, ".astype(xp.float64) - mean\n", ".astype(xp.float64)\n")),
    mutation("collaborative: compiled Bayes back substitution reads the upper triangle", "collaborative",
             (JIT_GROUPS, "solution, t * group, -system[t * group + i], group)",
              "solution, t * group, -system[i * group + t], group)")),
    mutation("collaborative: compiled Bayes noise term per patch, not per group", "collaborative",
             (JIT_GROUPS, "noise = group * float(sigma) ** 2", "noise = float(sigma) ** 2")),
    mutation("dask: collaborative halo off the grid's step", "dask",
             (DASK, "// STEP) * STEP", "// 16) * 16")),
    mutation("partial sums follow the thread count", "operators",
             (WORKERS, "shares = [range(start, count, PARTIALS) for start in range(min(PARTIALS, count))]",
              "shares = [range(start, count, self.count) for start in range(min(self.count, count))]")),
    mutation("streamed and dask chunks drop --window-shape (the box window runs)", "dask",
             (DASK, '"window_shape": options.window_shape, ', "")),
    mutation("dask: halo of one twicing step only", "dask",
             (DASK, "return patch // 2 + iterations * (window // 2)", "return patch // 2 + window // 2")),
    mutation("cluster: unfinished files get no interrupted line", "cli",
             (DENOISE, "        mark_interrupted(job, interrupted, detail)\n", "")),
    mutation("cluster: the run's partials folders left after the run", "cli",
             (DENOISE, "            for folder in partials.values():\n"
                       "                remove_partials_folder(folder)\n", "            pass\n")),
    mutation("cluster: workers write their partial files beside the outputs", "cli",
             (DENOISE, "    jobs = [replace(job, partials=partials[job.target.parent]) for job in jobs]\n",
              "")),
    mutation("partials folder emptied in place, not renamed first", "io",
             (IMAGES, "            os.rename(path, doomed)\n", "            doomed = path\n")),
    mutation("a dead run's partials folder never removed", "io",
             (IMAGES, "match = _PARTIAL.match(entry.name) or _PARTIALS_FOLDER.match(entry.name)",
              "match = _PARTIAL.match(entry.name)")),

    # command line: paths
    mutation("output-is-input check compares the paths as typed", "cli",
             (INPUTS, "if _file_identity(target) in identities:",
              "if job.target in {other.source for other in jobs}:")),
    mutation("hard links to an input not recognised (resolved paths only)", "cli",
             (INPUTS, "if _file_identity(target) in identities:",
              "if target in {other.source.resolve() for other in jobs}:")),
    mutation("two inputs with one output not refused", "cli",
             (INPUTS, "        if target in seen:\n", "        if False:\n")),
    mutation("hidden and partial files taken as inputs", "cli",
             (INPUTS, 'if entry.name.startswith("."):', "if False:")),
    mutation("output folder inside the input read as input", "cli",
             (INPUTS, "if exclude is not None and Path(os.path.realpath(path)).is_relative_to(exclude):",
              "if False:")),
    mutation("an image name as the output of several inputs becomes a folder", "cli",
             (INPUTS, "if to_folder and not output.exists() and output.suffix.lower() in IMAGE_EXTENSIONS:",
              "if False:")),
    mutation("an output folder that is an input folder not refused", "cli",
             (INPUTS, "if item.is_dir() and output.is_dir() and os.path.samefile(item, output):",
              "if False:")),
    mutation("a file named twice denoised twice", "cli",
             (INPUTS, "first = first_job.get(identity) if identity is not None else None", "first = None")),
    mutation("inputs passed over left out of the report", "cli",
             (DENOISE, "        report.write(_entry(Job(item.source, item.target), backend.name, "
                       'status="skipped", error=item.reason))\n', "")),
    mutation("links that lead nowhere skipped silently", "cli",
             (INPUTS, "        if path.suffix.lower() in IMAGE_EXTENSIONS:\n"
                      "            yield _classify(path, inner)",
              "        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():\n"
              "            yield _classify(path, inner)")),
    mutation("existing outputs not skipped", "cli",
             (DENOISE, "if job.target.exists() and not overwrite:", "if False:")),
    mutation("output formats checked only after denoising", "cli",
             (DENOISE, "        if same_format(suffix, job.source.suffix):\n            continue",
              "        continue")),
    mutation("a concurrent run's finished output replaced", "cli",
             (DENOISE, "write_image(job.target, pixels, replace=overwrite, partials=job.partials)",
              "write_image(job.target, pixels, replace=True, partials=job.partials)")),
    mutation("report truncated instead of appended", "cli",
             ("nlfilt/cli/report.py", "os.O_WRONLY | os.O_APPEND | os.O_CREAT",
              "os.O_WRONLY | os.O_CREAT | os.O_TRUNC")),
    mutation("interrupted run exits 1", "cli",
             ("nlfilt/cli/interrupts.py", "return 128 + self.signum", "return 1")),
    # image files
    mutation("alpha written to BMP/JPEG", "io",
             (IMAGES, 'if suffix in (".jpg", ".jpeg", ".bmp") and layout_channels in (2, 4):', "if False:")),
    mutation("float pixels written to PNG/JPEG", "io",
             (IMAGES, 'if dtype.kind == "f" and suffix not in (".tif", ".tiff"):', "if False:")),
    mutation("16-bit pixels written to JPEG/BMP", "io",
             (IMAGES, "if dtype != numpy.uint8 and suffix in _EIGHT_BIT:", "if False:")),
    mutation("integer outputs truncated instead of rounded", "io",
             (IMAGES, "numpy.clip(numpy.rint(values), limits.min, limits.max)",
              "numpy.clip(values, limits.min, limits.max)")),
    mutation("integer outputs not clipped", "io",
             (IMAGES, "return numpy.clip(numpy.rint(values), limits.min, limits.max).astype(dtype)",
              "return numpy.rint(values).astype(dtype)")),
    mutation("partial file left behind on failure", "io",
             (IMAGES, "        Path(temporary).unlink(missing_ok=True)\n", "        pass\n")),
    mutation("outputs keep the temporary file's 0600 mode", "io",
             (IMAGES, "        os.chmod(temporary, _output_mode(path))\n", "")),
    mutation("partial files of live writers removed", "io",
             (IMAGES, 'or _process_alive(int(match["pid"])):', ":")),
    mutation("multi-page TIFF read as one image", "io",
             (IMAGES, "            if pages > 1:\n                imagej = None",
              "            if False:\n                imagej = None")),
    # automatic stopping
    mutation("SURE stops at the first rise (no patience)", "stopping",
             (STOPPING, "len(residual) >= best + max(PATIENCE, math.ceil(best / 4))",
              "len(residual) >= best + 1")),
    mutation("SURE's constant has the wrong sign", "stopping",
             (STOPPING, "return residual - sigma**2 + 2 * sigma**2 * divergence / count",
              "return residual + sigma**2 + 2 * sigma**2 * divergence / count")),
    mutation("SURE's divergence term halved", "stopping",
             (STOPPING, "return residual - sigma**2 + 2 * sigma**2 * divergence / count",
              "return residual - sigma**2 + sigma**2 * divergence / count")),
    mutation("windowed SURE always stops at t = 1", "stopping",
             (STOPPING, "chosen = chooser.choose(residual, divergence, sigma, count, final=step == "
                        "max_iterations)", "chosen = 1")),
    mutation("global (Krylov) SURE always stops at t = 1", "stopping",
             (STOPPING, "chosen = chooser.choose(residual, divergence, sigma, count, final) if horizon "
                        "else None", "chosen = 1")),
    mutation("discrepancy takes the last step below sigma^2", "stopping",
             (STOPPING, "return int(below[0]) + 1", "return int(below[-1]) + 1")),
    # noise estimate
    mutation("noise estimate: saturated blocks not skipped", "noise",
             (NOISE, "usable = mostly_varied & (at_low + at_high <= most)", "usable = mostly_varied")),
    mutation("noise estimate: no correction for partly clipped blocks", "noise",
             (NOISE, "kept = (magnitudes[chosen] / factors[:, None])[varied[chosen]]",
              "kept = magnitudes[chosen][varied[chosen]]")),
    mutation("noise estimate: runs of equal values kept", "noise",
             (NOISE, "varied = ~blocks(constant)", "varied = ~blocks(constant) | True")),
    # operators
    mutation("global mode: mirrored pairs of later tiles dropped", "operators",
             (OPERATORS, "out[stop:] += off.T @ vectors[start:stop]",
              "out[stop:] += (off.T @ vectors[start:stop]) * (start == 0)")),
    # stacks as a series (added 2026-12-06)
    mutation("series: the search stops following motion (array code)", "series",
             (COLLABORATIVE, "centre = (top, left) if slot < 3 else centres[slot - 2][2:]",
              "centre = (top, left)")),
    mutation("series: the search stops following motion (compiled)", "series",
             (JIT_GROUPS, "                if slot < 3:\n                    centre_rows[slot] = top",
              "                if True:\n                    centre_rows[slot] = top")),
    mutation("series: windows read no context frames", "series",
             (SERIES, "    context = 2 * reach\n", "    context = 0\n")),
    mutation("series: bands of a large window read no context rows", "series",
             (SERIES, "BAND_HALO = -(-(2 * (max(RADIUS, REACH * FOLLOW) + PATCH) + PATCH) // STEP) * STEP",
              "BAND_HALO = 0")),
    # volumes of cubes (added 2026-12-06)
    mutation("volume: the compiled cube search stays in the reference's slices", "volume",
             (JIT_GROUPS, "            for dz in range(-reach[0], reach[0] + 1):",
              "            for dz in range(0, 1):")),
    mutation("volume: the reference step not shortened with the cubes", "volume",
             (VOLUME, "    step = tuple(min(every, side) for every, side in zip(STEP, cube, strict=True))",
              "    step = STEP")),
    mutation("volume: the voxel spacing ignored", "volume",
             (VOLUME, "    ratio = max(1.0, depth / ((rows + cols) / 2))", "    ratio = 1.0")),
    # video files (added 2026-12-06)
    mutation("video: frames renumbered instead of keeping their time stamps", "video",
             (VIDEO, "        frame.pts, frame.time_base = pts, stream.time_base",
              "        frame.pts, frame.time_base = written, stream.time_base")),
    mutation("video: copied packets dropped", "video",
             (VIDEO, "        packet.stream = copies[packet.stream_index]\n        output.mux(packet)",
              "        packet.stream = copies[packet.stream_index]")),
    mutation("video: clipped blocks not left out of the noise level", "video",
             (VIDEO, "CLIP_MARGINS = (2.0, 1.0, 0.5)", "CLIP_MARGINS = ()")),
    mutation("video: the colour range not passed to the conversion back", "video",
             (VIDEO, "dst_color_range=colour_range or None, ", "")),
    mutation("napari: the new layer does not keep the source's scale", "napari",
             (NAPARI_WIDGET, '"rgb": layer.rgb, "scale": layer.scale, ', '"rgb": layer.rgb, ')),
    mutation("napari: alpha filtered away instead of copied", "napari",
             (NAPARI_WORK, "    if job.rgb and pixels.shape[-1] == 4:\n        result = numpy.concatenate",
              "    if False:\n        result = numpy.concatenate")),
    mutation("napari: cancel not checked", "napari",
             (NAPARI_WORK, "if cancelled is not None and cancelled():", "if False:")),
    mutation("napari: dask layers computed at once", "napari",
             (NAPARI_WORK, "        lazy = _is_dask(data) and", "        lazy = False and")),
    mutation("napari: the layer's scale not passed as a volume's spacing", "napari",
             (NAPARI_WORK, 'if mode == "volume" and whole and scale is not None else None',
              "if False else None")),
]


def copy_checkout(destination: Path) -> Path:
    """Copy the checkout's tracked and untracked (not ignored) files; link the data folder beside it."""
    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                             capture_output=True).stdout.decode().split("\0")
    repo = destination / "repo"
    for name in filter(None, listing):
        source = ROOT / name
        if source.is_file():
            target = repo / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (destination / "shared").symlink_to(shared)
    return repo


def run_tests(repo: Path, tests: list[str]) -> tuple[bool, float, str]:
    """(passed, seconds, last line) of ``pytest -x`` on the copy."""
    environment = dict(os.environ, PYTHONPATH=str(repo), PYTHONDONTWRITEBYTECODE="1")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                          cwd=repo, env=environment, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    failed = [line.split(" - ")[0] for line in lines if line.startswith(("FAILED", "ERROR"))]
    summary = failed[0] if failed else (lines[-1] if lines else done.stderr[-200:])
    return done.returncode == 0, time.perf_counter() - started, summary


def apply(repo: Path, item: Mutation) -> dict[Path, str] | str:
    """Apply the edits; return the original texts, or the reason the mutation is stale."""
    originals: dict[Path, str] = {}
    for name, old, new in item.edits:
        path = repo / name
        text = originals.get(path, path.read_text())
        originals.setdefault(path, text)
        current = path.read_text()
        if current.count(old) != 1:
            for original_path, original in originals.items():
                original_path.write_text(original)
            return f"text to replace found {current.count(old)} times in {name}"
        path.write_text(current.replace(old, new))
    return originals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="mutations whose name contains one of these")
    parser.add_argument("--tests", nargs="*", default=["tests"], help="pytest targets (default: tests)")
    parser.add_argument("--write", action="store_true", help="write the table to benchmarks/results/")
    args = parser.parse_args()
    chosen = [item for item in MUTATIONS
              if args.only is None or any(word in item.name for word in args.only)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="nlfilt-mutations-") as folder:
        repo = copy_checkout(Path(folder))
        passed, seconds, summary = run_tests(repo, args.tests)
        state = "passes" if passed else "FAILS"
        print(f"unmutated suite: {state} in {seconds:.0f} s ({summary})", flush=True)
        if not passed:
            sys.exit("the unmutated suite must pass first")
        for item in chosen:
            originals = apply(repo, item)
            if isinstance(originals, str):
                rows.append((item, "stale", 0.0, originals))
                print(f"STALE   {item.name}: {originals}", flush=True)
                continue
            try:
                survived, seconds, summary = run_tests(repo, args.tests)
            finally:
                for path, text in originals.items():
                    path.write_text(text)
            verdict = "missed" if survived else "caught"
            rows.append((item, verdict, seconds, summary))
            print(f"{verdict.upper():7} {item.name} ({seconds:.0f} s): {summary}", flush=True)
    caught = sum(verdict == "caught" for _, verdict, _, _ in rows)
    table = [
        "# Mutation check",
        "",
        machine("mutation_check.py"),
        "",
        f"Each bug is planted alone in a copy of the checkout and `pytest -x {' '.join(args.tests)}` is run: "
        f"**{caught} of {len(rows)} caught**.",
        "",
        "| area | planted bug | result | seconds | first failure or summary |",
        "| --- | --- | --- | --- | --- |",
    ]
    for item, verdict, seconds, summary in rows:
        summary = summary.replace("|", "/")
        table.append(f"| {item.area} | {item.name} | {verdict} | {seconds:.0f} | {summary} |")
    text = "\n".join(table) + "\n"
    print(text)
    if args.write:
        write("mutations.md", text)
    if caught != len(rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
