"""``nlfilt denoise --scheduler``: files as tasks on a dask.distributed cluster, with real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy
import pytest
from click.testing import CliRunner

import nlfilt
from nlfilt.cli import main

from clitools import report_entries

distributed = pytest.importorskip("distributed", reason="needs nlfilt[dask]")

BIN = Path(sys.executable).parent
CLITOOLS = str(Path(__file__).with_name("clitools.py"))


def photos(folder: Path, count: int, side: int = 96) -> Path:
    """``count`` noisy gray PNG images of ``side`` pixels in ``folder``."""
    folder.mkdir(parents=True)
    rows, cols = numpy.mgrid[:side, :side]
    for index in range(count):
        clean = 128 + 60 * numpy.sin((rows + 3 * index) / 7.0) * numpy.cos(cols / 9.0)
        noisy = clean + numpy.random.default_rng(index).normal(0, 20, clean.shape)
        iio.imwrite(folder / f"{index:02d}.png", numpy.clip(noisy, 0, 255).astype(numpy.uint8))
    return folder


#: The outputs are compared bit for bit, so the tests filter with NLM (``--method filter``), whose
#: arithmetic does not depend on the process's BLAS threads; the collaborative filter's 3-D transforms are
#: BLAS products, whose float32 rounding does (dask workers run BLAS on one thread).
EXACT = ["--method", "filter"]


def test_a_local_cluster_gives_the_single_process_outputs(tmp_path):
    inputs = photos(tmp_path / "in", 6)
    here = CliRunner().invoke(main, ["denoise", *EXACT, str(inputs), "-o", str(tmp_path / "here"), "--quiet"])
    assert here.exit_code == 0, here.output
    report = tmp_path / "r.jsonl"
    there = CliRunner().invoke(main, ["denoise", *EXACT, str(inputs), "-o", str(tmp_path / "there"),
                                      "--quiet", "--scheduler", "local:2", "--report", str(report)])
    assert there.exit_code == 0, there.output
    for path in sorted((tmp_path / "here").iterdir()):
        numpy.testing.assert_array_equal(iio.imread(tmp_path / "there" / path.name), iio.imread(path))
    lines = report_entries(report.read_text())
    assert sorted(Path(line["input"]).name for line in lines) == sorted(p.name for p in inputs.iterdir())
    assert {line["status"] for line in lines} == {"denoised"}
    # resume: a second run skips every output that exists
    again = CliRunner().invoke(main, ["denoise", str(inputs), "-o", str(tmp_path / "there"),
                                      "--scheduler", "local:1"])
    assert again.exit_code == 0 and "0 denoised, 0 failed, 6 skipped" in again.output


def test_bad_files_are_named_and_the_rest_go_on(tmp_path):
    inputs = photos(tmp_path / "in", 3)
    (inputs / "broken.png").write_text("not an image")
    result = CliRunner().invoke(main, ["denoise", str(inputs), "-o", str(tmp_path / "out"), "--scheduler",
                                       "local:2", "--report", "-"])
    assert result.exit_code == 1
    assert "broken.png" in result.stderr and "3 denoised, 1 failed, 0 skipped" in result.stderr
    assert len(report_entries(result.stdout)) == 4


@pytest.mark.parametrize(("value", "message"), [
    ("local:0", "N >= 1"), ("locals", "local:N"), ("nonsense", "not a scheduler address"),
    ("tcp://127.0.0.1:9", "cannot reach the dask scheduler"),
])
def test_scheduler_values_that_cannot_work_are_usage_errors(tmp_path, value, message):
    inputs = photos(tmp_path / "in", 1)
    result = CliRunner().invoke(main, ["denoise", str(inputs), "-o", str(tmp_path / "out"),
                                       "--scheduler", value])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not any((tmp_path / "out").glob("*.png"))


def test_without_the_extra_the_option_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    inputs = photos(tmp_path / "in", 1)
    result = CliRunner().invoke(main, ["denoise", str(inputs), "-o", str(tmp_path / "out"), "--scheduler",
                                       "local:1"])
    assert result.exit_code == 2 and "pip install 'nlfilt[dask]'" in result.output


#: The environment of the processes a test starts: they import this checkout's nlfilt, as the test does.
ENVIRONMENT = dict(os.environ, PYTHONPATH=os.pathsep.join(
    [str(Path(nlfilt.__file__).resolve().parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])]))


class Cluster:
    """A dask scheduler and workers on 127.0.0.1, each a process of its own as a user starts them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: list[subprocess.Popen] = []
        address_file = folder / "scheduler.json"
        self.start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                 "--scheduler-file", str(address_file)])
        deadline = time.monotonic() + 60
        while not address_file.exists():
            assert time.monotonic() < deadline, (folder / "scheduler.log").read_text()
            time.sleep(0.1)
        self.address = json.loads(address_file.read_text())["address"]

    def start(self, name: str, arguments: list[str], **environment: str) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("w")
        process = subprocess.Popen([str(BIN / "dask"), *arguments], stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, env=dict(ENVIRONMENT, **environment))
        self.processes.append(process)
        return process

    def add_worker(self, name: str, **environment: str) -> subprocess.Popen:
        """Start a worker of one thread (with :func:`clitools.dask_setup` preloaded) and wait until the
        scheduler has it."""
        process = self.start(name, ["worker", self.address, "--no-nanny", "--nthreads", "1", "--host",
                                    "127.0.0.1", "--no-dashboard", "--name", name, "--preload", CLITOOLS],
                             **environment)
        with distributed.Client(self.address, timeout="30s") as client:
            deadline = time.monotonic() + 60
            while name not in {info["name"] for info in client.scheduler_info()["workers"].values()}:
                assert process.poll() is None, (self.folder / f"{name}.log").read_text()
                assert time.monotonic() < deadline, f"worker {name} not up after a minute"
                time.sleep(0.1)
        return process

    def stop(self) -> None:
        """Stop the workers, then the scheduler (a worker whose scheduler went first takes a while)."""
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(tmp_path)
    try:
        yield started
    finally:
        started.stop()


