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

import numpy

from nlfilt.kernels import weight_floor
from nlfilt.patches import patch_matrix

DEVICES = ("auto", "cpu", "gpu")

#: Largest number of elements in one tile of the global mode (CPU, GPU).  A tile of many query rows
#: keeps the GEMM efficient (each tile streams the whole right factor once); on the GPU a large tile
#: also keeps the launches per tile few.  The memory budget caps both.
CPU_TILE_ELEMENTS = 1 << 23
GPU_TILE_ELEMENTS = 1 << 28

#: Bytes the temporaries of one batch of the collaborative filter's array code may take (CPU, GPU): on a
#: GPU each batch costs about 15 launches, so a larger batch keeps them few.
CPU_BATCH_BYTES = 1 << 27
GPU_BATCH_BYTES = 1 << 29

#: On the CPU the kernel profile runs over a tile in pieces of this many elements, so that its dozen
#: or more elementwise passes stay in the core's cache.
CPU_PROFILE_CHUNK = 1 << 18


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

    def synchronize(self) -> None:
        """Wait for the device's queued work (for timings; a no-op on the CPU)."""
        if self.name == "gpu":
            self.xp.cuda.Device().synchronize()

    @property
    def tile_elements(self) -> int:
        """Most elements in one tile of the global mode (the memory budget caps it further)."""
        return GPU_TILE_ELEMENTS if self.name == "gpu" else CPU_TILE_ELEMENTS

    @property
    def batch_bytes(self) -> int:
        """Bytes the temporaries of one batch of the collaborative filter's array code may take (a GPU
        batch is larger, to keep its launches few)."""
        return GPU_BATCH_BYTES if self.name == "gpu" else CPU_BATCH_BYTES

    @property
    def profile_chunk(self) -> int | None:
        """Elements of a tile the profile handles at once: cache-sized pieces on the CPU, whole tiles
        (None) on the GPU."""
        return CPU_PROFILE_CHUNK if self.name == "cpu" else None

    def profile_scratch_blocks(self, kernel: Any) -> int:
        """Scratch arrays :meth:`apply_profile` needs for ``kernel``: none for a CUDA profile."""
        return 0 if self.name == "gpu" and kernel.cuda_profile is not None else kernel.scratch_blocks

    def apply_profile(self, kernel: Any, t: Any, scratch: list[Any]) -> Any:
        """Apply ``kernel``'s profile to the contiguous array ``t`` in place: its CUDA profile on the
        GPU when it has one, else its array code (``scratch``: :meth:`profile_scratch_blocks` arrays)."""
        if self.name == "gpu" and kernel.cuda_profile is not None:
            from nlfilt import cuda  # noqa: PLC0415 - GPU only

            cuda.launch(cuda.profile_kernel(kernel), t.dtype, t.size, t, numpy.int64(t.size),
                        numpy.int32(kernel.layers), cuda.real(weight_floor(t.dtype), t.dtype))
            return t
        return kernel.profile(self.xp, t, scratch)

    def add_at(self, target: Any, index: Any, values: Any) -> None:
        """``target[index] += values`` with repeated indices summed (``target`` flat, ``index`` int32).

        On the CPU one ``bincount`` over the span of ``target`` that ``index``
        touches, so the cost follows the values, not the target's size; on
        the GPU ``cupyx.scatter_add`` (atomic additions, no synchronisation).
        """
        if self.name == "gpu":
            import cupyx  # noqa: PLC0415 - GPU only

            cupyx.scatter_add(target, index, values)
            return
        low, high = int(index.min()), int(index.max()) + 1
        target[low:high] += numpy.bincount(index - low, weights=values, minlength=high - low)

    def patch_matrix(self, image: Any, patch: int) -> Any:
        """The (H*W, patch*patch*C) patch matrix of an (H, W, C) image on this device
        (:func:`nlfilt.patches.patch_matrix`; on the GPU its CUDA twin ``nlfilt_patches``)."""
        if self.name != "gpu" or image.ndim != 3:  # the CUDA kernel serves 2-D images
            return patch_matrix(self.xp, image, patch)
        from nlfilt import cuda  # noqa: PLC0415 - GPU only

        height, width, channels = image.shape
        out = self.xp.empty((height * width, patch * patch * channels), dtype=image.dtype)
        cuda.launch("nlfilt_patches", image.dtype, out.size, self.xp.ascontiguousarray(image), out,
                    numpy.int32(height), numpy.int32(width), numpy.int32(channels), numpy.int32(patch))
        return out


