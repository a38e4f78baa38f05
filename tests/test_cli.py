"""The command line itself: usage errors, the module entry point in a subprocess, the device report and
requests."""

from __future__ import annotations

import builtins
import subprocess
import sys
import types

import imageio.v3 as iio
import numpy
import pytest
from click.testing import CliRunner

from nlfilt import backend
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
    assert "numba" in result.output and "compiled windowed operators" in result.output
    if not gpu_status()[0]:
        assert "GPU: not usable" in result.output and "device auto: cpu" in result.output


def test_gpu_request_without_gpu_is_a_usage_error_in_command_line_words(tmp_path):
    if gpu_status()[0]:
        pytest.skip("a GPU is usable here")
    _, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "a.png", noisy)
    commands = [["denoise", tmp_path / "a.png", "-o", tmp_path / "o.png"],
                ["filter-map", tmp_path / "a.png", "--pixel", 3, 3, "-o", tmp_path / "o.png"],
                ["spectrum", tmp_path / "a.png", "-o", tmp_path / "o.png"],
                ["compare-network", tmp_path / "a.png", "--steps", 1]]
    for command in commands:
        result = run(*command, "--device", "gpu")
        assert result.exit_code == 2, (command[0], result.output)
        assert "--device gpu: no GPU is usable" in result.output and gpu_status()[1] in result.output
        assert "device='gpu'" not in result.output and not (tmp_path / "o.png").exists()


@pytest.fixture
def fresh_cupy_import():
    """The backend's memory of CuPy's import and devices forgotten before and after the test."""
    backend._import_cupy.cache_clear()
    backend._cupy_or_reason.cache_clear()
    yield
    backend._import_cupy.cache_clear()
    backend._cupy_or_reason.cache_clear()


IMPORT_FAILURES = [
    FileNotFoundError(2, "No such file or directory", "/proc/nonexistent"),  # an unwritable HOME's cache
    PermissionError(13, "Permission denied", "/home/user/.cupy"),
    RuntimeError("CUDA environment is not correctly set up"),
    OSError("libcudart.so.13: cannot open shared object file"),
    AttributeError("module 'numpy' has no attribute 'bool8'"),
    ModuleNotFoundError("No module named 'fastrlock'", name="fastrlock"),
]


@pytest.mark.parametrize("failure", IMPORT_FAILURES, ids=[type(error).__name__ for error in IMPORT_FAILURES])
def test_any_failure_of_cupy_import_means_no_gpu_with_the_reason(tmp_path, monkeypatch, fresh_cupy_import,
                                                                 failure):
    real_import = builtins.__import__

    def importing(name, *args, **kwargs):
        if name == "cupy" or name.startswith("cupy."):
            raise failure
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", importing)
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    for name in ("a.png", "b.png"):
        iio.imwrite(tmp_path / name, noisy_pixels(numpy.uint8)[1])
    cause = f"CuPy cannot be imported ({type(failure).__name__}"
    auto = run("denoise", tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "out",
               "--method", "filter")
    assert auto.exit_code == 0, auto.output
    assert auto.stderr.count("notice: computing on the CPU") == 1 and cause in auto.stderr
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    gpu = run("denoise", tmp_path / "a.png", "-o", tmp_path / "gpu.png", "--device", "gpu")
    assert gpu.exit_code == 2 and "--device gpu: no GPU is usable" in gpu.output and cause in gpu.output
    info = run("info")
    assert info.exit_code == 0 and "CuPy cannot be imported" in info.output
    for result in (auto, gpu, info):
        assert "Traceback" not in result.output


@pytest.mark.parametrize("failure", [RuntimeError("cudaErrorInsufficientDriver"), OSError("libcuda.so.1")])
def test_a_failure_while_cupy_looks_for_devices_means_no_gpu_with_the_reason(tmp_path, monkeypatch,
                                                                             fresh_cupy_import, failure):
    def failing() -> int:
        raise failure

    runtime = types.SimpleNamespace(getDeviceCount=failing, runtimeGetVersion=failing,
                                    driverGetVersion=failing)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(__version__="99.0",
                                                                   cuda=types.SimpleNamespace(runtime=runtime)))
    iio.imwrite(tmp_path / "a.png", noisy_pixels(numpy.uint8)[1])
    auto = run("denoise", tmp_path / "a.png", "-o", tmp_path / "auto.png", "--method", "filter")
    assert auto.exit_code == 0 and f"CuPy 99.0 cannot use CUDA ({failure})" in auto.stderr
    gpu = run("denoise", tmp_path / "a.png", "-o", tmp_path / "gpu.png", "--device", "gpu")
    assert gpu.exit_code == 2 and f"cannot use CUDA ({failure})" in gpu.output
    assert "Traceback" not in auto.output + gpu.output and not (tmp_path / "gpu.png").exists()


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
