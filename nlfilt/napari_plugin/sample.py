"""nlfilt's sample image as napari sample data: the noisy scene, and the clean one (hidden) to compare."""

from __future__ import annotations

from typing import Any

from nlfilt.sample import SIGMA, noisy_sample, scene


def sample_data() -> list[tuple[Any, dict[str, Any]]]:
    """The (data, properties) pairs napari adds as layers: the clean scene, hidden, and the noisy one."""
    levels = (0, 255)
    return [(scene(), {"name": "nlfilt sample (clean)", "visible": False, "contrast_limits": levels}),
            (noisy_sample(), {"name": f"nlfilt sample (noisy, sigma {SIGMA:g})", "contrast_limits": levels})]
