"""Batches as a user runs them: file modes, signals, concurrent runs, appended reports, checks made
before any pixel is computed, and messages whose suggestions work."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import imageio.v3 as iio
import numpy
import pytest
import tifffile
from click.testing import CliRunner

from nlfilt.backend import get_backend, gpu_status
from nlfilt.cli import main

from clitools import forbid_denoising, noisy_image, replace_denoising, report_entries, run

# Files and processes

def test_outputs_get_the_umask_mode_and_overwrite_keeps_the_existing_mode(tmp_path):
    iio.imwrite(tmp_path / "a.png", noisy_image())
    previous = os.umask(0o027)
    try:
        assert run("denoise", tmp_path / "a.png", "-o", tmp_path / "out.png", "--quiet").exit_code == 0
        assert (tmp_path / "out.png").stat().st_mode & 0o777 == 0o640
        (tmp_path / "out.png").chmod(0o604)
        result = run("denoise", tmp_path / "a.png", "-o", tmp_path / "out.png", "--quiet", "--overwrite")
        assert result.exit_code == 0
        assert (tmp_path / "out.png").stat().st_mode & 0o777 == 0o604
    finally:
        os.umask(previous)


def slow_batch(tmp_path: Path, count: int = 40) -> tuple[Path, Path]:
    """A folder of images that each take a noticeable time (global NLM, several steps)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(count):
        iio.imwrite(folder / f"{index:02d}.png", noisy_image(48, 48))
    return folder, tmp_path / "out"


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_signals_stop_the_batch_cleanly_with_their_own_exit_status(tmp_path, signum, status):
    folder, out = slow_batch(tmp_path)
    report = tmp_path / "report.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "nlfilt", "denoise", "--method", "filter", str(folder), "-o", str(out),
         "--report", str(report), "--window", "global", "--iterations", "3", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out.is_dir() and any(not path.name.startswith(".") for path in out.iterdir())):
        assert time.monotonic() < deadline, "no output after 60 s"
        time.sleep(0.05)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr
    assert f"interrupted by {signal.Signals(signum).name}" in stderr
    assert re.search(r"\d+ denoised, 0 failed, 0 skipped", stderr)
    assert "Traceback" not in stderr
    written = sorted(path.name for path in out.iterdir())
    assert all(not name.startswith(".") for name in written)  # no partial file left
    assert 0 < len(written) < 40
    for name in written:
        assert iio.imread(out / name).shape == (48, 48)
    lines = report_entries(report.read_text())
    assert lines[-1]["status"] == "interrupted" and len(lines) == len(written) + 1


def test_outputs_being_written_when_a_signal_comes_are_finished_and_reported(tmp_path, monkeypatch):
    """Writes run on threads while the next file is filtered: a signal then lets them finish."""
    from nlfilt.cli.interrupts import Interrupted

    for name in ("a.png", "b.png", "c.png"):
        iio.imwrite(tmp_path / name, noisy_image())
    real_write = iio.imwrite
    writing = threading.Event()

    def slow_write(*args, **kwargs):
        writing.set()
        time.sleep(0.5)
        return real_write(*args, **kwargs)

    calls = []

    def denoise_then_signal(real, image):
        calls.append(1)
        if len(calls) == 2:  # while the first output is being written, the signal comes
            assert writing.wait(10)
            raise Interrupted(signal.SIGTERM)
        return real()

    monkeypatch.setattr("nlfilt.images.iio.imwrite", slow_write)
    replace_denoising(monkeypatch, denoise_then_signal)
    result = run("denoise", tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png",
                 "-o", tmp_path / "out", "--report", tmp_path / "report.jsonl")
    assert result.exit_code == 143, result.output
    assert "1 denoised, 0 failed, 0 skipped; interrupted by SIGTERM" in result.output
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a.png"]
    assert iio.imread(tmp_path / "out" / "a.png").shape == noisy_image().shape
    lines = report_entries((tmp_path / "report.jsonl").read_text())
    assert [(Path(line["input"]).name, line["status"]) for line in lines] == [("a.png", "denoised"),
                                                                            ("b.png", "interrupted")]


