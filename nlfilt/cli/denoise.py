"""``nlfilt denoise``: files and folders, safe batches, progress and a JSON-lines report."""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import numpy
from tqdm import tqdm

import nlfilt
from nlfilt.backend import CUPY_MISSING, get_backend, gpu_status
from nlfilt.cli.cluster import Scheduler, SchedulerType, connect, import_distributed, run_batch
from nlfilt.cli.inputs import Job, passed_over_summary, plan_jobs
from nlfilt.cli.interrupts import Interrupted, signals_interrupt
from nlfilt.cli.options import (
    RunOptions,
    check_device,
    check_plan,
    filter_options,
    method_option,
    stopping_options,
)
from nlfilt.cli.progress import Deadline, OverTime, make_bar, product_bar
from nlfilt.cli.report import Report
from nlfilt.cli.stream import should_stream, stream_tiff
from nlfilt.cli.video import filter_video_job, video_mode
from nlfilt.images import (
    IMAGE_EXTENSIONS,
    ImageError,
    OutputExists,
    Stack,
    folder_problem,
    make_partials_folder,
    read_header,
    read_image,
    remove_partials_folder,
    remove_stale_partials,
    same_format,
    storage_problem,
    write_image,
)
from nlfilt.methods import method
from nlfilt.methods.base import frame_progress
from nlfilt.noise import sigma_mismatch
from nlfilt.video import VIDEO_OUTPUTS, is_video

#: What filtering one file may raise that is the file's or the settings' problem, not a bug: reported per
#: file with :func:`error_message` (CuPy's and CUDA's errors with :func:`gpu_failure`).
FILE_ERRORS = (ImageError, ValueError, MemoryError, OSError, OverTime)


def check_jobs(jobs: list[Job], run: RunOptions) -> None:
    """Raise click.UsageError for what would fail only after denoising: an output format that is
    unknown or cannot store its input's pixels, a video in a mode it cannot be filtered in, or an
    output folder that cannot be written.

    Inputs whose header cannot be read are left to fail (with the reason) at their turn.
    """
    for job in jobs:
        suffix = job.target.suffix
        if is_video(job.source):
            try:
                video_mode(run)
            except ValueError as exc:
                raise click.UsageError(f"{job.source}: {exc}") from None
            if suffix.lower() not in VIDEO_OUTPUTS:
                raise click.UsageError(f"output {job.target}: a video is written as "
                                       f"{' or '.join(VIDEO_OUTPUTS)}, not '{suffix or job.target.name}'")
            continue
        if suffix.lower() in VIDEO_OUTPUTS:
            raise click.UsageError(f"output {job.target}: {job.source} is an image, not a video; write it as "
                                   "an image (PNG, TIFF, ...)")
        if suffix.lower() not in IMAGE_EXTENSIONS:
            raise click.UsageError(f"output {job.target}: {storage_problem(suffix, numpy.uint8, 0)}")
        if same_format(suffix, job.source.suffix):
            continue  # read in this format (a stack only from TIFF), so it can be written back in it
        try:
            header = read_header(job.source)
        except ImageError:
            continue
        problem = storage_problem(suffix, header.dtype, header.layout_channels, header.frames)
        if problem:
            raise click.UsageError(f"output {job.target} cannot hold {job.source} "
                                   f"({header.dtype}, {header.shape}): {problem}")
    for folder in sorted({job.target.parent for job in jobs}):
        problem = folder_problem(folder)
        if problem:
            raise click.UsageError(f"output folder {folder}: {problem}")


@click.command("denoise", short_help="Denoise images and folders (collaborative by default).")
@click.argument("inputs", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path, readable=True))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output file (one input file) or folder (created if missing).")
@method_option
@filter_options
@stopping_options
@click.option("--declip/--no-declip", default=True, show_default=True,
              help="Collaborative method: where noise was clipped to the file's range (a channel's "
                   "smallest or largest value held by 0.1 % of its pixels or more, as in 8-bit photos), "
                   "map the estimates near it, means of clipped values, back to the clean values.")
@click.option("--recursive", is_flag=True,
              help="Descend into sub-folders and mirror them under OUTPUT (links to folders are not "
                   "followed).")
