"""What a run tells its user: the JSON-lines report, the summary line, quiet runs, stopping and
guides reported per input."""

from __future__ import annotations

import imageio.v3 as iio
import numpy
from click.testing import CliRunner

from nlfilt.cli import main

from clitools import error, noisy_pixels, report_entries, run


def test_report_lines_and_stdout_carrying_only_the_report(tmp_path):
    _, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "a.png", noisy)
    (tmp_path / "b.png").write_text("broken")
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                                       "-o", str(tmp_path / "out"), "--report", "-", "--method", "filter",
                                       "--iterations", "2"])
    assert result.exit_code == 1
    entries = report_entries(result.stdout)
    assert [entry["status"] for entry in entries] == ["denoised", "failed"]
    good, bad = entries
    assert set(good) == {"input", "output", "status", "error", "sigma", "iterations", "pilot_iterations",
                         "seconds", "device"}
    assert good["iterations"] == 2 and good["device"] == "cpu" and good["error"] is None
    assert 0.05 * 255 < good["sigma"] < 0.11 * 255 and good["seconds"] > 0
    assert bad["input"].endswith("b.png") and "not a PNG, TIFF, JPEG, BMP or WebP file" in bad["error"]
    report = tmp_path / "report.jsonl"
    run("denoise", tmp_path / "a.png", "-o", tmp_path / "out", "--report", report, "--quiet")
    assert report_entries(report.read_text())[0]["status"] == "skipped"


def test_quiet_run_prints_nothing(tmp_path):
    _, noisy = noisy_pixels(numpy.uint8)
    for name in ("a.png", "b.png"):
        iio.imwrite(tmp_path / name, noisy)
    result = CliRunner().invoke(main, ["denoise", str(tmp_path), "-o", str(tmp_path / "out"), "--quiet",
                                       "--method", "filter", "--iterations", "3"])
    assert result.exit_code == 0 and result.output == ""
    loud = CliRunner().invoke(main, ["denoise", str(tmp_path), "-o", str(tmp_path / "out2")])
    assert "2 denoised, 0 failed, 0 skipped" in loud.stderr


def test_automatic_stopping_guide_and_sinkhorn_are_reported(tmp_path):
    clean, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "a.png", noisy)
    cases = {
        "auto": (["--iterations", "auto"], None),
        "discrepancy": (["--iterations", "auto", "--stop", "discrepancy", "--normalize", "sinkhorn"], None),
        "guided": (["--iterations", "auto", "--guide", "pilot"], "pilot"),
        "arccos": (["--kernel", "arccos", "--iterations", "auto", "--max-iterations", "50"], None),
    }
    for name, (extra, guide) in cases.items():
        out = tmp_path / f"{name}.png"
        result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(out),
                                           "--report", "-", "--method", "filter", *extra])
        assert result.exit_code == 0, (name, result.output)
        (entry,) = report_entries(result.stdout)
        assert isinstance(entry["iterations"], int) and 1 <= entry["iterations"] <= 1000
        assert (entry["pilot_iterations"] is not None) == (guide is not None)
        assert entry["sigma"] > 0
        assert error(clean, iio.imread(out)) < 0.7 * error(clean, noisy), name


def test_the_report_folder_is_created_like_the_outputs_and_a_file_in_its_way_is_a_usage_error(tmp_path):
    _, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "a.png", noisy)
    report = tmp_path / "logs" / "today" / "run.jsonl"
    result = run("denoise", tmp_path / "a.png", "-o", tmp_path / "a-out.png", "--report", report, "--quiet")
    assert result.exit_code == 0, result.output
    assert [entry["status"] for entry in report_entries(report.read_text())] == ["denoised"]
    (tmp_path / "plain").write_text("a file, not a folder")
    blocked = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"),
                                        "--report", str(tmp_path / "plain" / "sub" / "run.jsonl")])
    assert blocked.exit_code == 2 and "--report" in blocked.output and "plain is a file" in blocked.output
    assert "Traceback" not in blocked.output and not (tmp_path / "b.png").exists()