def test_stale_partial_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    from nlfilt.images import _writer_tag, remove_stale_partials

    iio.imwrite(tmp_path / "a.png", noisy_image())
    out = tmp_path / "out"
    out.mkdir()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead_pid = int(finished.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tag = _writer_tag().rsplit("-", 1)[0]
        dead = out / f".b.x1y2.{tag}-{dead_pid}.partial.png"
        alive = out / f".c.x1y2.{tag}-{live.pid}.partial.png"
        other_host = out / f".d.x1y2.nlfilt-elsewhere-{dead_pid}.partial.png"
        foreign = out / ".notes.partial.png"
        for path in (dead, alive, other_host, foreign):
            path.write_bytes(b"partial")
        # the partials folders of cluster runs (their workers' partial files inside), named by the client
        dead_run = out / f".{tag}-{dead_pid}.0a1b2c3d.partials"
        live_run = out / f".{tag}-{live.pid}.0a1b2c3d.partials"
        other_host_run = out / f".nlfilt-elsewhere-{dead_pid}.0a1b2c3d.partials"
        for folder in (dead_run, live_run, other_host_run):
            folder.mkdir()
            (folder / f".e.x1y2.{tag}-{dead_pid}.partial.png").write_bytes(b"partial")
        assert run("denoise", tmp_path / "a.png", "-o", out, "--quiet").exit_code == 0
        assert not dead.exists() and not dead_run.exists()
        assert alive.exists() and other_host.exists() and foreign.exists()
        assert live_run.exists() and other_host_run.exists()
        assert remove_stale_partials(out) == []
    finally:
        live.kill()
        live.wait()
    assert sorted(remove_stale_partials(out)) == sorted([alive, live_run])


def test_a_concurrent_run_never_replaces_an_output_another_run_finished(tmp_path, monkeypatch):
    iio.imwrite(tmp_path / "a.png", noisy_image())
    out = tmp_path / "out"
    def denoise_while_another_run_finishes(real, image):
        out.mkdir(exist_ok=True)
        (out / "a.png").write_bytes(b"the other run's result")
        return real()

    replace_denoising(monkeypatch, denoise_while_another_run_finishes)
    result = run("denoise", tmp_path / "a.png", "-o", out, "--report", "-")
    assert result.exit_code == 0
    assert (out / "a.png").read_bytes() == b"the other run's result"
    (entry,) = report_entries(result.stdout)
    assert entry["status"] == "skipped" and "another run" in entry["error"]
    assert [path.name for path in out.iterdir()] == ["a.png"]


def test_report_appends_a_run_line_and_one_line_per_input(tmp_path):
    for name in ("a.png", "b.png"):
        iio.imwrite(tmp_path / name, noisy_image())
    report = tmp_path / "report.jsonl"
    assert run("denoise", tmp_path / "a.png", "-o", tmp_path / "out", "--report", report).exit_code == 0
    assert run("denoise", tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "out",
               "--report", report, "--method", "filter", "--window", "7").exit_code == 0
    records = [json.loads(line) for line in report.read_text().splitlines()]
    assert ["run" in record for record in records] == [True, False, True, False, False]
    first, second = records[0], records[2]
    assert first["nlfilt"] and first["command"] == "denoise" and second["options"]["window"] == 7
    assert [record["status"] for record in records if "run" not in record] == ["denoised", "skipped",
                                                                                "denoised"]


def _append_lines(path: str, writer: int) -> None:
    from nlfilt.cli.report import Report

    report = Report(Path(path))
    for index in range(200):
        report.write({"writer": writer, "index": index, "padding": "x" * (500 + 37 * writer)})
    report.close()


def test_concurrent_report_writers_never_interleave_within_a_line(tmp_path):
    path = tmp_path / "report.jsonl"
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_append_lines, args=(str(path), writer)) for writer in range(4)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(60)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 800
    for writer in range(4):
        assert [record["index"] for record in records if record["writer"] == writer] == list(range(200))