@click.option("--overwrite", is_flag=True, help="Replace outputs that exist (by default they are skipped).")
@click.option("--max-minutes", type=float, default=10.0, show_default=True,
              help="Refuse an image whose estimated CPU time exceeds this many minutes, and stop one "
                   "that runs over twice as long (0: no limit).")
@click.option("--report", "report_path", type=click.Path(path_type=Path, allow_dash=True), default=None,
              help="Append a line for the run and one JSON line per input to this file (its folder "
                   "created if missing; '-' for stdout).")
@click.option("--quiet", is_flag=True, help="No progress and no messages except errors (progress: a bar on a "
                                            "terminal, else a plain line every 30 s).")
@click.option("--stack", type=click.Choice(["auto", "frames", "series", "volume"]), default="auto",
              show_default=True,
              help="Multi-page TIFF inputs (written back as a stack of the same pages, dtype and "
                   "metadata) and videos: 'frames' filters each page or frame as its own 2-D image; "
                   "'series' filters them as frames in order (a time series, a video, slices) with the "
                   "default method, each group drawn from its frame and the 4 frames before and after, "
                   "following motion; 'volume' filters a TIFF stack as one volume: with the default "
                   "method groups of 4x4x4 cubes (BM4D's scheme; shorter along Z where the file's voxel "
                   "spacing says the slices lie further apart), with --method filter the 3-D NLM filter "
                   "(--patch and --window may then be boxes "
                   "Z,H,W); 'auto': series for videos and for TIFFs whose one frame axis is time or depth "
                   "(ImageJ or OME axes T or Z), frames for other stacks.")
@click.option("--lossless", is_flag=True,
              help="Encode video outputs losslessly (FFV1 in .mkv, lossless H.264 in .mp4) even when the "
                   "input video is lossy (a lossless input always is).")
@click.option("--chunk", type=click.IntRange(min=0), default=0,
              help="Read TIFF inputs in chunks of N x N pixels (rounded up to 256) and write tiled "
                   "BigTIFF, never holding the image whole. [default: 0: only TIFFs over 8192 x 8192 "
                   "pixels, in chunks of 2048]")
@click.option("--scheduler", type=SchedulerType(), default=None,
              help="Run each file as a task on a dask.distributed cluster: a scheduler's address "
                   "(tcp://host:8786), local:N (N local worker processes, for this run) or local-cuda (one "
                   "worker per GPU, dask-cuda). Workers read and write the files themselves: use paths they "
                   "share. Needs nlfilt[dask].")
