"""What the command-line tests share: test images, running the CLI, reading its reports, replacing the
denoising so that a test can watch or forbid it, stopping a dask worker in the middle of a write."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy
import pytest
from click.testing import CliRunner

from nlfilt.cli import main


def scene(height: int = 40, width: int = 48) -> numpy.ndarray:
    """A clean gray test scene in [0, 1]: a gradient, a bright square, stripes."""
    rows, cols = numpy.mgrid[0:height, 0:width] / max(height, width)
    clean = 0.2 + 0.4 * cols
    clean[8:24, 8:24] = 0.85
    clean[:, 30:] = numpy.where((numpy.arange(30, width) // 3) % 2 == 0, 0.9, 0.15)
    return clean + 0.05 * rows


def noisy_pixels(dtype, channels: int = 0, sigma: float = 0.08,
                 seed: int = 9) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(clean, noisy) :func:`scene` in ``dtype`` units and the given layout (0: 2-D gray); the same noise
    for the same seed, whatever ran before."""
    clean = scene()
    if channels:
        clean = numpy.stack([clean * (0.8 + 0.1 * c) for c in range(channels)], axis=2)
    noise = numpy.random.default_rng(seed).normal(0, sigma, clean.shape)
    noisy = numpy.clip(clean + noise, 0, 1)
    scale = numpy.iinfo(dtype).max if numpy.dtype(dtype).kind == "u" else 1.0
    if scale == 1.0:
        return clean.astype(dtype), noisy.astype(dtype)
    return numpy.round(clean * scale).astype(dtype), numpy.round(noisy * scale).astype(dtype)


def noisy_image(height: int = 40, width: int = 48, channels: int = 0, seed: int = 12) -> numpy.ndarray:
    """A noisy 8-bit horizontal ramp (sigma 20), cheap to denoise."""
    clean = numpy.linspace(40, 200, width)[None, :].repeat(height, axis=0)
    if channels:
        clean = numpy.stack([clean] * channels, axis=2)
    noise = numpy.random.default_rng(seed).normal(0, 20, clean.shape)
    return numpy.clip(numpy.round(clean + noise), 0, 255).astype(numpy.uint8)


def run(*args: object) -> object:
    """``nlfilt ARGS`` in-process; an exception the CLI does not handle fails the test with its traceback."""
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def report_entries(text: str) -> list[dict]:
    """The per-input lines of a report (each run's first line describes the run)."""
    records = [json.loads(line) for line in text.splitlines()]
    return [record for record in records if "run" not in record]


def error(clean: numpy.ndarray, image: numpy.ndarray) -> float:
    """Mean squared error in the images' own units."""
    return float(numpy.mean((clean.astype(float) - image.astype(float)) ** 2))


def replace_denoising(monkeypatch: pytest.MonkeyPatch, replacement) -> None:
    """Every method's denoising runs ``replacement(real, image)`` instead (``real()`` is the method's own
    call)."""
    from nlfilt.methods import method, method_names

    for name in method_names():
        kind = type(method(name))

        def instead(self, image, plan, progress, real=kind.denoise):
            return replacement(lambda: real(self, image, plan, progress), image)

        monkeypatch.setattr(kind, "denoise", instead)


def forbid_denoising(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any denoising (or any decoding) fail the test: checks must come first."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("computed or decoded before the check")

    replace_denoising(monkeypatch, refuse)
    monkeypatch.setattr("nlfilt.images.iio.imread", refuse)


def dask_setup(worker: object) -> None:
    """Run by a dask worker started with ``--preload tests/clitools.py``: with ``NLFILT_TEST_PAUSE=
    POINT:MARKER`` in its environment, the worker's first output write stops at POINT, creates the file
    MARKER and waits there (to be killed).

    POINT is 'before' (the partial file not created yet), 'during' (half of
    the encoded image in the partial file) or 'after' (the partial file
    complete, not yet put in place).
    """
    setting = os.environ.get("NLFILT_TEST_PAUSE")
    if not setting:
        return
    point, marker = setting.split(":", 1)
    from nlfilt import images

    def pause() -> None:
        Path(marker).write_text(f"{point} {os.getpid()}")
        time.sleep(600)

    if point == "before":
        write_atomically = images.write_atomically

        def paused_before(*args: object, **kwargs: object) -> None:
            pause()
            write_atomically(*args, **kwargs)

        images.write_atomically = paused_before
    elif point == "during":
        encode = images.iio.imwrite

        def paused_during(uri: object, image: object, **kwargs: object) -> None:
            data = encode("<bytes>", image, **kwargs)
            Path(uri).write_bytes(data[: len(data) // 2])
            pause()

        images.iio.imwrite = paused_during
    elif point == "after":
        place_new = images._place_new

        def paused_after(temporary: Path, path: Path) -> None:
            pause()
            place_new(temporary, path)

        images._place_new = paused_after
    else:
        raise ValueError(f"NLFILT_TEST_PAUSE: unknown point {point!r}")