def test_a_worker_killed_mid_batch_loses_nothing(tmp_path, cluster):
    """A real scheduler and two workers on 127.0.0.1; one worker is killed with SIGKILL mid-batch."""
    inputs = photos(tmp_path / "in", 24, side=256)
    reference = CliRunner().invoke(main, ["denoise", *EXACT, str(inputs), "-o", str(tmp_path / "reference"),
                                          "--quiet", "--iterations", "3"])
    assert reference.exit_code == 0
    first = cluster.add_worker("w1")
    cluster.add_worker("w2")
    out, report = tmp_path / "out", tmp_path / "report.jsonl"
    run = subprocess.Popen([sys.executable, "-m", "nlfilt", "denoise", *EXACT, str(inputs), "-o", str(out),
                            "--iterations", "3", "--scheduler", cluster.address, "--report", str(report),
                            "--quiet"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENVIRONMENT)
    deadline = time.monotonic() + 60
    while not (out.is_dir() and len([p for p in out.iterdir() if not p.name.startswith(".")]) >= 3):
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "no outputs after a minute"
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGKILL)  # the first worker, mid-batch
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(p.name for p in inputs.iterdir())  # each once, nothing else left
    for name in written:
        expected = iio.imread(tmp_path / "reference" / name)
        numpy.testing.assert_array_equal(iio.imread(out / name), expected)
    lines = report_entries(report.read_text())
    assert sorted(Path(line["input"]).name for line in lines) == written  # one line per input


def kill_when_paused(worker: subprocess.Popen, marker: Path) -> None:
    """SIGKILL ``worker`` once it has created ``marker`` (paused in a write, see clitools.dask_setup); it
    is not reaped here: until the test waits for it, it stays a zombie, which looks alive to a check of
    its process id."""
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(worker.pid, signal.SIGKILL)