def denoise_command(inputs: tuple[Path, ...], output: Path, recursive: bool, overwrite: bool,
                    max_minutes: float, report_path: Path | None, quiet: bool, stack: str, chunk: int,
                    lossless: bool, scheduler: Scheduler | None, **filter_params: Any) -> None:
    """Denoise image files and folders of images.

    INPUTS are files and folders (a folder means every PNG, TIFF, JPEG, BMP,
    WebP and video file in it; a multi-page TIFF is a stack, see --stack).
    Videos (MP4, MKV, MOV, AVI, WebM; needs nlfilt[video]) are written as
    .mkv or .mp4 (in a folder: .mkv unless .mp4) with the same frames, time
    stamps and colour range, their audio and subtitles copied; see
    --lossless.  A file
    named twice is denoised once; a name that cannot be read (a dangling link,
    a link loop) is reported as skipped with the reason.  Outputs
    keep each input's dtype, bit depth and channel layout; alpha is copied
    unfiltered.  Existing outputs are skipped unless
    --overwrite, so an interrupted batch resumes where it stopped.  Outputs are
    written on background threads while the next file is filtered, or, with
    --scheduler, each file is a task on a dask cluster.  Exit status 1 when any
    file failed, 2 for a usage error, 130 (Ctrl-C) or 143 (SIGTERM) when
    interrupted.

    \b
    Methods:
      collaborative (the default)  two-stage filter of grouped patches;
                                   of the filter's options it takes --sigma
                                   and --device only; with --stack series
                                   groups span neighbouring pages
      filter                       one non-local filter W with twicing, set by
                                   --kernel ... --guide; giving one of those
                                   (or --stack volume) without --method
                                   selects it
    """
    run = RunOptions.from_params(filter_params, stack=stack, chunk=chunk, lossless=lossless)
    if scheduler is not None:
        import_distributed()  # a usage error now, before any work, when the extra is missing
    check_device(run.device)
    backend = get_backend(run.device)
    jobs, passed_over = plan_jobs(inputs, output, recursive)
    if not jobs and not passed_over:
        raise click.UsageError("no image files found in the inputs")
    check_jobs(jobs, run)
    if run.device == "auto" and backend.name == "cpu" and not quiet and scheduler is None:
        usable, reason = gpu_status()
        if not reason.startswith(CUPY_MISSING):  # a GPU was meant to be there
            click.echo(f"notice: computing on the CPU; the GPU cannot be used: {reason}", err=True)
    folders = {job.target.parent for job in jobs}
    for folder in folders:
        remove_stale_partials(folder)
    report = Report(report_path)
    report.header(nlfilt.__version__, "denoise", inputs, output,
                  dict(run.described(), recursive=recursive, overwrite=overwrite, max_minutes=max_minutes,
                       chunk=chunk, lossless=lossless,
                       scheduler=None if scheduler is None else str(scheduler)))
    counts = {"denoised": 0, "failed": 0, "skipped": len(passed_over)}
    for item in passed_over:
        if not quiet:
            click.echo(f"skipped: {item.source}: {item.reason}", err=True)
        report.write(_entry(Job(item.source, item.target), backend.name, status="skipped", error=item.reason))
    bar = make_bar(len(jobs), "images", "image", disable=quiet or len(jobs) < 2)

    def record(entry: dict[str, Any]) -> None:
        counts[entry["status"]] += 1
        if entry["status"] == "failed":
            tqdm.write(f"error: {entry['input']}: {entry['error']}", file=sys.stderr)
        if entry.get("warning") and not quiet:
            tqdm.write(f"warning: {entry['input']}: {entry['warning']}", file=sys.stderr)
        report.write(entry)
        if bar is not None:
            bar.update(1)

    def mark_interrupted(job: Job, signal_received: Interrupted, detail: str = "") -> None:
        report.write(_entry(job, backend.name, status="interrupted",
                            error=f"{signal_received} received{detail}"))

    interrupted = None  # and nothing to run when every input was passed over
    try:
        if jobs and scheduler is None:
            interrupted = _run_here(jobs, run, backend.name, overwrite, max_minutes, quiet, record,
                                    mark_interrupted)
        elif jobs:
            interrupted = _run_on_cluster(scheduler, jobs, run, overwrite, max_minutes, record,
                                          mark_interrupted)
    finally:
        if bar is not None:
            bar.close()
        report.close()
    summary = f"{counts['denoised']} denoised, {counts['failed']} failed, {counts['skipped']} skipped"
    notes = [f"passed over: {passed_over_summary(passed_over)}"] if passed_over else []
    if interrupted is not None:
        summary += f" ({notes[0]})" if notes else ""
        click.echo(f"{summary}; interrupted by {interrupted}", err=True)
        sys.exit(interrupted.exit_status)
    if counts["skipped"] > len(passed_over) and not overwrite:
        notes.append("outputs that exist are kept; --overwrite replaces them")
    if notes:
        summary += f" ({'; '.join(notes)})"
    if not quiet or counts["failed"]:
        click.echo(summary, err=True)
    if counts["failed"]:
        sys.exit(1)


def _run_here(jobs: list[Job], run: RunOptions, device: str, overwrite: bool, max_minutes: float,
              quiet: bool, record: Callable[[dict[str, Any]], None],
              mark_interrupted: Callable[..., None]) -> Interrupted | None:
    """The batch in this process (outputs written on background threads); the signal that stopped it,
    or None."""
    writer = OutputWriter(overwrite, record)
    current: Job | None = None  # the file not yet handed to the writer
    try:
        with signals_interrupt() as gate:
            try:
                for job in jobs:
                    current = job
                    gate.check()
                    entry, pixels = _filter_job(job, run, device, overwrite, max_minutes, quiet, gate.watch)
                    writer.submit(job, entry, pixels)
                    current = None
                writer.drain()
                gate.check()
            except (Interrupted, KeyboardInterrupt) as exc:
                interrupted = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
                writer.drain()  # outputs already filtered are finished and reported, not lost
                if current is not None:
                    mark_interrupted(current, interrupted)
                return interrupted
    finally:
        writer.close()  # writes under way complete (each is atomic) before the process ends
    return None


