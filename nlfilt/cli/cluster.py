"""``nlfilt denoise --scheduler``: a batch's files as tasks on a dask.distributed cluster.

Each file is one task; the worker reads the input, filters it and writes the
output itself (so inputs and outputs must lie on a file system the workers
share with the client, at the same paths), with the same atomic write as a
local run, and returns the file's report entry.  The client keeps the report,
the progress bar over finished files and the summary.  A worker that dies
mid-task (killed, out of memory) has its task rerun on another worker by the
scheduler; workers write their partial files in folders of the run, which the
client removes at the end with whatever a dead or dying worker left in them
(:func:`nlfilt.cli.denoise._run_on_cluster`).

``--scheduler`` takes the address of a running scheduler (``tcp://host:8786``),
``local:N`` (a local cluster of N worker processes, started for the run and
stopped after it), or ``local-cuda`` (dask-cuda's local CUDA cluster, one worker
per GPU; the same code path as ``local:N`` with another cluster class).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import click

from nlfilt.backend import THREADS_VARIABLE, host_cores

#: Seconds between checks for a signal while the client waits for tasks.
POLL = 0.05

#: How long the client tries to reach a scheduler given by address.
CONNECT_TIMEOUT = "10s"


@dataclass(frozen=True)
class Scheduler:
    """A parsed ``--scheduler`` value: ``kind`` 'address', 'local' or 'local-cuda'."""

    kind: str
    address: str | None = None
    workers: int | None = None

    def __str__(self) -> str:
        return {"address": self.address, "local": f"local:{self.workers}"}.get(self.kind) or self.kind


class SchedulerType(click.ParamType):
    """``tcp://host:port`` (or any address dask accepts), ``local:N`` or ``local-cuda``."""

    name = "ADDRESS|local:N|local-cuda"

    def convert(self, value: Any, param: Any, ctx: Any) -> Scheduler:
        if isinstance(value, Scheduler):
            return value
        text = str(value).strip()
        if text == "local-cuda":
            return Scheduler("local-cuda")
        match = re.fullmatch(r"local:(\d+)", text)
        if match:
            workers = int(match.group(1))
            if workers < 1:
                self.fail("local:N needs N >= 1 worker processes", param, ctx)
            return Scheduler("local", workers=workers)
        if text.startswith("local"):
            self.fail(f"{text!r}: use local:N (N worker processes) or local-cuda", param, ctx)
        if "://" not in text and ":" not in text:
            self.fail(f"{text!r} is not a scheduler address (tcp://host:port), local:N or local-cuda",
                      param, ctx)
        return Scheduler("address", address=text)


def import_distributed() -> Any:
    """The ``distributed`` module, or click.UsageError saying how to install it."""
    try:
        import distributed  # noqa: PLC0415 - optional extra
    except ImportError:
        raise click.UsageError("--scheduler needs dask.distributed: pip install 'nlfilt[dask]'") from None
    return distributed


@contextmanager
def connect(scheduler: Scheduler, threads: int | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` for ``scheduler``; a local cluster is started here and stopped on exit.

    A local cluster's workers are processes of one thread each, and each one's
    nlfilt uses ``threads`` CPU threads (``NLFILT_THREADS``; default its share of
    the host's cores), so that N workers do not oversubscribe the CPUs.
    """
    distributed = import_distributed()
    import dask  # noqa: PLC0415 - installed with distributed

    cluster = None
    try:
        if scheduler.kind == "address":
            try:
                client = distributed.Client(scheduler.address, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                message = f"cannot reach the dask scheduler at {scheduler.address}: {exc}"
                raise click.UsageError(message) from None
        else:
            if scheduler.kind == "local-cuda":
                try:
                    from dask_cuda import LocalCUDACluster  # noqa: PLC0415 - optional
                except ImportError:
                    message = "--scheduler local-cuda needs dask-cuda: pip install dask-cuda"
                    raise click.UsageError(message) from None
                cluster = LocalCUDACluster(dashboard_address=None, threads_per_worker=1)
            else:
                share = threads or max(1, host_cores() // scheduler.workers)
                # dask's nannies set MALLOC_TRIM_THRESHOLD_ in the workers they spawn, which turns off
                # glibc's adaptive mmap threshold: every image-sized array is then mapped and faulted in
                # anew; nlfilt's workers keep the default
                environ = {key: value for key, value in
                           dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
                           if key != "MALLOC_TRIM_THRESHOLD_"}
                with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
                    cluster = distributed.LocalCluster(
                        n_workers=scheduler.workers, threads_per_worker=1, processes=True,
                        dashboard_address=None, silence_logs=logging.ERROR,
                        env={THREADS_VARIABLE: str(share)})
            client = distributed.Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def run_batch(client: Any, jobs: list[Any], task: Callable[..., dict[str, Any]], arguments: tuple[Any, ...],
              record: Callable[[dict[str, Any]], None], check: Callable[[], None]) -> None:
    """Submit ``task(job, *arguments)`` for every job and ``record`` each entry as it finishes.

    While waiting, ``check()`` is called every ``POLL`` seconds; when it
    raises (a signal came), the unfinished tasks are cancelled (a task
    already running on a remote worker still completes, atomically) and the
    exception is raised again with the unfinished jobs in its ``unfinished``
    attribute.  Retries are the scheduler's: a task whose worker died runs
    again on another.
    """
    distributed = import_distributed()
    tag = f"{os.getpid()}-{id(jobs)}"
    pending = {client.submit(task, job, *arguments, pure=False, key=f"nlfilt-denoise-{tag}-{index}"): job
               for index, job in enumerate(jobs)}
    finished = distributed.as_completed(list(pending))
    try:
        while pending:
            check()
            if not finished.has_ready():
                time.sleep(POLL)
                continue
            future = next(finished)
            del pending[future]
            record(future.result())
    except BaseException as exc:
        if pending:
            client.cancel(list(pending))
        exc.unfinished = list(pending.values())  # type: ignore[attr-defined]
        raise