def test_a_worker_killed_at_any_point_of_a_write_leaves_no_partial_file(tmp_path, cluster):
    """A worker killed before, while and after writing its partial file: the run's outputs are whole, and
    no partial file is left, although the killed worker is still a zombie when the run cleans up."""
    inputs = photos(tmp_path / "in", 8, side=64)
    reference = CliRunner().invoke(main, ["denoise", *EXACT, str(inputs), "-o", str(tmp_path / "reference"),
                                          "--quiet"])
    assert reference.exit_code == 0
    cluster.add_worker("steady")
    for attempt, point in enumerate(["before", "during", "after"] * 2):
        marker = tmp_path / f"{point}-{attempt}.paused"
        victim = cluster.add_worker(f"victim-{attempt}", NLFILT_TEST_PAUSE=f"{point}:{marker}")
        killer = threading.Thread(target=kill_when_paused, args=(victim, marker))
        killer.start()
        out = tmp_path / f"out-{attempt}"
        result = CliRunner().invoke(main, ["denoise", *EXACT, str(inputs), "-o", str(out), "--quiet",
                                           "--scheduler", cluster.address])
        killer.join()
        assert marker.exists(), f"the worker never paused {point} a write"
        assert result.exit_code == 0, result.output
        assert sorted(os.listdir(out)) == sorted(os.listdir(inputs)), point  # no partial file, no folder
        for name in os.listdir(out):
            expected = iio.imread(tmp_path / "reference" / name)
            numpy.testing.assert_array_equal(iio.imread(out / name), expected)
        victim.wait(timeout=10)


def test_a_late_write_into_a_runs_partials_folder_leaves_nothing(tmp_path, monkeypatch):
    """The latest writes a dying worker can make, injected once the client's removal of the run's
    partials folder has begun: more bytes into a partial file it opened before, and a new write."""
    from nlfilt import images

    out = tmp_path / "out"
    folder = images.make_partials_folder(out)
    held = (folder / f".a.x1y2.nlfilt-{images._host_tag()}-1.partial.png").open("wb")
    held.write(b"half an image")
    real_rmtree = shutil.rmtree
    late = []

    def rmtree_with_late_writes(path, *args, **kwargs):
        held.write(b" and more")
        held.flush()
        with pytest.raises(OSError):  # the folder's path no longer exists, and nothing creates it again
            images.write_image(out / "b.png", numpy.zeros((8, 8), numpy.uint8), partials=folder)
        late.append(path)
        real_rmtree(path, *args, **kwargs)
        held.write(b" and the end")
        held.close()

    monkeypatch.setattr(images.shutil, "rmtree", rmtree_with_late_writes)
    images.remove_partials_folder(folder)
    assert late and os.listdir(out) == []


def test_a_signal_stops_a_cluster_run_cleanly(tmp_path):
    """SIGTERM mid-batch: unfinished tasks cancelled, the local cluster stopped, no partial file, an
    'interrupted' report line for every unfinished input, exit status 143."""
    inputs = photos(tmp_path / "in", 30, side=256)
    out, report = tmp_path / "out", tmp_path / "report.jsonl"
    run = subprocess.Popen([sys.executable, "-m", "nlfilt", "denoise", *EXACT, str(inputs), "-o", str(out),
                            "--iterations", "3", "--scheduler", "local:2", "--report", str(report),
                            "--quiet"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENVIRONMENT)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir())):
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "no output after two minutes"
        time.sleep(0.02)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 143, stderr
    assert "interrupted by SIGTERM" in stderr and "Traceback" not in stderr
    written = sorted(p.name for p in out.iterdir())
    assert all(not name.startswith(".") for name in written) and 0 < len(written) < 30
    lines = report_entries(report.read_text())
    assert sorted(Path(line["input"]).name for line in lines) == sorted(p.name for p in inputs.iterdir())
    assert {line["status"] for line in lines} <= {"denoised", "interrupted"}
    assert any(line["status"] == "interrupted" for line in lines)
    # files a worker had started when the signal came are completed (atomically) and say so
    completed = [Path(line["input"]).name for line in lines
                 if line["status"] == "denoised" or "wrote its output" in (line["error"] or "")]
    assert sorted(completed) == written
