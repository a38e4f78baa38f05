"""Where outputs go: files into folders, reruns, partial files, and inputs that must never be
overwritten whatever path reaches them."""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v3 as iio
import numpy
import pytest
from click.testing import CliRunner

from nlfilt.cli import main

from clitools import noisy_pixels, replace_denoising, report_entries, run


def test_single_file_into_a_folder_and_folder_inputs(tmp_path):
    _, noisy = noisy_pixels(numpy.uint8)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("a.png", "b.png", "sub/c.png"):
        iio.imwrite(tmp_path / "in" / name, noisy)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    assert run("denoise", tmp_path / "in" / "a.png", "-o", tmp_path / "one", "--quiet").exit_code == 0
    assert (tmp_path / "one" / "a.png").is_file()
    assert run("denoise", tmp_path / "in", "-o", tmp_path / "flat", "--quiet").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["a.png", "b.png"]
    assert run("denoise", tmp_path / "in", "-o", tmp_path / "deep", "--recursive", "--quiet").exit_code == 0
    assert (tmp_path / "deep" / "sub" / "c.png").is_file()


def test_rerun_skips_existing_outputs_unless_overwrite(tmp_path):
    _, noisy = noisy_pixels(numpy.uint8)
    for name in ("a.png", "b.png"):
        iio.imwrite(tmp_path / name, noisy)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"left by an earlier run")
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                                       "-o", str(out)])
    assert result.exit_code == 0 and "1 denoised, 0 failed, 1 skipped" in result.output
    assert (out / "a.png").read_bytes() == b"left by an earlier run"
    result = run("denoise", tmp_path / "a.png", "-o", out / "a.png", "--overwrite")
    assert result.exit_code == 0 and iio.imread(out / "a.png").shape == noisy.shape


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch, failure):
    _, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "a.png", noisy)

    def broken_write(path, *args, **kwargs):
        Path(path).write_bytes(b"half an image")
        raise failure

    monkeypatch.setattr("nlfilt.images.iio.imwrite", broken_write)
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "out.png")])
    assert result.exit_code == (1 if isinstance(failure, OSError) else 130)
    if isinstance(failure, OSError):
        assert "disk full" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_refuses_to_write_over_an_input(tmp_path):
    _, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(tmp_path / "a.png", noisy)
    before = (tmp_path / "a.png").read_bytes()
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.png"),
                                       "--overwrite"])
    assert result.exit_code == 2 and "refusing to overwrite an input" in result.output
    result = CliRunner().invoke(main, ["denoise", str(tmp_path), "-o", str(tmp_path), "--overwrite"])
    assert result.exit_code == 2 and "is the input folder" in result.output
    assert (tmp_path / "a.png").read_bytes() == before


def input_folder(tmp_path: Path) -> tuple[Path, bytes]:
    folder = tmp_path / "in"
    folder.mkdir()
    _, noisy = noisy_pixels(numpy.uint8)
    iio.imwrite(folder / "a.png", noisy)
    return folder, (folder / "a.png").read_bytes()


@pytest.mark.parametrize("route", ["dotdot", "symlink", "hardlink", "symlinked-folder"])
def test_an_input_reached_by_another_path_is_never_overwritten(tmp_path, route):
    folder, before = input_folder(tmp_path)
    if route == "dotdot":
        output = folder / ".." / "in" / "a.png"
    elif route == "symlink":
        output = tmp_path / "link.png"
        output.symlink_to(folder / "a.png")
    elif route == "hardlink":
        output = tmp_path / "hard.png"
        output.hardlink_to(folder / "a.png")
    else:
        (tmp_path / "alias").symlink_to(folder)
        output = tmp_path / "alias" / "a.png"
    result = CliRunner().invoke(main, ["denoise", str(folder / "a.png"), "-o", str(output), "--overwrite"])
    assert result.exit_code == 2 and "refusing to overwrite an input" in result.output, result.output
    assert (folder / "a.png").read_bytes() == before
    result = CliRunner().invoke(main, ["denoise", str(folder), "-o", str(output.parent), "--overwrite"])
    assert result.exit_code == 2 and (folder / "a.png").read_bytes() == before


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "recursive"])
def test_an_output_folder_that_is_an_input_folder_is_a_usage_error(tmp_path, spelling):
    folder, before = input_folder(tmp_path)
    output = {"dotdot": folder / ".." / "in", "symlink": tmp_path / "alias"}.get(spelling, folder)
    if spelling == "symlink":
        output.symlink_to(folder)
    extra = ["--recursive"] if spelling == "recursive" else []
    result = run("denoise", folder, "-o", output, "--overwrite", *extra)
    assert result.exit_code == 2, result.output
    assert f"the output folder {output} is the input folder {folder}" in result.output
    assert "no image files" not in result.output
    assert os.listdir(folder) == ["a.png"] and (folder / "a.png").read_bytes() == before


