"""nlfilt: non-local image filters (NLM, arc-cosine, neural tangent kernel) with twicing.

The public functions are the denoisers :func:`denoise` and :func:`denoise_collaborative` (the
highest-quality mode), and the analysis functions :func:`twicing_trajectory`, :func:`filter_matrix`,
:func:`filter_row` and :func:`filter_spectrum`; they run on NumPy, or on CuPy when a GPU is usable.
"""

from nlfilt.analysis import (
    MAX_FILTER_MATRIX_PIXELS,
    Spectrum,
    Trajectory,
    filter_matrix,
    filter_row,
    filter_spectrum,
    twicing_trajectory,
)
from nlfilt.denoisers import DenoiseInfo, denoise, denoise_collaborative
from nlfilt.kernels import KERNELS, Kernel, kernel_names, register_kernel
from nlfilt.resolve import DEFAULT_MEMORY_BUDGET

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "DenoiseInfo",
    "KERNELS",
    "Kernel",
    "MAX_FILTER_MATRIX_PIXELS",
    "Spectrum",
    "Trajectory",
    "__version__",
    "denoise",
    "denoise_collaborative",
    "filter_matrix",
    "filter_row",
    "filter_spectrum",
    "kernel_names",
    "register_kernel",
    "twicing_trajectory",
]
