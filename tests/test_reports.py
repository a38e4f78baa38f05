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
    assert set(good) == {"input", "output", "status", "error", "warning", "sigma", "iterations",
                         "pilot_iterations", "seconds", "device"}
    assert good["iterations"] == 2 and good["device"] == "cpu" and good["error"] is None
    assert 0.05 * 255 < good["sigma"] < 0.11 * 255 and good["seconds"] > 0
    assert bad["input"].endswith("b.png") and "cannot read" in bad["error"]
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


def test_a_sigma_ten_times_away_from_the_estimate_is_warned_about_in_the_files_units(tmp_path):
    _, noisy = noisy_pixels(numpy.uint16)  # noise about 0.08 * 65535 = 5243 levels
    iio.imwrite(tmp_path / "a.png", noisy)
    command = ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--report", "-",
               "--method", "filter", "--overwrite"]
    result = CliRunner().invoke(main, [*command, "--sigma", "25"])
    assert result.exit_code == 0, result.output
    message = " ".join(result.stderr.split())
    assert "warning:" in message and "--sigma 25 is" in message and "times below" in message
    assert "uint16 levels, 0 to 65535" in message
    estimate = float(message.split("estimated in the image, ")[1].split(" ")[0])
    assert 2600 < estimate < 10500  # within 2x of the noise added
    assert report_entries(result.stdout)[0]["warning"].startswith("--sigma 25 is")
    for sigma in ("5000", "auto"):  # in the file's units, or estimated: no warning
        result = CliRunner().invoke(main, [*command, "--sigma", sigma])
        assert result.exit_code == 0 and "warning" not in result.stderr, result.stderr
        assert report_entries(result.stdout)[0]["warning"] is None
    result = CliRunner().invoke(main, [*command, "--sigma", "500000"])
    assert "times above" in result.stderr
