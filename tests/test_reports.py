"""What a run tells its user: the JSON-lines report, the summary line, quiet runs, stopping and
guides reported per input."""

from __future__ import annotations

import os
from pathlib import Path

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


def test_inputs_that_cannot_be_read_are_each_reported_with_the_reason(tmp_path, monkeypatch):
    """Links that lead nowhere, link loops, a folder that cannot be listed, a link to a folder and a pipe:
    each is a skipped line of the report, a message and a count in the summary; nothing is silent."""
    folder = tmp_path / "in"
    (folder / "locked").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    iio.imwrite(folder / "a.png", noisy_pixels(numpy.uint8)[1])
    (folder / "dangling.png").symlink_to("missing.png")
    (folder / "self.png").symlink_to("self.png")
    (folder / "b1.png").symlink_to("b2.png")
    (folder / "b2.png").symlink_to("b1.png")
    (folder / "photos").symlink_to(tmp_path / "elsewhere")
    os.mkfifo(folder / "pipe.png")
    (folder / "notes.txt").write_text("not an image: not an input")
    scandir = os.scandir

    def scandir_refused_in_locked(path="."):
        if Path(path) == folder / "locked":  # what chmod 000 does for users other than root
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr("nlfilt.cli.inputs.os.scandir", scandir_refused_in_locked)
    result = CliRunner().invoke(main, ["denoise", str(folder), "-o", str(tmp_path / "out"), "--recursive",
                                       "--report", "-", "--method", "filter"])
    assert result.exit_code == 0, result.output
    reasons = {Path(entry["input"]).name: (entry["status"], entry["error"])
               for entry in report_entries(result.stdout)}
    assert reasons.pop("a.png") == ("denoised", None)
    expected = {"dangling.png": "dangling symbolic link", "self.png": "loop", "b1.png": "loop",
                "b2.png": "loop", "photos": "link to the folder", "pipe.png": "not a regular file",
                "locked": "cannot list this folder (Permission denied)"}
    assert set(reasons) == set(expected)
    for name, reason in expected.items():
        status, error = reasons[name]
        assert status == "skipped" and reason in error, (name, status, error)
        assert f"skipped: {folder / name}: {error}" in result.stderr
    assert ("1 denoised, 0 failed, 7 skipped (passed over: 1 dangling link, 3 link loops, 1 link to a "
            "folder, 1 unreadable entry, 1 special file)") in result.stderr
    quiet = CliRunner().invoke(main, ["denoise", str(folder), "-o", str(tmp_path / "out"), "--quiet",
                                      "--report", "-"])
    assert quiet.exit_code == 0 and quiet.stderr == ""  # the report still has every input
    assert len(report_entries(quiet.stdout)) == 6  # without --recursive: no folder, no link to one


def test_a_folder_with_only_inputs_that_cannot_be_read_still_reports_them(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "dangling.png").symlink_to("missing.png")
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                                       "--report", "-"])
    assert result.exit_code == 0 and "0 denoised, 0 failed, 1 skipped" in result.stderr
    (entry,) = report_entries(result.stdout)
    assert entry["status"] == "skipped" and "missing.png does not exist" in entry["error"]
    (tmp_path / "empty").mkdir()
    empty = CliRunner().invoke(main, ["denoise", str(tmp_path / "empty"), "-o", str(tmp_path / "o2")])
    assert empty.exit_code == 2 and "no image files found" in empty.output


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
