"""Batches on dask: parallel efficiency of a local cluster and the scheduling overhead per task.

Writes 100 noisy 512x512 gray PNG images, then times the batch's per-file work
(read, windowed NLM ``--method filter`` with patch 5 and window 11, write; the
function each dask task runs, ``nlfilt.cli.denoise.cluster_job``):

* in this process, one file after another (no dask);
* as tasks on a local cluster of 1 worker process and of 2;

every process with nlfilt on one thread (``NLFILT_THREADS=1``), so that the
efficiency measures the scaling over cores; the cluster's start-up is timed
apart.  (``nlfilt denoise --scheduler local:N`` gives each worker its share of
the cores instead.)

Parallel efficiency at 2 workers is T(1 worker) / (2 T(2 workers)); the
scheduling overhead per task is (T(1 worker) - T(in process)) / images, in ms.

    python benchmarks/scale.py --write     # benchmarks/results/scale.md
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ["NLFILT_THREADS"] = "1"  # one core per process: in this process as in each worker
from nlfilt.cli.cluster import Scheduler, connect, run_batch  # noqa: E402
from nlfilt.cli.denoise import Job, cluster_job  # noqa: E402
from nlfilt.cli.options import RunOptions  # noqa: E402

from harness import add_noise, machine, write  # noqa: E402

#: The run's options: windowed NLM with the defaults, on the CPU.
OPTIONS = RunOptions.from_params({"method": "filter", "device": "cpu"})


def write_images(folder: Path, count: int, side: int) -> list[Path]:
    rows, cols = numpy.mgrid[:side, :side]
    paths = []
    for index in range(count):
        clean = 128 + 60 * numpy.sin((rows + 5 * index) / 11.0) * numpy.cos(cols / 13.0)
        noisy = add_noise(clean, 20.0, index)
        paths.append(folder / f"{index:03d}.png")
        iio.imwrite(paths[-1], numpy.clip(noisy, 0, 255).astype(numpy.uint8))
    return paths


def jobs_for(paths: list[Path], out: Path) -> list[Job]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    return [Job(path, out / path.name) for path in paths]


def in_process(jobs: list[Job]) -> float:
    started = time.perf_counter()
    for job in jobs:
        entry = cluster_job(job, OPTIONS, False, 0.0)
        assert entry["status"] == "denoised", entry
    return time.perf_counter() - started


def on_cluster(jobs: list[Job], workers: int) -> tuple[float, float]:
    """(start-up seconds, batch seconds) on a local cluster of ``workers`` processes of one thread."""
    started = time.perf_counter()
    with connect(Scheduler("local", workers=workers), threads=1) as client:
        client.wait_for_workers(workers)
        client.submit(sum, [1, 2]).result()  # the first task's round trip is start-up too
        ready = time.perf_counter()
        statuses = []
        run_batch(client, jobs, cluster_job, (OPTIONS, False, 0.0), statuses.append, lambda: None)
        finished = time.perf_counter()
    assert len(statuses) == len(jobs) and all(entry["status"] == "denoised" for entry in statuses)
    return ready - started, finished - ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/scale.md")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="nlfilt-scale-"))
    try:
        (folder / "in").mkdir()
        paths = write_images(folder / "in", args.images, args.size)
        in_process(jobs_for(paths[:3], folder / "warm"))  # imports and first calls
        here = in_process(jobs_for(paths, folder / "here"))
        start_1, one = on_cluster(jobs_for(paths, folder / "one"), 1)
        start_2, two = on_cluster(jobs_for(paths, folder / "two"), 2)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    count = args.images
    efficiency = one / (2 * two)
    overhead = (one - here) / count * 1e3
    lines = ["# Batches on dask", "",
             machine("scale.py", time.strftime("%Y-%m-%d")),
             f"{count} gray {args.size}x{args.size} PNG images, windowed NLM (--method filter, patch 5, "
             "window 11), each read, filtered and written by the function every dask task runs.", "",
             "Every process runs nlfilt on one thread (NLFILT_THREADS=1).", "",
             "| run | start-up s | batch s | images per s |", "| --- | --- | --- | --- |",
             f"| in this process, one after another | - | {here:.2f} | {count / here:.1f} |",
             f"| local cluster, 1 worker | {start_1:.2f} | {one:.2f} | {count / one:.1f} |",
             f"| local cluster, 2 workers | {start_2:.2f} | {two:.2f} | {count / two:.1f} |", "",
             f"- parallel efficiency at 2 workers, T(1) / (2 T(2)): {efficiency:.0%} (target >= 80%): "
             + ("met" if efficiency >= 0.8 else "MISSED"),
             f"- scheduling overhead per task, (T(1 worker) - T(in process)) / images: {overhead:.1f} ms"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write("scale.md", text)


if __name__ == "__main__":
    main()