#: How a file is named twice: (its names, the second name when its output would be another file).
NAMED_TWICE = {
    "twice": (["in/a.png", "in/a.png"], None),
    "file-and-folder": (["in/a.png", "in"], None),
    "twice-to-one-file": (["in/a.png", "in/a.png"], None),
    "link-named": (["in/a.png", "link.png"], "link.png"),
    "link-in-folder": (["in", "in/a.png"], "link.png"),
    "hard-link-in-folder": (["in"], "hard.png"),
}


@pytest.mark.parametrize("route", list(NAMED_TWICE))
def test_a_file_named_twice_is_denoised_once(tmp_path, monkeypatch, route):
    folder, _ = input_folder(tmp_path)
    names, second = NAMED_TWICE[route]
    out = tmp_path / ("one.png" if route == "twice-to-one-file" else "out")
    if route == "link-named":
        (tmp_path / "link.png").symlink_to(folder / "a.png")
    elif route == "link-in-folder":
        (folder / "link.png").symlink_to("a.png")
    elif route == "hard-link-in-folder":
        (folder / "hard.png").hardlink_to(folder / "a.png")
    calls = []
    replace_denoising(monkeypatch, lambda real, image: (calls.append(1), real())[1])
    result = run("denoise", *[tmp_path / name for name in names], "-o", out, "--report", "-")
    assert result.exit_code == 0, result.output
    assert len(calls) == 1
    entries = report_entries(result.stdout)
    statuses = [(Path(entry["input"]).name, entry["status"]) for entry in entries]
    if second is None:  # the same output too: counted once
        assert statuses == [("a.png", "denoised")] and "1 denoised, 0 failed, 0 skipped" in result.stderr
        assert out.is_file() or os.listdir(out) == ["a.png"]
        return
    assert sorted(statuses) == [("a.png", "denoised"), (second, "skipped")]
    (skipped,) = [entry for entry in entries if entry["status"] == "skipped"]
    assert f"the same file as {folder / 'a.png'}" in skipped["error"]
    assert "1 denoised, 0 failed, 1 skipped (passed over: 1 file named twice)" in result.stderr
    assert os.listdir(out) == ["a.png"]


def test_two_inputs_with_one_output_are_refused_before_anything_runs(tmp_path):
    for name in ("d1", "d2"):
        (tmp_path / name).mkdir()
        iio.imwrite(tmp_path / name / "a.png", noisy_pixels(numpy.uint8)[1])
    result = run("denoise", tmp_path / "d1" / "a.png", tmp_path / "d2" / "a.png", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "would both be written to" in result.output
    assert not (tmp_path / "out").exists()


def test_hidden_and_partial_files_are_never_taken_as_inputs(tmp_path):
    folder, _ = input_folder(tmp_path)
    noisy = iio.imread(folder / "a.png")
    iio.imwrite(folder / ".hidden.png", noisy)
    iio.imwrite(folder / ".a.x1y2.nlfilt-host-123.partial.png", noisy)
    (folder / ".git").mkdir()
    iio.imwrite(folder / ".git" / "b.png", noisy)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".c.x1y2.nlfilt-elsewhere-1.partial.png").write_bytes(b"someone else's partial file")
    result = run("denoise", folder, "-o", out, "--recursive", "--report", "-")
    assert result.exit_code == 0
    assert [Path(entry["input"]).name for entry in report_entries(result.stdout)] == ["a.png"]
    assert sorted(path.name for path in out.iterdir()) == [".c.x1y2.nlfilt-elsewhere-1.partial.png", "a.png"]
