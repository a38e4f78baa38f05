"""What the benchmark scripts share: where the data and the results are, the images and their noise, the
measure of an estimate, the line saying what machine a table came from, and the writer.

Imported by each script (they run as ``python benchmarks/NAME.py``, so this folder is on their import
path).
"""

from __future__ import annotations

import os
import platform
import sys
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
