"""``nlfilt denoise``: files and folders, safe batches, progress and a JSON-lines report."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click
import numpy
from tqdm import tqdm

import nlfilt
from nlfilt.backend import get_backend
from nlfilt.cli.options import (
    api_options,
    check_options,
    filter_options,
    resolve_for_image,
    stopping_options,
)
from nlfilt.images import IMAGE_EXTENSIONS, ImageError, read_image, write_image


@dataclass
class Job:
    """One input file and the output path it is written to."""

    source: Path
    target: Path


def expand_inputs(inputs: tuple[Path, ...], recursive: bool) -> list[tuple[Path, Path]]:
    """(file, path relative to its input) for every file named or found in a named folder."""
    found = []
    for item in inputs:
        if item.is_dir():
            pattern = "**/*" if recursive else "*"
            for path in sorted(item.glob(pattern)):
                hidden = any(part.startswith(".") for part in path.relative_to(item).parts)
                if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not hidden:
                    found.append((path, path.relative_to(item)))
        else:
            found.append((item, Path(item.name)))
    return found


def plan_jobs(inputs: tuple[Path, ...], output: Path, recursive: bool) -> list[Job]:
    """Map inputs to outputs; raise click.UsageError for an impossible or unsafe plan."""
    files = expand_inputs(inputs, recursive)
    single_file = len(inputs) == 1 and not inputs[0].is_dir()
    to_folder = not single_file or output.is_dir() or str(output).endswith(("/", "\\")) or not output.suffix
    if to_folder and output.exists() and not output.is_dir():
        raise click.UsageError(f"output {output} is a file; several inputs or a folder need an output folder")
    jobs = [Job(source, output / relative if to_folder else output) for source, relative in files]
    sources = {job.source.resolve() for job in jobs}
    seen: dict[Path, Path] = {}
    for job in jobs:
        target = job.target.resolve()
        if target in sources:
            raise click.UsageError(f"output {job.target} is the input file {job.source}; refusing to "
                                   "overwrite an input: choose another output")
        if target in seen:
            raise click.UsageError(f"inputs {seen[target]} and {job.source} would both be written to "
                                   f"{job.target}")
        seen[target] = job.source
    return jobs


@click.command("denoise")
@click.argument("inputs", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path, readable=True))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output file (one input file) or folder (created if missing).")
@filter_options
@stopping_options
@click.option("--recursive", is_flag=True, help="Descend into sub-folders and mirror them under OUTPUT.")
@click.option("--overwrite", is_flag=True, help="Replace outputs that exist (by default they are skipped).")
@click.option("--max-minutes", type=float, default=10.0, show_default=True,
              help="Refuse an image whose estimated CPU time exceeds this (0: no limit).")
@click.option("--report", "report_path", type=click.Path(path_type=Path, allow_dash=True), default=None,
              help="Write one JSON line per input to this file ('-' for stdout).")
@click.option("--quiet", is_flag=True, help="No progress bars and no messages except errors.")
def denoise_command(inputs: tuple[Path, ...], output: Path, recursive: bool, overwrite: bool,
                    max_minutes: float, report_path: Path | None, quiet: bool, **filter_params: Any) -> None:
    """Denoise image files and folders of images.

    INPUTS are files and folders (a folder means every PNG, TIFF, JPEG or BMP
    file in it).  Outputs keep each input's dtype, bit depth and channel
    layout; alpha is copied unfiltered.  Existing outputs are skipped unless
    --overwrite, so an interrupted batch resumes where it stopped.  Exit status
    1 when any file failed, 2 for a usage error.
    """
    options = api_options(filter_params)
    check_options(options)
    try:
        backend = get_backend(options["device"])
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    jobs = plan_jobs(inputs, output, recursive)
    if not jobs:
        raise click.UsageError("no image files found in the inputs")
    counts = {"denoised": 0, "failed": 0, "skipped": 0}
    report = _open_report(report_path)
    bar = tqdm(jobs, desc="images", unit="image", disable=quiet or len(jobs) < 2, file=sys.stderr,
               dynamic_ncols=True)
    try:
        for job in bar:
            entry = _run_job(job, options, backend.name, overwrite, max_minutes, quiet)
            counts[entry["status"]] += 1
            if entry["status"] == "failed":
                tqdm.write(f"error: {job.source}: {entry['error']}", file=sys.stderr)
            if report is not None:
                report.write(json.dumps(entry) + "\n")
                report.flush()
    finally:
        bar.close()
        if report is not None and report is not sys.stdout:
            report.close()
    if not quiet or counts["failed"]:
        click.echo(f"{counts['denoised']} denoised, {counts['failed']} failed, {counts['skipped']} skipped",
                   err=True)
    if counts["failed"]:
        sys.exit(1)


def _open_report(path: Path | None) -> IO[str] | None:
    if path is None:
        return None
    if str(path) == "-":
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot write {path}: {exc.strerror}", param_hint="--report") from None


def _run_job(job: Job, options: dict[str, Any], device: str, overwrite: bool, max_minutes: float,
             quiet: bool) -> dict[str, Any]:
    """Denoise one file; return its report entry (never raises for a bad file)."""
    entry: dict[str, Any] = {"input": str(job.source), "output": str(job.target), "status": "denoised",
                             "error": None, "sigma": None, "iterations": None, "pilot_iterations": None,
                             "seconds": None, "device": device}
    if job.target.exists() and not overwrite:
        entry["status"] = "skipped"
        entry["error"] = "output exists (use --overwrite to replace it)"
        return entry
    started = time.perf_counter()
    try:
        image = read_image(job.source)
        colour = image.colour.astype(numpy.float64 if image.dtype.itemsize > 4 else numpy.float32)
        resolved, call = resolve_for_image(colour, options, max_minutes)
        entry["sigma"] = resolved.sigma
        progress = _iteration_bar(job.source.name, options["iterations"], quiet)
        try:
            result, info = nlfilt.denoise(colour, progress=progress, return_info=True, **call)
        finally:
            if progress is not None:
                progress.close()
        entry["iterations"] = info.iterations
        entry["pilot_iterations"] = info.pilot_iterations
        result = result.get() if hasattr(result, "get") else result
        job.target.parent.mkdir(parents=True, exist_ok=True)
        write_image(job.target, image.assemble(result))
    except (ImageError, ValueError, MemoryError, OSError) as exc:
        entry["status"] = "failed"
        entry["error"] = _message(exc)
    entry["seconds"] = round(time.perf_counter() - started, 3)
    return entry


class _IterationBar:
    """A tqdm bar over twicing steps, as a progress callback (a counter when the total is not known)."""

    def __init__(self, name: str, total: int | None) -> None:
        self.bar = tqdm(total=total, desc=name, unit="step", leave=False, file=sys.stderr, dynamic_ncols=True)

    def __call__(self, done: int, total: int) -> None:
        if done < self.bar.n:  # the second pass of --guide pilot counts from 1 again
            self.bar.reset()
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _iteration_bar(name: str, iterations: int | str, quiet: bool) -> _IterationBar | None:
    if quiet or iterations == 1:
        return None
    return _IterationBar(name, None if iterations == "auto" else iterations)


def _message(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "out of memory; use a smaller --window or --device gpu"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc)