def _run_on_cluster(scheduler: Scheduler, jobs: list[Job], run: RunOptions, overwrite: bool,
                    max_minutes: float, record: Callable[[dict[str, Any]], None],
                    mark_interrupted: Callable[[Job, Interrupted, str], None]) -> Interrupted | None:
    """The batch as tasks on a dask cluster (:mod:`nlfilt.cli.cluster`); the signal that stopped it, or
    None.  Every file not finished when a signal comes gets an 'interrupted' report line, written once
    a local cluster has stopped, saying whether a worker still completed its output.

    Workers write their partial files in the run's partials folders (one per
    output folder), removed here at the end with whatever a worker that died,
    or is dying, left or still writes in them; but after a signal, when tasks
    may still run on a remote cluster, they are left for those tasks to
    finish their files into, and the next run on this host removes them.
    """
    existed = {job.target for job in jobs if job.target.exists()}
    interrupted, unfinished = None, []
    partials: dict[Path, Path] = {}
    try:
        for folder in sorted({job.target.parent for job in jobs}):
            partials[folder] = make_partials_folder(folder)
    except OSError as exc:
        for made in partials.values():
            remove_partials_folder(made)
        raise click.ClickException(f"cannot create a folder for partial outputs in {folder}: "
                                   f"{exc.strerror}") from None
    jobs = [replace(job, partials=partials[job.target.parent]) for job in jobs]
    try:
        with connect(scheduler) as client, signals_interrupt() as gate:
            try:
                arguments = (run, overwrite, max_minutes)
                run_batch(client, jobs, cluster_job, arguments, record, gate.check)
            except (Interrupted, KeyboardInterrupt) as exc:
                interrupted = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
                unfinished = getattr(exc, "unfinished", [])
    finally:
        if interrupted is None or scheduler.kind != "address":
            for folder in partials.values():
                remove_partials_folder(folder)
    for job in unfinished:
        done = job.target not in existed and job.target.exists()
        detail = "; a worker had already started it and wrote its output" if done else ""
        mark_interrupted(job, interrupted, detail)
    return interrupted


def cluster_job(job: Job, run: RunOptions, overwrite: bool, max_minutes: float) -> dict[str, Any]:
    """One file on a dask worker: read, filter, write; its report entry (never raises for a bad file)."""
    try:
        device = get_backend(run.device).name
    except RuntimeError:  # --device gpu on a worker without one
        return _entry(job, run.device, status="failed",
                      error=f"--device gpu: no GPU is usable on this worker: {gpu_status()[1]}")
    entry, pixels = _filter_job(job, run, device, overwrite, max_minutes, quiet=True)
    return entry if pixels is None else _write_job(job, entry, pixels, overwrite)


def _entry(job: Job, device: str, **fields: Any) -> dict[str, Any]:
    """A report entry for ``job`` with every field present."""
    entry: dict[str, Any] = {"input": str(job.source), "output": str(job.target), "status": "denoised",
                             "error": None, "warning": None, "sigma": None, "seconds": None,
                             "device": device}
    entry.update(fields)
    return entry


