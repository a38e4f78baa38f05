"""The command line itself: usage errors, the module entry point in a subprocess, the device report and
requests."""

from __future__ import annotations

import subprocess
import sys

import imageio.v3 as iio
import numpy
import pytest
from click.testing import CliRunner

from nlfilt.backend import gpu_status
from nlfilt.cli import main

from clitools import noisy_pixels, report_entries, run


def test_usage_errors_exit_2_without_traceback(tmp_path):
    _, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "a.png", noisy)
    cases = [
        ["--window", "4"],
        ["--window", "wide"],
        ["--kernel", "arccos", "--sigma", "3"],
        ["--sigma", "-1"],
        ["--patch", "4"],
        ["--iterations", "0"],
        ["--iterations", "many"],
        ["--stop", "sure"],
        ["--iterations", "auto", "--max-iterations", "0"],
        ["--kernel", "arccos", "--normalize", "sinkhorn"],
        ["--guide", "oracle"],
        ["--kernel", "gauss"],
    ]
    for extra in cases:
        result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"),
                                           "--method", "filter", *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert "Traceback" not in result.output
    missing = CliRunner().invoke(main, ["denoise", str(tmp_path / "missing.png"), "-o", str(tmp_path)])
    assert missing.exit_code == 2 and "missing.png" in missing.output


def test_info_without_gpu():
    result = run("info")
    assert result.exit_code == 0
    assert "nlfilt" in result.output and "NumPy" in result.output and "CuPy" in result.output
    assert "numba" in result.output and "windowed NLM" in result.output
    if not gpu_status()[0]:
        assert "GPU: not usable" in result.output and "device auto: cpu" in result.output


def test_gpu_request_without_gpu_fails_clearly(tmp_path):
    if gpu_status()[0]:
        pytest.skip("a GPU is usable here")
    _, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "a.png", noisy)
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"),
                                       "--device", "gpu"])
    assert result.exit_code == 1 and "no GPU is usable" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o.png").exists()


def test_module_entry_point_in_a_subprocess(tmp_path):
    _, noisy = noisy_pixels(numpy.uint16)
    iio.imwrite(tmp_path / "a.tif", noisy)
    (tmp_path / "bad.tif").write_bytes(b"II*\0broken")
    done = subprocess.run([sys.executable, "-m", "nlfilt", "denoise", "--method", "filter", str(tmp_path),
                           "-o", str(tmp_path / "out"), "--report", "-"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "bad.tif" in done.stderr
    assert [entry["status"] for entry in report_entries(done.stdout)] == ["denoised", "failed"]
    assert iio.imread(tmp_path / "out" / "a.tif").dtype == numpy.uint16


def test_the_command_summaries_are_whole_and_the_readme_table_lists_every_denoise_option():
    from pathlib import Path

    from nlfilt.cli.denoise import denoise_command

    summary = CliRunner().invoke(main, ["--help"], terminal_width=80).output
    commands = summary.split("Commands:")[1]
    assert "..." not in commands and "collaborative" in summary.split("Options:")[0]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = {line.split("`")[1].split()[0] for line in readme.splitlines() if line.startswith("| `--")}
    options = {name for param in denoise_command.params for name in param.opts if name.startswith("--")}
    assert options - {"--output", "--help"} <= table, options - table  # every option has its README row
    assert table <= options, table - options  # and the README names no option the command lacks