def test_recursive_run_with_the_output_inside_the_input_resumes(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    iio.imwrite(folder / "a.png", noisy_image())
    iio.imwrite(folder / "sub" / "b.png", noisy_image())
    out = folder / "denoised"
    first = run("denoise", folder, "-o", out, "--recursive")
    assert first.exit_code == 0 and "2 denoised, 0 failed, 0 skipped" in first.output
    second = run("denoise", folder, "-o", out, "--recursive")
    assert second.exit_code == 0 and "0 denoised, 0 failed, 2 skipped" in second.output
    assert not (out / "denoised").exists()


# Checks made before computing

@pytest.mark.parametrize(("name", "pixels", "output", "reason"), [
    ("a.png", noisy_image(), "out.xyz", "unknown image format"),
    ("a.png", noisy_image(), "out", None),  # no extension: a folder, which is fine
    ("f.tif", noisy_image().astype(numpy.float32), "out.png", "TIFF"),
    ("rgba.png", noisy_image(channels=4), "out.jpg", "alpha"),
    ("rgba.png", noisy_image(channels=4), "out.bmp", "alpha"),
], ids=["unknown-extension", "folder", "float-to-png", "alpha-to-jpeg", "alpha-to-bmp"])
def test_output_formats_are_checked_before_computing(tmp_path, monkeypatch, name, pixels, output, reason):
    iio.imwrite(tmp_path / name, pixels)
    if reason is None:
        assert run("denoise", tmp_path / name, "-o", tmp_path / output, "--quiet").exit_code == 0
        return
    forbid_denoising(monkeypatch)
    result = run("denoise", tmp_path / name, "-o", tmp_path / output)
    assert result.exit_code == 2 and reason in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / output).exists()


def test_an_output_folder_that_cannot_be_created_is_a_usage_error(tmp_path, monkeypatch):
    iio.imwrite(tmp_path / "a.png", noisy_image())
    (tmp_path / "plain").write_text("a file, not a folder")
    forbid_denoising(monkeypatch)
    result = run("denoise", tmp_path / "a.png", "-o", tmp_path / "plain" / "out" / "a.png")
    assert result.exit_code == 2 and "is a file" in result.output
    monkeypatch.setattr("nlfilt.cli.denoise.os.access", lambda path, mode: not mode & os.W_OK)  # not ours
    result = run("denoise", tmp_path / "a.png", "-o", tmp_path / "locked" / "a.png")
    assert result.exit_code == 2 and "permission denied" in result.output


def test_an_image_too_large_for_memory_is_refused_from_its_header(tmp_path, monkeypatch):
    iio.imwrite(tmp_path / "a.png", noisy_image())
    monkeypatch.setattr("nlfilt.cli.options.physical_memory", lambda: 2**16)  # a 64 KiB machine
    forbid_denoising(monkeypatch)
    result = run("denoise", tmp_path / "a.png", "-o", tmp_path / "o.png", "--device", "cpu")
    assert result.exit_code == 1 and "working memory" in result.output
    assert "crop the image" in result.output and not (tmp_path / "o.png").exists()


# Messages whose suggestions work

def options_named(text: str) -> set[str]:
    return set(re.findall(r"--[a-z][a-z-]+", text))


def denoise_options() -> set[str]:
    return {name for param in main.commands["denoise"].params for name in param.opts if name.startswith("--")}


