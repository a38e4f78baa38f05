"""The one place that chooses what computes an operator: its array code, or compiled kernels that serve it.

On the CPU :func:`nlfilt.jit.select` (numba), on a GPU
:func:`nlfilt.cuda.operators.select` (CUDA); each wraps the array-code
operator (its twin) when it has kernels for it, and gives it back otherwise.
The accelerators are imported here and nowhere in the layers they serve, so the
operators, the backend and the collaborative filter import none of them.
"""

from __future__ import annotations

from typing import Any

from nlfilt import jit
from nlfilt.backend import Backend
from nlfilt.cuda import operators as cuda_operators


def accelerate(backend: Backend, operator: Any, kernel: Any = None) -> Any:
    """The operator to compute with on ``backend``: ``operator`` itself (the array code), or a compiled
    one serving it where one exists for it (and ``kernel``, for an affinity operator)."""
    select = cuda_operators.select if backend.name == "gpu" else jit.select
    return select(operator, kernel)
