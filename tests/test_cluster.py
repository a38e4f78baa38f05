"""``nlfilt denoise --scheduler``: files as tasks on a dask.distributed cluster, with real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy
import pytest
from click.testing import CliRunner

from nlfilt.cli import main

from clitools import report_entries

distributed = pytest.importorskip("distributed", reason="needs nlfilt[dask]")

BIN = Path(sys.executable).parent


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


def start(command: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def test_a_worker_killed_mid_batch_loses_nothing(tmp_path):
    """A real scheduler and two workers on 127.0.0.1; one worker is killed with SIGKILL mid-batch."""
    inputs = photos(tmp_path / "in", 24, side=256)
    reference = CliRunner().invoke(main, ["denoise", *EXACT, str(inputs), "-o", str(tmp_path / "reference"),
                                          "--quiet", "--iterations", "3"])
    assert reference.exit_code == 0
    address_file = tmp_path / "scheduler.json"
    processes = []
    try:
        processes.append(start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                "--no-dashboard", "--scheduler-file", str(address_file)], tmp_path / "s.log"))
        deadline = time.monotonic() + 60
        while not address_file.exists():
            assert time.monotonic() < deadline, (tmp_path / "s.log").read_text()
            time.sleep(0.1)
        for name in ("w1", "w2"):
            processes.append(start([str(BIN / "dask"), "worker", "--scheduler-file", str(address_file),
                                    "--no-nanny", "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard",
                                    "--name", name], tmp_path / f"{name}.log"))
        address = json.loads(address_file.read_text())["address"]
        with distributed.Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        out, report = tmp_path / "out", tmp_path / "report.jsonl"
        run = subprocess.Popen([str(BIN / "nlfilt"), "denoise", *EXACT, str(inputs), "-o", str(out),
                                "--iterations", "3", "--scheduler", address, "--report", str(report),
                                "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while not (out.is_dir() and len([p for p in out.iterdir() if not p.name.startswith(".")]) >= 3):
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline + 60, "no outputs after a minute"
            time.sleep(0.02)
        os.kill(processes[1].pid, signal.SIGKILL)  # the first worker, mid-batch
        processes[1].wait(timeout=10)
        # what the killed worker would leave if it died while writing: removed at the end of the run
        from nlfilt.images import _host_tag

        left = out / f".00.killed.nlfilt-{_host_tag()}-{processes[1].pid}.partial.png"
        left.write_bytes(b"half an image")
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
        written = sorted(p.name for p in out.iterdir())
        assert written == sorted(p.name for p in inputs.iterdir())  # each once, no partial file left
        for name in written:
            expected = iio.imread(tmp_path / "reference" / name)
            numpy.testing.assert_array_equal(iio.imread(out / name), expected)
        lines = report_entries(report.read_text())
        assert sorted(Path(line["input"]).name for line in lines) == written  # one line per input
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_a_signal_stops_a_cluster_run_cleanly(tmp_path):
    """SIGTERM mid-batch: unfinished tasks cancelled, the local cluster stopped, no partial file, an
    'interrupted' report line for every unfinished input, exit status 143."""
    inputs = photos(tmp_path / "in", 30, side=256)
    out, report = tmp_path / "out", tmp_path / "report.jsonl"
    run = subprocess.Popen([str(BIN / "nlfilt"), "denoise", *EXACT, str(inputs), "-o", str(out),
                            "--iterations", "3", "--scheduler", "local:2", "--report", str(report),
                            "--quiet"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