@pytest.mark.parametrize("kernel", ["arccos", "ntk", "nlm"])
def test_a_costly_run_suggests_only_remedies_that_exist_and_work(tmp_path, kernel):
    iio.imwrite(tmp_path / "a.png", noisy_image())
    result = run("denoise", tmp_path / "a.png", "-o", tmp_path / "o.png", "--method", "filter",
                 "--kernel", kernel, "--window", "global", "--device", "cpu", "--max-minutes", "0.00001")
    assert result.exit_code == 1 and "would take" in result.output and "second" in result.output
    named = options_named(result.output)
    assert named <= denoise_options(), named
    assert ("--window" in named) == (kernel == "nlm")  # windowed tangent filters are indefinite
    assert ("--device" in named) == gpu_status()[0]
    assert not (tmp_path / "o.png").exists()


def test_a_memory_refusal_names_existing_options(tmp_path, monkeypatch):
    iio.imwrite(tmp_path / "a.png", noisy_image())
    monkeypatch.setattr("nlfilt.cli.options.physical_memory", lambda: 2**20)
    result = run("denoise", tmp_path / "a.png", "-o", tmp_path / "o.png", "--method", "filter",
                 "--window", "global", "--iterations", "auto", "--device", "cpu")
    assert result.exit_code == 1 and "working memory" in result.output
    named = options_named(result.output)
    assert "--memory-budget" in named and named <= denoise_options(), named
    smaller = run("denoise", tmp_path / "a.png", "-o", tmp_path / "o.png", "--method", "filter",
                  "--window", "global", "--iterations", "auto", "--device", "cpu", "--memory-budget", "1M")
    assert smaller.exit_code == 1 and "working memory" in smaller.output  # still too much for 1 MiB
    assert run("denoise", tmp_path / "a.png", "-o", tmp_path / "o.png", "--method", "filter",
               "--memory-budget", "lots").exit_code == 2


def test_an_image_smaller_than_the_default_patch_says_how_to_set_it(tmp_path):
    iio.imwrite(tmp_path / "tiny.png", noisy_image(3, 6))
    result = run("denoise", tmp_path / "tiny.png", "-o", tmp_path / "o.png", "--sigma", "10")
    assert result.exit_code == 1  # the default method's 8x8 patches: the filter's smaller patch is named
    assert "smaller than the 8x8 patches of --method collaborative" in result.output
    assert "--method filter with a smaller --patch" in result.output
    result = run("denoise", tmp_path / "tiny.png", "-o", tmp_path / "o.png", "--sigma", "10",
                 "--method", "filter")
    assert result.exit_code == 1
    assert "smaller than the default patch 5" in result.output and "--patch" in result.output
    assert run("denoise", tmp_path / "tiny.png", "-o", tmp_path / "o.png", "--sigma", "10",
               "--method", "filter", "--patch", "3").exit_code == 0


