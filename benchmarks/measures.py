"""What the benchmark scripts measure an estimate by (one definition, imported by each script:
the scripts run as ``python benchmarks/NAME.py``, so this folder is on their import path)."""

from __future__ import annotations

import numpy

#: The peak value of the 8-bit images the benchmarks denoise.
PEAK = 255.0


def psnr(estimate, clean: numpy.ndarray, *, clip: bool = False) -> float:
    """Peak signal-to-noise ratio in dB against ``clean`` (peak 255); with ``clip``, of the estimate
    clipped to [0, 255] first, as an 8-bit output would be."""
    values = numpy.asarray(estimate, dtype=numpy.float64)
    if clip:
        values = numpy.clip(values, 0, PEAK)
    return float(10 * numpy.log10(PEAK**2 / numpy.mean((values - clean) ** 2)))
