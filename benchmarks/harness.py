"""What the benchmark scripts share: where the data and the results are, the images and their noise, the
measure of an estimate, the line saying what machine a table came from, the writer, and the records that let a
long run stop and go on.

Imported by each script (they run as ``python benchmarks/NAME.py``, so this folder is on their import
path).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy

#: The checkout, the project's data folder beside it (Set12, Set5), and the results folder.
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
#: The image files the scripts read.
IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
#: The peak value of the 8-bit images the benchmarks denoise.
PEAK = 255.0


def psnr(estimate, clean: numpy.ndarray, *, clip: bool = False) -> float:
    """Peak signal-to-noise ratio in dB against ``clean`` (peak 255); with ``clip``, of the estimate
    clipped to [0, 255] first, as an 8-bit output would be."""
    values = numpy.asarray(estimate, dtype=numpy.float64)
    if clip:
        values = numpy.clip(values, 0, PEAK)
    return float(10 * numpy.log10(PEAK**2 / numpy.mean((values - clean) ** 2)))


def load_images(folder: Path) -> list[tuple[str, numpy.ndarray]]:
    """(file name, float64 image) for every image file of ``folder``, by name; alpha dropped."""
    images = []
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            image = iio.imread(path).astype(numpy.float64)
            images.append((path.name, image[:, :, :3] if image.ndim == 3 else image))
    return images


def centre_crops(folder: Path, names: tuple[str, ...], size: int,
                 sigma: float) -> list[tuple[str, numpy.ndarray, numpy.ndarray]]:
    """(file name, clean crop, noisy crop) of the ``size`` x ``size`` centre of each image ``names`` of
    ``folder``, noise ``sigma`` seeded by the image's position in ``names`` (unclipped float64)."""
    crops = []
    for index, name in enumerate(names):
        clean = iio.imread(Path(folder) / name).astype(numpy.float64)
        top = (clean.shape[0] - size) // 2
        clean = clean[top:top + size, top:top + size]
        crops.append((name, clean, add_noise(clean, sigma, index)))
    return crops


def add_noise(clean: numpy.ndarray, sigma: float, seed: int, *, clip: bool = False) -> numpy.ndarray:
    """``clean`` plus white Gaussian noise of standard deviation ``sigma`` from ``seed`` (float64); with
    ``clip``, rounded and clipped to 8 bits as a real photo is."""
    noisy = clean + sigma * numpy.random.default_rng(seed).standard_normal(clean.shape)
    return numpy.clip(numpy.round(noisy), 0, PEAK) if clip else noisy


def machine(script: str, *versions: str) -> str:
    """The line a results file starts with: the machine, the versions and the command that wrote it."""
    import nlfilt  # noqa: PLC0415 - the script imports it anyway

    parts = [f"{platform.machine()}", f"{os.cpu_count()} CPUs", f"Python {platform.python_version()}",
             f"NumPy {numpy.__version__}", f"nlfilt {nlfilt.__version__}", *versions]
    command = " ".join([f"benchmarks/{script}", *sys.argv[1:]])
    return f"Machine: {', '.join(parts)}; produced by `python {command}`.\n"


def write(name: str, text: str) -> Path:
    """Write ``text`` to ``benchmarks/results/NAME`` and say so."""
    path = RESULTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")
    print(f"written to {path}")
    return path


class Records:
    """Measurements kept one per line in a JSON-lines file, each under a key holding everything its values
    depend on, so that a run that stops, or grows by a row, measures only what is missing.

    A line is ``{"key": ..., "values": ..., "measured": {"date", "commit", "machine"}}``; the last line of a
    key wins, and a line cut short by a killed run is left out (with a word on stderr).  ``path`` None keeps
    nothing: every lookup misses and nothing is written.  With ``fresh``, the file's lines are not looked up
    (new ones are still added).
    """

    def __init__(self, path: Path | None, *, fresh: bool = False) -> None:
        self.path = path
        self.source = provenance()  # the code this run loaded, whatever the checkout becomes meanwhile
        self.entries: dict[str, dict] = {}
        self.used: list[dict] = []  # the "measured" part of every record this run looked up or added
        if path is None or fresh or not path.exists():
            return
        for number, line in enumerate(path.read_text().splitlines(), 1):
            try:
                entry = json.loads(line)
                self.entries[canonical(entry["key"])] = entry
            except (ValueError, KeyError, TypeError):
                if line.strip():
                    print(f"{path}:{number}: not a whole record, left out", file=sys.stderr)

    def get(self, key: dict) -> dict | None:
        """The values recorded under ``key``, or None."""
        entry = self.entries.get(canonical(key))
        if entry is not None:
            self.used.append(entry["measured"])
        return None if entry is None else entry["values"]

    def put(self, key: dict, values: dict) -> dict:
        """Record ``values`` (JSON-able) under ``key``, with today's date, and the commit and machine this
        run started on; return ``values``."""
        entry = {"key": key, "values": values, "measured": {**self.source, "date": time.strftime("%Y-%m-%d")}}
        self.entries[canonical(key)] = entry
        self.used.append(entry["measured"])
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as file:
                file.write(json.dumps(entry) + "\n")
        return values

    def summary(self, start: int = 0) -> str:
        """Where the values this run used from ``start`` on (an earlier ``len(used)``) were measured:
        their dates, commits and machines, each once."""
        used = self.used[start:]

        def listed(field: str) -> str:
            return ", ".join(sorted({entry[field] for entry in used}))
        if not used:
            return "No records used."
        shown = "this run" if self.path is None else (
            f"`{self.path.relative_to(RESULTS)}`" if self.path.is_relative_to(RESULTS) else f"`{self.path}`")
        return (f"The {len(used)} measurements behind these tables ({shown}) were made on "
                f"{listed('date')}, at commit {listed('commit')}, on {listed('machine')}.")


def canonical(key: dict) -> str:
    """``key`` as the one string a record is found by (sorted, compact JSON)."""
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def provenance() -> dict:
    """Today's date, the checkout's commit (``+changes`` when nlfilt/ or the scripts differ from it) and
    the machine, as a record stores them."""
    def git(*arguments: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *arguments], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", "nlfilt", "benchmarks/*.py"):
        commit += "+changes"
    return {"date": time.strftime("%Y-%m-%d"), "commit": commit,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