def test_a_stack_in_a_batch_is_denoised_and_an_empty_file_says_so(tmp_path):
    tifffile.imwrite(tmp_path / "stack.tif", numpy.zeros((5, 16, 16), numpy.uint8))  # one series of 5 pages
    (tmp_path / "empty.png").write_bytes(b"")
    result = run("denoise", tmp_path / "stack.tif", tmp_path / "empty.png", "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "empty file" in result.output and "1 denoised, 1 failed" in result.output
    assert tifffile.imread(tmp_path / "out" / "stack.tif").shape == (5, 16, 16)


def test_an_image_file_name_as_the_output_of_several_inputs_is_a_usage_error(tmp_path):
    for name in ("a.png", "b.png"):
        iio.imwrite(tmp_path / name, noisy_image())
    result = run("denoise", tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "name.png")
    assert result.exit_code == 2 and "output folder" in result.output
    assert not (tmp_path / "name.png").exists()


def test_the_window_error_speaks_of_global(tmp_path):
    iio.imwrite(tmp_path / "a.png", noisy_image())
    for window in ("4", "0", "wide"):
        result = run("denoise", tmp_path / "a.png", "-o", tmp_path / "o.png", "--window", window)
        assert result.exit_code == 2 and "'global'" in result.output and "None" not in result.output


def test_an_existing_output_is_skipped_without_computing_it(tmp_path, monkeypatch):
    iio.imwrite(tmp_path / "a.png", noisy_image())
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").write_bytes(b"an earlier result")
    forbid_denoising(monkeypatch)
    result = run("denoise", tmp_path / "a.png", "-o", tmp_path / "out", "--report", "-")
    assert result.exit_code == 0
    (entry,) = report_entries(result.stdout)
    assert entry["status"] == "skipped" and entry["error"].startswith("output exists")
    assert (tmp_path / "out" / "a.png").read_bytes() == b"an earlier result"


def gpu_exception(name: str, base: type = RuntimeError) -> BaseException:
    """An exception of a class that lives in a CuPy module, as CuPy raises them."""
    return type(name, (base,), {"__module__": "cupy.cuda.memory"})("out of memory allocating 4,194,304 bytes")


@pytest.mark.parametrize(("error", "advice"), [
    (gpu_exception("OutOfMemoryError", MemoryError), "GPU out of memory"),
    (gpu_exception("CUDARuntimeError"), "GPU error (CUDARuntimeError"),
])
def test_gpu_failures_are_reported_per_file_with_gpu_advice(tmp_path, monkeypatch, error, advice):
    for name in ("a.png", "b.png"):
        iio.imwrite(tmp_path / name, noisy_image())

    def failing(real, image):
        raise error

    replace_denoising(monkeypatch, failing)
    result = run("denoise", tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "out")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.count(advice) == 2 and "--device cpu" in result.output
    assert "0 denoised, 2 failed" in result.output


def test_other_exceptions_are_not_disguised_as_gpu_failures(tmp_path, monkeypatch):
    iio.imwrite(tmp_path / "a.png", noisy_image())

    def failing(real, image):
        raise KeyError("a bug")

    replace_denoising(monkeypatch, failing)
    with pytest.raises(KeyError):
        CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png")],
                           catch_exceptions=False)


def test_auto_device_says_once_why_an_installed_gpu_stack_is_not_used(tmp_path, monkeypatch):
    for name in ("a.png", "b.png"):
        iio.imwrite(tmp_path / name, noisy_image())
    monkeypatch.setattr("nlfilt.cli.denoise.gpu_status",
                        lambda: (False, "CuPy 14.2.0 cannot use CUDA (no CUDA-capable device is detected)"))
    monkeypatch.setattr("nlfilt.cli.denoise.get_backend", lambda device: get_backend("cpu"))
    result = run("denoise", tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "out")
    assert result.exit_code == 0 and result.output.count("notice: computing on the CPU") == 1
    quiet = run("denoise", tmp_path / "a.png", "-o", tmp_path / "quiet.png", "--quiet")
    assert quiet.exit_code == 0 and quiet.output == ""
    monkeypatch.setattr("nlfilt.cli.denoise.gpu_status", lambda: (False, "CuPy is not installed (...)"))
    plain = run("denoise", tmp_path / "a.png", "-o", tmp_path / "plain.png")
    assert "notice" not in plain.output


def test_a_signal_is_acted_on_at_the_next_check_or_progress_report_only():
    """The handler never raises: the main thread may be anywhere (in an import, holding a module lock
    that an output writer thread needs).  The batch checks between files and at progress reports."""
    from nlfilt.cli.interrupts import Interrupted, signals_interrupt

    before = signal.getsignal(signal.SIGINT)  # the default handler, or SIG_IGN in a background job
    seen = []
    with signals_interrupt() as gate:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # nothing raised here
        kept = gate.received
        with pytest.raises(Interrupted, match="SIGTERM"):
            gate.check()
    assert kept == signal.SIGTERM
    with signals_interrupt() as gate:
        report = gate.watch(lambda done, total: seen.append(done))
        report(1.0, 3)
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(Interrupted, match="SIGINT"):
            report(2.0, 3)  # a long filter stops at its next progress report
    assert seen == [1.0]
    assert signal.getsignal(signal.SIGINT) is before  # restored
