"""The one module that knows about NumPy and CuPy.

Every other module receives a :class:`Backend` and does its array work through
``backend.xp``, so the same operator code runs on the CPU (NumPy) and on a GPU
(CuPy).  CuPy is imported lazily, on the first request for a GPU, never at
import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import Any

DEVICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class Backend:
    """An array module and the device it computes on.

    Attributes
    ----------
    name : str
        ``'cpu'`` or ``'gpu'``.
    xp : module
        ``numpy`` or ``cupy``.
    workers : int
        Host threads an operator may use to run independent tiles or offsets
        concurrently (NumPy releases the GIL inside large array operations).
        Always 1 on the GPU, where one stream already saturates the device.
    """

    name: str
    xp: ModuleType
    workers: int = 1

    def asarray(self, array: Any, dtype: Any = None) -> Any:
        """Move ``array`` to this backend's device (no copy when already there)."""
        return self.xp.asarray(array, dtype=dtype)

    def to_host(self, array: Any) -> Any:
        """Return ``array`` as a NumPy array on the host."""
        if self.name == "gpu":
            return array.get()
        return array

    def like_input(self, result: Any, original: Any) -> Any:
        """``result`` as the kind of array the caller passed in ``original``: NumPy in, NumPy out;
        a GPU (CUDA array interface) array in, a CuPy array out, whichever device computed it."""
        if not is_device_array(original):
            return self.to_host(result)
        if self.name == "gpu":
            return result
        cupy, reason = _cupy_or_reason()
        if cupy is None:  # a CUDA array came in, so CuPy should be usable; say why not
            raise RuntimeError(f"cannot return a GPU array: {reason}")
        return cupy.asarray(result)

    def scalar(self, value: Any) -> float:
        """Return a 0-d device value as a Python float (synchronises on the GPU)."""
        return float(value)


def is_device_array(array: Any) -> bool:
    """Whether ``array`` lives on a CUDA device (CuPy, or anything with the CUDA array interface)."""
    return hasattr(array, "__cuda_array_interface__")


@lru_cache(maxsize=1)
def _cupy_or_reason() -> tuple[ModuleType | None, str]:
    """Import CuPy and check for a usable CUDA device, once per process."""
    try:
        import cupy  # noqa: PLC0415 - deliberately lazy
    except ImportError as exc:
        return None, f"CuPy is not installed ({exc}); install nlfilt[gpu]"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, or one older than CuPy's CUDA runtime
        driver = _driver_version(cupy)
        runtime = cupy.cuda.runtime.runtimeGetVersion()
        built_for = f"{runtime // 1000}.{runtime % 1000 // 10}"
        return None, (f"CuPy {cupy.__version__} cannot use CUDA ({exc}); NVIDIA driver "
                      f"{driver or 'not found'}, CuPy built for CUDA {built_for}")
    if count == 0:
        return None, f"CuPy {cupy.__version__} is installed but no CUDA device was found"
    return cupy, f"{count} CUDA device(s) usable"


def _driver_version(cupy: ModuleType) -> str:
    try:
        version = cupy.cuda.runtime.driverGetVersion()
    except Exception:
        return ""
    return f"{version // 1000}.{version % 1000 // 10}" if version else ""


def _tf32_refusal() -> str | None:
    """Why the GPU must not be used under this environment, or None.

    ``CUPY_TF32=1`` makes CuPy's cuBLAS products run in TF32 (a 10-bit
    mantissa).  NLM's global form computes squared patch distances as
    ``2 <a_i, a_j> - s_i - s_j``, a difference of large terms, which TF32
    would get wrong by about 4 % of a weight, so the GPU is refused then.
    """
    if os.environ.get("CUPY_TF32", "0").strip() not in ("", "0"):
        return ("CUPY_TF32 is set: cuBLAS would compute in TF32, too coarse for the distances of the global "
                "mode (unset CUPY_TF32 to use the GPU)")
    return None


def gpu_status() -> tuple[bool, str]:
    """Report whether a GPU is usable and why (for ``device='auto'`` and ``nlfilt info``)."""
    refusal = _tf32_refusal()
    if refusal:
        return False, refusal
    cupy, reason = _cupy_or_reason()
    return cupy is not None, reason


def _host_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def get_backend(device: str) -> Backend:
    """Return the backend for ``device`` ('auto', 'cpu' or 'gpu').

    ``'auto'`` picks the GPU when CuPy is installed and a CUDA device is
    usable, otherwise the CPU.  ``'gpu'`` raises :class:`RuntimeError` with
    the reason when no GPU is usable.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(map(repr, DEVICES))}; got {device!r}")
    if device == "cpu":
        return _cpu_backend()
    refusal = _tf32_refusal()
    cupy, reason = (None, refusal) if refusal else _cupy_or_reason()
    if cupy is None:
        if device == "gpu":
            raise RuntimeError(f"device='gpu' was requested but no GPU is usable: {reason}")
        return _cpu_backend()
    return Backend("gpu", cupy, workers=1)


@lru_cache(maxsize=1)
def _cpu_backend() -> Backend:
    import numpy  # noqa: PLC0415

    return Backend("cpu", numpy, workers=_host_workers())