def _filter_job(job: Job, run: RunOptions, device: str, overwrite: bool, max_minutes: float, quiet: bool,
                watch: Callable[[Any], Callable[[float, int], None]] | None = None
                ) -> tuple[dict[str, Any], Any]:
    """Read and denoise one file: (its report entry, the output pixels to write, or None when the
    entry is already final: skipped or failed).  Never raises for a bad file.  ``watch`` wraps the
    progress callback (:meth:`nlfilt.cli.interrupts.SignalGate.watch`: a signal stops the filter at its
    next progress report).

    The file's plan is built from its header, and the file refused from it
    (size, cost, memory), before its pixels are decoded.
    """
    entry = _entry(job, device)
    if job.target.exists() and not overwrite:
        entry["status"] = "skipped"
        entry["error"] = "output exists (use --overwrite to replace it)"
        return entry, None
    started = time.perf_counter()
    pixels = None
    try:
        if is_video(job.source):  # decoded, filtered and encoded as a stream, written here
            entry.update(filter_video_job(job, run, device, overwrite, max_minutes, quiet, watch))
            entry["seconds"] = round(time.perf_counter() - started, 3)
            return entry, None
        header = read_header(job.source)
        chosen = method(run.method)
        streamed = chosen.streams and should_stream(job.source, header, run.chunk)  # in chunks
        frames = max(1, header.frames)
        mode = run.stack_mode(ordered=header.stack is not None and header.stack.ordered)
        whole = bool(header.frames) and mode in chosen.stacks  # a volume, or a series
        shape = header.colour_shape
        if whole:  # one filter of the stack: its cost is that of a (Z, H, W, C) array
            shape = (frames, *shape[:2], shape[2] if len(shape) == 3 else 1)
        plan = run.plan(shape, header.dtype, device, stack=mode if whole else None,
                        spacing=header.stack.voxel_spacing if whole else None)
        check_plan(shape, plan, max_minutes, streamed=streamed, frames=1 if whole else frames)
        image = None if streamed else read_image(job.source, header, stacks=True)
        if image is not None and plan.sigma is not None:
            first = image.colour[0] if header.frames else image.colour  # a stack: its first frame
            entry["warning"] = _sigma_warning(first, plan.sigma, header.dtype)
        unit = ("bands of rows" if streamed else "frames" if header.frames and not whole
                else chosen.progress_unit)
        bar = product_bar(job.source.name, quiet, unit=unit)
        progress = bar if watch is None else watch(bar)
        if max_minutes > 0:  # the estimate may be low: a run is stopped at twice the limit
            progress = Deadline(2 * 60 * max_minutes, f"twice --max-minutes {max_minutes:g}", progress)
        try:
            if streamed:
                job.target.parent.mkdir(parents=True, exist_ok=True)
                entry["sigma"] = stream_tiff(job.source, job.target, header, plan, run.chunk, overwrite,
                                             progress, job.partials)
                entry.update(chosen.report(None, plan))
            else:
                colour = image.colour.astype(plan.dtype)
                if whole:  # the stack as one (Z, H, W, C) array
                    result, info = chosen.denoise(colour.reshape(*colour.shape[:3], -1), plan, progress)
                    result = result.reshape(colour.shape)
                    infos = [info]
                    entry["frames"] = frames
                    entry["stack"] = mode
                elif header.frames:  # each frame its own image, the bar counting frames
                    results, infos = [], []
                    for index, frame in enumerate(colour):
                        within = None if progress is None else frame_progress(progress, index, frames)
                        result, info = chosen.denoise(frame, plan, within)
                        results.append(result)
                        infos.append(info)
                    result = numpy.stack(results)
                    entry["frames"] = frames
                    entry["stack"] = "frames"
                else:
                    result, info = chosen.denoise(colour, plan, progress)
                    infos = [info]
                sigmas = [item.sigma for item in infos if item.sigma is not None]
                entry["sigma"] = float(numpy.median(sigmas)) if sigmas else None
                fields = [chosen.report(item, plan) for item in infos]
                entry.update({key: fields[0][key] if len(fields) == 1 else [field[key] for field in fields]
                              for key in fields[0]})
                pixels = image.assemble(result)
                if image.stack is not None:
                    pixels = Stack(pixels, image.stack)
        finally:
            if bar is not None:
                bar.close()
    except OutputExists as exc:
        entry["status"] = "skipped"
        entry["error"] = str(exc)
    except FILE_ERRORS as exc:
        entry["status"] = "failed"
        entry["error"] = gpu_failure(exc) or error_message(exc)
    except Exception as exc:  # CUDA and CuPy errors are reported per file; anything else is a bug
        message = gpu_failure(exc)
        if message is None:
            raise
        entry["status"] = "failed"
        entry["error"] = message
    entry["seconds"] = time.perf_counter() - started
    if pixels is None:
        entry["seconds"] = round(entry["seconds"], 3)
    return entry, pixels


