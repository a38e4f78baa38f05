"""Large TIFF files streamed chunk by chunk into a tiled BigTIFF (nlfilt.cli.stream)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy
import pytest
from click.testing import CliRunner

from nlfilt.cli import main

pytest.importorskip("dask.array", reason="needs nlfilt[dask]")
pytest.importorskip("zarr", reason="needs nlfilt[dask]")
tifffile = pytest.importorskip("tifffile")


def scene16(height: int, width: int, channels: int = 0, seed: int = 0) -> numpy.ndarray:
    rows, cols = numpy.mgrid[:height, :width]
    clean = 30000 + 15000 * numpy.sin(rows / 40.0) * numpy.cos(cols / 55.0)
    if channels:
        clean = numpy.stack([clean * (0.7 + 0.1 * c) for c in range(channels)], axis=2)
    noisy = clean + numpy.random.default_rng(seed).normal(0, 3000, clean.shape)
    return numpy.clip(noisy, 0, 65535).astype(numpy.uint16)


def denoise(*args: str) -> Any:
    return CliRunner().invoke(main, ["denoise", *map(str, args)])


@pytest.mark.parametrize(("channels", "method"), [(0, "filter"), (3, "filter"), (0, "collaborative")])
def test_a_streamed_tiff_is_the_whole_image_result_as_a_tiled_bigtiff(tmp_path, channels, method):
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, scene16(700, 600, channels), compression="zlib", rowsperstrip=32,
                     photometric="rgb" if channels else "minisblack")
    assert denoise(source, "-o", tmp_path / "whole.tif", "--method", method, "--quiet").exit_code == 0
    result = denoise(source, "-o", tmp_path / "out" / "chunked.tif", "--method", method, "--chunk", "256",
                     "--report", "-")
    assert result.exit_code == 0, result.output
    (entry,) = [json.loads(line) for line in result.stdout.splitlines() if '"input"' in line]
    assert entry["status"] == "denoised" and entry["sigma"] > 0
    whole = tifffile.imread(tmp_path / "whole.tif").astype(numpy.int64)
    with tifffile.TiffFile(tmp_path / "out" / "chunked.tif") as chunked:
        page = chunked.pages[0]
        assert chunked.is_bigtiff and page.is_tiled
        assert page.dtype == numpy.uint16 and page.shape == whole.shape
        values = page.asarray().astype(numpy.int64)
    difference = numpy.abs(values - whole)
    # float32 rounding only: within 1 for the filter; in the collaborative filter, a pilot value that
    # rounds to the other side of a matching level can change a group, which moves a few values further
    # (measured: 57 of 65535 at most, 0.6 % of the pixels)
    assert (difference > 1).mean() < (0.01 if method == "collaborative" else 1e-9)
    assert difference.max() <= (100 if method == "collaborative" else 1)
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["chunked.tif"]  # no partial file


def test_tiffs_over_the_size_limit_are_streamed_without_asking(tmp_path, monkeypatch):
    monkeypatch.setattr("nlfilt.cli.stream.STREAM_PIXELS", 100 * 100)
    tifffile.imwrite(tmp_path / "in.tif", scene16(300, 280))
    assert denoise(tmp_path / "in.tif", "-o", tmp_path / "out.tif", "--method", "filter").exit_code == 0
    with tifffile.TiffFile(tmp_path / "out.tif") as written:
        assert written.pages[0].is_tiled and written.is_bigtiff


def test_what_needs_the_whole_image_is_refused_per_file_with_the_reason(tmp_path):
    tifffile.imwrite(tmp_path / "in.tif", scene16(300, 280))
    for extra, reason in [(["--guide", "pilot"], "which no chunk has"),
                          (["--normalize", "sinkhorn"], "which no chunk knows"),
                          (["--window", "global"], "global mode")]:
        result = denoise(tmp_path / "in.tif", "-o", tmp_path / "o.tif", "--method", "filter",
                         "--chunk", "256", *extra)
        assert result.exit_code == 1 and reason in result.output, result.output
        assert not (tmp_path / "o.tif").exists()


def test_without_the_extra_a_streamed_file_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zarr", None)
    tifffile.imwrite(tmp_path / "in.tif", scene16(300, 280))
    result = denoise(tmp_path / "in.tif", "-o", tmp_path / "o.tif", "--chunk", "256")
    assert result.exit_code == 1 and "pip install 'nlfilt[dask]'" in result.output


#: Runs the command line and prints its peak resident memory (KiB).  VmHWM of /proc/self/status, not
#: getrusage's ru_maxrss, which keeps the parent's resident size from before the fork across exec.
MEASURE = """
import re, sys
from nlfilt.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    status = open("/proc/self/status").read()
    print("peak", re.search(r"VmHWM:\\s+(\\d+)", status).group(1), file=sys.stderr)
"""


def peak_mib(tmp_path: Path, height: int, width: int) -> float:
    """Peak resident memory (MiB) of streaming a height x width uint16 TIFF in 512-pixel chunks."""
    source = tmp_path / f"in{height}.tif"
    tifffile.imwrite(source, scene16(height, width), compression="zlib", rowsperstrip=64)
    done = subprocess.run([sys.executable, "-c", MEASURE, "denoise", str(source), "-o", str(tmp_path / "out"),
                           "--method", "filter", "--chunk", "512", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert tifffile.imread(tmp_path / "out" / source.name).shape == (height, width)
    return int(done.stderr.split("peak")[-1]) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_memory_grows_with_the_band_not_with_the_image(tmp_path):
    """Twice the rows (2400 -> 4800, width 3000) leave the peak where it was: a band of rows at a time,
    and the noise level from a crop of at most 2048 x 2048 pixels.  (Read whole, a 4000 x 4000 image
    peaks at 1.85 GB.)"""
    small, large = peak_mib(tmp_path, 2400, 3000), peak_mib(tmp_path, 4800, 3000)
    assert large < small + 60 and large < 1024, (small, large)
