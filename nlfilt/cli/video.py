"""Video files on the command line: one input decoded, filtered as a stream of frames and encoded
(:mod:`nlfilt.video`), with the time and memory checks, progress in frames and the report's fields."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from nlfilt.cli.inputs import Job
from nlfilt.cli.options import RunOptions, check_plan
from nlfilt.cli.progress import Deadline, product_bar
from nlfilt.methods import method
from nlfilt.series import stream_windows
from nlfilt.video import denoise_video, luminance_noise, noise_level, read_video_header


def video_mode(run: RunOptions) -> str:
    """How a video is filtered (:meth:`RunOptions.stack_mode`: a series by default); ValueError for
    'volume'."""
    mode = run.stack_mode(ordered=True)
    if mode == "volume":
        raise ValueError("--stack volume: a video is filtered as a series (--stack series, its default) or "
                         "frame by frame (--stack frames)")
    return mode


def filter_video_job(job: Job, run: RunOptions, device: str, overwrite: bool, max_minutes: float, quiet: bool,
                     watch: Callable[[Any], Callable[[float, int], None]] | None) -> dict[str, Any]:
    """Denoise the video ``job.source`` into ``job.target``; the report fields it adds (sigma, frames,
    the encode).  Raises what :func:`nlfilt.cli.denoise._filter_job` reports as a failure (ImageError,
    ValueError, OverTime, ...), and Interrupted."""
    header = read_video_header(job.source)
    chosen = method(run.method)
    series = video_mode(run) == "series"
    count = header.frames
    if series:
        shape, calls = stream_windows(max(count, 1), header.height, header.width, header.channels)
    else:
        shape, calls = (header.height, header.width, header.channels), max(count, 1)
    plan = run.plan(shape, header.dtype, device)
    if plan.sigma is None:  # one level for the whole video, from its first frames
        plan = dataclasses.replace(plan, sigma=noise_level(job.source))
    if luminance_noise(header) and plan.options.get("declip"):  # see luminance_noise
        plan = plan.with_settings(declip=False)
    colour = "gray" if header.gray else "colour"
    subject = f"a video of {count or 'an unknown number of'} {header.width}x{header.height} {colour} frames"
    smaller = "use --stack frames (one frame at a time) or crop the frames" if series else "crop the frames"
    check_plan(shape, plan, max_minutes, frames=calls, held=0, subject=subject, smaller=smaller)
    bar = product_bar(job.source.name, quiet, unit="frames")
    progress = _forward_only(bar if watch is None else watch(bar))
    if max_minutes > 0:  # the estimate may be low: a run is stopped at twice the limit
        progress = Deadline(2 * 60 * max_minutes, f"twice --max-minutes {max_minutes:g}", progress)
    filter_frames = functools.partial(chosen.denoise_frames, plan=plan, series=series, count=count,
                                      progress=progress)
    try:
        job.target.parent.mkdir(parents=True, exist_ok=True)
        written = denoise_video(job.source, job.target, filter_frames, lossless=run.lossless,
                                replace=overwrite, partials=job.partials, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    return {"sigma": plan.sigma, "frames": written.frames,
            "stack": "series" if series else "frames",
            "encode": f"{written.codec} {written.pixel_format}" + (" lossless" if written.lossless else "")}


def _forward_only(progress: Callable[[float, int], None] | None) -> Callable[[float, int], None] | None:
    """``progress`` never shown going back: the filter's steps and the frames written report in turn."""
    if progress is None:
        return None
    last = [0.0]

    def report(done: float, total: int) -> None:
        last[0] = max(last[0], done)
        progress(last[0], max(total, int(last[0])))
    return report
