"""CUDA kernels: the .cu sources of this folder, compiled once per device and dtype.

Every kernel has a NumPy twin that it must match (named in each .cu file).  CuPy
is imported only when a kernel is first needed; :func:`compile_to_ptx` compiles
the sources with NVRTC alone, without a GPU, for the CI check.
"""

from __future__ import annotations

import os
from functools import cache
from importlib import resources
from typing import Any

import numpy

#: The source files, compiled together into one module per device and dtype.
SOURCES = ("profiles.cu", "patches.cu", "windowed.cu", "fused.cu", "windowed_box.cu")

#: Most right-hand-side columns the windowed kernel accumulates in registers.
MAX_COLUMNS = 8

#: Threads per block, and the largest grid (kernels use grid-stride loops).
THREADS = 256
MAX_BLOCKS = 65536

#: Launch geometry, defined here only and passed to the sources as ``-DNLFILT_<NAME>``.
#: ``nlfilt_global_fused``: query rows per block (one thread each), keys per shared-memory tile and
#: factor dimensions per shared-memory chunk.
FUSED_QUERIES = 128
FUSED_KEYS = 32
FUSED_DIMS = 32
#: ``nlfilt_windowed_box``: output columns per block (a warp lane each), output rows per block (a warp
#: each), and the largest patch (BOX_HEIGHT + patch - 1 <= 32 rows fit one vertical warp scan).
BOX_WIDTH = 32
BOX_HEIGHT = 8
BOX_MAX_PATCH = 25

#: Alternative CUDA paths, each used instead of the default path named beside it only when listed in
#: the environment variable ``NLFILT_CUDA_ALTERNATIVES`` (comma-separated, or 'all').  Both pairs
#: were checked against the NumPy path on a GPU (benchmarks/results/gpu-*.md); the defaults are the
#: faster ones measured there.
ALTERNATIVES_VARIABLE = "NLFILT_CUDA_ALTERNATIVES"
ALTERNATIVES = {"nlfilt_global_fused": "the global mode's GEMM tiles",
                "nlfilt_windowed_nlm": "nlfilt_windowed_box"}


def alternative(name: str) -> bool:
    """Whether the alternative path ``name`` (a key of :data:`ALTERNATIVES`) was asked for."""
    asked = {item.strip() for item in os.environ.get(ALTERNATIVES_VARIABLE, "").split(",")}
    return name in ALTERNATIVES and (name in asked or "all" in asked)


def source() -> str:
    """The concatenated CUDA source of the package's kernels."""
    folder = resources.files(__package__)
    return "\n".join(folder.joinpath(name).read_text(encoding="utf-8") for name in SOURCES)


def options(dtype: Any) -> tuple[str, ...]:
    """NVRTC options for kernels on ``dtype`` (float32 or float64)."""
    real = {numpy.dtype(numpy.float32): "float", numpy.dtype(numpy.float64): "double"}[numpy.dtype(dtype)]
    geometry = {"MAX_COLUMNS": MAX_COLUMNS, "FUSED_QUERIES": FUSED_QUERIES, "FUSED_KEYS": FUSED_KEYS,
                "FUSED_DIMS": FUSED_DIMS, "BOX_WIDTH": BOX_WIDTH, "BOX_HEIGHT": BOX_HEIGHT,
                "BOX_MAX_PATCH": BOX_MAX_PATCH}
    return (f"-DNLFILT_REAL={real}", *(f"-DNLFILT_{name}={value}" for name, value in geometry.items()),
            "--std=c++14")


def compile_to_ptx(dtype: Any, architecture: str) -> tuple[str, str]:
    """Compile the sources with NVRTC for ``architecture`` (e.g. 'compute_90'): (ptx, log).

    Needs only CuPy's NVRTC binding and the NVRTC library, no GPU.  Warnings
    are errors.  Raises RuntimeError with the compiler log on failure.
    """
    from cupy_backends.cuda.libs import nvrtc  # noqa: PLC0415 - optional, no GPU needed

    program = nvrtc.createProgram(source(), "nlfilt.cu", [], [])
    try:
        flags = [*options(dtype), f"--gpu-architecture={architecture}", "-Werror=all-warnings"]
        try:
            nvrtc.compileProgram(program, flags)
        except Exception as exc:
            raise RuntimeError(f"NVRTC failed for {architecture}, {numpy.dtype(dtype)}: {exc}\n"
                               f"{nvrtc.getProgramLog(program)}") from None
        return nvrtc.getPTX(program), nvrtc.getProgramLog(program)
    finally:
        nvrtc.destroyProgram(program)


@cache
def _module(device_id: int, dtype_name: str) -> Any:
    import cupy  # noqa: PLC0415 - lazy by design

    return cupy.RawModule(code=source(), options=options(dtype_name))


def kernel(name: str, dtype: Any) -> Any:
    """The compiled kernel ``name`` for ``dtype`` on the current device (cached)."""
    import cupy  # noqa: PLC0415 - lazy by design

    return _module(cupy.cuda.Device().id, numpy.dtype(dtype).name).get_function(name)


def check_arguments(name: str, dtype: Any, arguments: tuple[Any, ...], columns: int | None = None) -> None:
    """Raise ValueError unless the arguments fit kernel ``name`` compiled for ``dtype``.

    Every array must be C-contiguous and of ``dtype`` (the kernels index raw
    pointers of NLFILT_REAL), every scalar a NumPy scalar of an explicit C
    type (never a Python number), and ``columns`` (the right-hand sides a
    kernel accumulates in registers) at most ``MAX_COLUMNS``.
    """
    dtype = numpy.dtype(dtype)
    for position, value in enumerate(arguments):
        if isinstance(value, numpy.generic):
            continue
        if not (hasattr(value, "dtype") and hasattr(value, "flags")):
            raise ValueError(f"{name}: argument {position} is a Python {type(value).__name__}; pass a NumPy "
                             "scalar of the kernel's C type")
        if value.dtype != dtype:
            raise ValueError(f"{name}: argument {position} is {value.dtype}; the kernel is compiled for "
                             f"{dtype}")
        if not value.flags.c_contiguous:
            raise ValueError(f"{name}: argument {position} is not C-contiguous")
    if columns is not None and not 1 <= columns <= MAX_COLUMNS:
        raise ValueError(f"{name}: {columns} right-hand-side columns; the kernel holds 1 to {MAX_COLUMNS}")


def run(name: str, dtype: Any, grid: tuple[int, ...], block: tuple[int, ...], arguments: tuple[Any, ...],
        columns: int | None = None) -> None:
    """Launch kernel ``name`` on ``grid`` x ``block`` after :func:`check_arguments`."""
    check_arguments(name, dtype, arguments, columns)
    kernel(name, dtype)(grid, block, arguments)


def launch(name: str, dtype: Any, count: int, *arguments: Any, columns: int | None = None) -> None:
    """Launch kernel ``name`` over ``count`` work items with a grid-stride grid (arguments checked)."""
    blocks = max(1, min(MAX_BLOCKS, -(-count // THREADS)))
    run(name, dtype, (blocks,), (THREADS,), arguments, columns)


def real(value: float, dtype: Any) -> Any:
    """``value`` as the kernel's NLFILT_REAL scalar type."""
    return numpy.dtype(dtype).type(value)