def _sigma_warning(colour: Any, sigma: float, dtype: Any) -> str | None:
    """A warning when ``--sigma`` is more than ``SIGMA_MISMATCH`` times away from the noise estimated in
    the pixels ``colour`` (H, W) or (H, W, C), naming both and the pixel units."""
    estimate = sigma_mismatch(numpy, colour if colour.ndim == 3 else colour[:, :, None], sigma)
    if estimate is None:
        return None
    dtype = numpy.dtype(dtype)
    units = (f"{dtype} levels, 0 to {numpy.iinfo(dtype).max}" if dtype.kind in "ui"
             else f"{dtype} values")
    return (f"--sigma {sigma:g} is {max(sigma / estimate, estimate / sigma):.0f} times "
            f"{'above' if sigma > estimate else 'below'} the noise estimated in the image, {estimate:.3g} "
            f"(in its pixel units: {units}); give --sigma in those units or leave it out to estimate it")


def _write_job(job: Job, entry: dict[str, Any], pixels: Any, overwrite: bool) -> dict[str, Any]:
    """Write one output atomically and finish its entry (on a writer thread; never raises for a
    file-system problem)."""
    started = time.perf_counter()
    try:
        job.target.parent.mkdir(parents=True, exist_ok=True)
        write_image(job.target, pixels, replace=overwrite, partials=job.partials)
    except OutputExists as exc:
        entry["status"] = "skipped"
        entry["error"] = str(exc)
    except (ImageError, ValueError, OSError) as exc:
        entry["status"] = "failed"
        entry["error"] = error_message(exc)
    entry["seconds"] = round(entry["seconds"] + time.perf_counter() - started, 3)
    return entry


#: Writer threads of a batch; None: half the host's cores, 2 to 8 (benchmarks/gpu_check.py varies it).
WRITER_THREADS: int | None = None


class OutputWriter:
    """Encodes and writes outputs on background threads while the next file is read and filtered.

    Image encoders (zlib for PNG, the TIFF codecs) release the GIL, and on a
    GPU they take longer than the filter itself (a 512 x 512 PNG: about
    65 ms to encode, a few ms to denoise), so writing in line would leave the
    device idle most of the time.  At most :attr:`threads` + 1 outputs are held
    at once; ``record`` receives each finished entry, in input order.
    """

    def __init__(self, overwrite: bool, record: Callable[[dict[str, Any]], None],
                 threads: int | None = None) -> None:
        self.overwrite = overwrite
        self.record = record
        self.threads = threads or WRITER_THREADS or min(8, max(2, (os.cpu_count() or 1) // 2))
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="nlfilt-writer")
        self._pending: deque[Any] = deque()

    def submit(self, job: Job, entry: dict[str, Any], pixels: Any) -> None:
        """Queue ``job``'s output (``pixels`` None: its entry is final) and record the entries
        finished so far, waiting for the oldest when too many are held."""
        if pixels is None:
            future: Future[dict[str, Any]] = Future()
            future.set_result(entry)
        else:
            future = self._pool.submit(_write_job, job, entry, pixels, self.overwrite)
        self._pending.append(future)
        while self._pending and (self._pending[0].done() or len(self._pending) > self.threads + 1):
            self.record(self._pending.popleft().result())

    def drain(self) -> None:
        """Wait for every queued output and record its entry."""
        while self._pending:
            self.record(self._pending.popleft().result())

    def close(self) -> None:
        """Let the writes under way finish (each is atomic), then stop the threads."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def gpu_failure(exc: BaseException) -> str | None:
    """A message with GPU advice when ``exc`` came from CuPy or CUDA, else None."""
    frames = traceback.extract_tb(exc.__traceback__)
    from_gpu = type(exc).__module__.split(".")[0] in ("cupy", "cupy_backends") or any(
        "/cupy/" in frame.filename or "/cupy_backends/" in frame.filename for frame in frames)
    if not from_gpu:
        return None
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if type(exc).__name__ == "OutOfMemoryError":
        return f"GPU out of memory ({text}); lower --memory-budget, crop the image, or use --device cpu"
    if isinstance(exc, PermissionError):
        return (f"CuPy cannot write its kernel cache ({exc.strerror}: {exc.filename}); set CUPY_CACHE_DIR "
                "to a writable folder, or use --device cpu")
    return f"GPU error ({type(exc).__name__}: {text}); use --device cpu to run on the CPU"


def error_message(exc: BaseException) -> str:
    """The message of one of :data:`FILE_ERRORS` (or an OSError of writing) for a user."""
    if isinstance(exc, MemoryError):
        return "out of memory; crop the image or split it into tiles"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc)