def host_array(array: Any) -> numpy.ndarray:
    """A NumPy array of ``array``, wherever it lives (a CuPy array is copied to the host)."""
    if is_device_array(array) and hasattr(array, "get"):
        return array.get()
    return numpy.asarray(array)


def is_device_array(array: Any) -> bool:
    """Whether ``array`` lives on a CUDA device (CuPy, or anything with the CUDA array interface)."""
    return hasattr(array, "__cuda_array_interface__")


#: The start of the reason given when CuPy is not installed at all (rather than installed but unusable).
CUPY_MISSING = "CuPy is not installed"


@lru_cache(maxsize=1)
def _import_cupy() -> tuple[ModuleType | None, str]:
    """CuPy, or None and why it cannot be imported, once per process.

    Any exception of the import means that CuPy cannot be used: CuPy's import creates its kernel cache
    folder, for one, and fails with an OSError under an unwritable home folder.
    """
    try:
        import cupy  # noqa: PLC0415 - deliberately lazy
    except ModuleNotFoundError as exc:
        if exc.name != "cupy":  # CuPy is there, something it imports is not
            return None, f"CuPy cannot be imported ({_reason(exc)})"
        return None, f"{CUPY_MISSING} ({exc}); install nlfilt[gpu]"
    except Exception as exc:  # whatever CuPy's import meets: OSError, RuntimeError, ...
        advice = ("; CuPy creates its kernel cache folder on import: set CUPY_CACHE_DIR to a writable folder"
                  if isinstance(exc, OSError) else "")
        return None, f"CuPy cannot be imported ({_reason(exc)}{advice})"
    return cupy, f"CuPy {getattr(cupy, '__version__', '(version unknown)')}"


def cupy_version() -> str:
    """CuPy's version, 'not installed', or 'cannot be imported' (for ``nlfilt info``)."""
    cupy, reason = _import_cupy()
    if cupy is not None:
        return str(getattr(cupy, "__version__", "(version unknown)"))
    return "not installed" if reason.startswith(CUPY_MISSING) else "cannot be imported"


@lru_cache(maxsize=1)
def _cupy_or_reason() -> tuple[ModuleType | None, str]:
    """CuPy when a CUDA device is usable, else None; and the reason, once per process.

    Any exception on the way means that no GPU is usable, with the reason: CuPy missing or failing to
    import (:func:`_import_cupy`), or no usable CUDA device or driver.
    """
    cupy, reason = _import_cupy()
    if cupy is None:
        return None, reason
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, or one older than CuPy's CUDA runtime
        return None, (f"{reason} cannot use CUDA ({_reason(exc, named=False)}); NVIDIA driver "
                      f"{_driver_version(cupy) or 'not found'}, CuPy built for CUDA "
                      f"{_runtime_version(cupy) or 'unknown'}")
    if count == 0:
        return None, f"{reason} is installed but no CUDA device was found"
    return cupy, f"{count} CUDA device(s) usable"


def _reason(exc: BaseException, named: bool = True) -> str:
    """``exc`` in one line: its type (when ``named``) and the first line of its message."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if not named:
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _runtime_version(cupy: ModuleType) -> str:
    try:
        version = cupy.cuda.runtime.runtimeGetVersion()
    except Exception:
        return ""
    return f"{version // 1000}.{version % 1000 // 10}"


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


def gpu_free_bytes() -> int | None:
    """Free memory of the current CUDA device in bytes, or None when no GPU is usable."""
    cupy, _ = _cupy_or_reason()
    if cupy is None:
        return None
    return int(cupy.cuda.Device().mem_info[0])


def gpu_status() -> tuple[bool, str]:
    """Report whether a GPU is usable and why (for ``device='auto'`` and ``nlfilt info``)."""
    refusal = _tf32_refusal()
    if refusal:
        return False, refusal
    cupy, reason = _cupy_or_reason()
    return cupy is not None, reason


#: Environment variable that caps the CPU threads nlfilt uses in one process (a dask worker process of a
#: local cluster gets its share of the cores that way).
THREADS_VARIABLE = "NLFILT_THREADS"


def host_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _host_workers() -> int:
    """CPU threads nlfilt uses: :func:`host_cores`, or fewer when ``NLFILT_THREADS`` says so."""
    cores = host_cores()
    limit = os.environ.get(THREADS_VARIABLE, "").strip()
    return min(cores, int(limit)) if limit.isdigit() and int(limit) > 0 else cores


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
    return Backend("cpu", numpy, workers=_host_workers())
