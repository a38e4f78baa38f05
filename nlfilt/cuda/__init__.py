"""CUDA kernels: the .cu sources of this folder, compiled once per device and dtype.

Every kernel has a NumPy twin that it must match (named in each .cu file).  CuPy
is imported only when a kernel is first needed; :func:`compile_to_ptx` compiles
the sources with NVRTC alone, without a GPU, for the CI check.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy

from nlfilt.kernels import kernel_class, kernel_names

#: The source files, compiled together into one module per device and dtype.
SOURCES = ("profiles.cu", "patches.cu", "windowed.cu", "fused.cu", "windowed_box.cu", "windowed_tiled.cu",
           "groups.cu", "global_mma.cu")

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
#: ``nlfilt_bm_match``: references per block (rows x columns of the reference grid, a thread each);
#: ``nlfilt_bm_filter``: threads per group (a multiple of 32).
MATCH_ROWS = 8
MATCH_COLS = 8
GROUP_THREADS = 256
#: ``nlfilt_bm_match_series``: threads per block (a reference each).
SERIES_THREADS = 128
#: ``nlfilt_global_mma``: query rows and keys per tile (16 rows per warp), factor dimensions per shared-memory
#: chunk, and key tiles per block (the blocks of one query tile split its row of tiles into chunks).
MMA_TILE = 64
MMA_DIMS = 32
MMA_CHUNK = 16
#: ``nlfilt_windowed_tiled``: threads per block (a warp per window offset at a time), and the tile heights
#: tried, tallest first (the tile, its partners and their values must fit the shared memory).
TILED_THREADS = 256
TILED_ROWS = (16, 8)
#: Most dynamic shared memory a block may ask for without raising the kernel's limit.
SHARED_MEMORY = 48 * 1024

#: Alternative CUDA paths, each used instead of the default path named beside it only when listed in
#: the environment variable ``NLFILT_CUDA_ALTERNATIVES`` (comma-separated, or 'all').  The first two
#: pairs were checked against the NumPy path on a GPU (benchmarks/results/gpu-*.md), the defaults being
#: the faster ones measured there; ``nlfilt_bm`` (the collaborative filter's matching and filtering
#: kernels), ``nlfilt_global_mma`` (the global operator on tensor cores) and ``nlfilt_windowed_tiled``
#: (windowed NLM by tiles, each pair once) wait for their first GPU run and stay opt-in until then.
ALTERNATIVES_VARIABLE = "NLFILT_CUDA_ALTERNATIVES"
ALTERNATIVES = {"nlfilt_global_fused": "the global mode's GEMM tiles",
                "nlfilt_windowed_nlm": "nlfilt_windowed_box",
                "nlfilt_bm": "the collaborative filter's array code on CuPy",
                "nlfilt_global_mma": "the global mode's GEMM tiles (float32)",
                "nlfilt_windowed_tiled": "nlfilt_windowed_box"}


def compute_capability() -> int:
    """The current CUDA device's compute capability as one number (80 for 8.0, 90 for 9.0)."""
    import cupy  # noqa: PLC0415 - lazy by design

    return _capability(cupy.cuda.Device().id)


@cache
def _capability(device_id: int) -> int:
    import cupy  # noqa: PLC0415 - lazy by design

    return int(cupy.cuda.Device(device_id).compute_capability)


def alternative(name: str) -> bool:
    """Whether the alternative path ``name`` (a key of :data:`ALTERNATIVES`) was asked for."""
    asked = {item.strip() for item in os.environ.get(ALTERNATIVES_VARIABLE, "").split(",")}
    return name in ALTERNATIVES and (name in asked or "all" in asked)


#: What each registered kernel with a CUDA profile adds to the source (see :func:`kernel_source`).
_KERNEL_TEMPLATE = """
struct nlfilt_kernel_{id} {{
    static __device__ __forceinline__ NLFILT_REAL profile(NLFILT_REAL t, const int depth,
                                                          const NLFILT_REAL floor_value) {{
{body}
    }}
}};

extern "C" __global__ void nlfilt_profile_{id}(NLFILT_REAL* t, const long long size, const int depth,
                                              const NLFILT_REAL floor_value) {{
    nlfilt_profile_all<nlfilt_kernel_{id}>(t, size, depth, floor_value);
}}

extern "C" __global__ void nlfilt_global_fused_{id}(const NLFILT_REAL* left_t, const NLFILT_REAL* right,
                                                   const NLFILT_REAL* values, NLFILT_REAL* out,
                                                   const long long size, const int dims, const int columns,
                                                   const int depth, const NLFILT_REAL floor_value) {{
    nlfilt_global_fused_all<nlfilt_kernel_{id}>(left_t, right, values, out, size, dims, columns, depth,
                                               floor_value);
}}

extern "C" __global__ void nlfilt_global_mma_{id}(const float* left, const float* right_t,
                                                 const float* values, float* out, const int* work,
                                                 const int items, const int size, const int dims,
                                                 const int columns, const int depth,
                                                 const float floor_value) {{
    nlfilt_global_mma_all<nlfilt_kernel_{id}>(left, right_t, values, out, work, items, size, dims, columns,
                                             depth, floor_value);
}}
"""


def kernel_source(identifier: str, body: str) -> str:
    """The CUDA code of one kernel's profile: its struct, ``nlfilt_profile_<identifier>`` (in place
    on an array), ``nlfilt_global_fused_<identifier>`` (the fused global operator) and
    ``nlfilt_global_mma_<identifier>`` (the global operator on tensor cores, float32)."""
    indented = "\n".join("        " + line if line.strip() else "" for line in body.strip().splitlines())
    return _KERNEL_TEMPLATE.format(id=identifier, body=indented)


def source() -> str:
    """The CUDA source: the package's .cu files, then the profile of every registered kernel that has
    one (so a kernel registered from outside the package is compiled with the rest)."""
    profiles = tuple((kernel.cuda_name(), kernel.cuda_profile) for kernel in map(kernel_class, kernel_names())
                     if kernel.cuda_profile is not None)
    return _source(profiles)


@lru_cache(maxsize=8)
def _source(profiles: tuple[tuple[str, str], ...]) -> str:
    """The source for these (identifier, profile body) pairs, built once per set of registered kernels
    (every launch checks its arguments against it)."""
    return "\n".join([*_files(), *(kernel_source(name, body) for name, body in profiles)])


@cache
def _files() -> tuple[str, ...]:
    folder = resources.files(__package__)
    return tuple(folder.joinpath(name).read_text(encoding="utf-8") for name in SOURCES)


def profile_kernel(kernel: Any) -> str:
    """The name of ``kernel``'s CUDA profile (for a kernel with ``cuda_profile``)."""
    return f"nlfilt_profile_{kernel.cuda_name()}"


def fused_kernel(kernel: Any) -> str:
    """The name of ``kernel``'s fused global operator (for a kernel with ``cuda_profile``)."""
    return f"nlfilt_global_fused_{kernel.cuda_name()}"


def mma_kernel(kernel: Any) -> str:
    """The name of ``kernel``'s global operator on tensor cores (for a kernel with ``cuda_profile``)."""
    return f"nlfilt_global_mma_{kernel.cuda_name()}"


_SIGNATURE = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)')


#: Parameter kinds by the C type a declaration names (the first found); ``int`` otherwise.
_C_TYPES = (("NLFILT_REAL", "real"), ("long long", "int64"), ("double", "float64"), ("float", "float32"))


def _parameter_kind(declaration: str) -> str:
    """The kind of one parameter declaration of a kernel: 'real' (NLFILT_REAL), 'float32', 'float64',
    'int32' or 'int64', with '*' after it for a pointer."""
    kind = next((name for ctype, name in _C_TYPES if ctype in declaration), "int32")
    return kind + "*" if "*" in declaration else kind


def signatures(text: str | None = None) -> dict[str, tuple[str, ...]]:
    """Every kernel's parameter kinds (see :func:`_parameter_kind`), read from the source."""
    return _signatures(source() if text is None else text)


@lru_cache(maxsize=8)
def _signatures(text: str) -> dict[str, tuple[str, ...]]:
    return {name: tuple(_parameter_kind(part) for part in params.split(","))
            for name, params in _SIGNATURE.findall(text)}


def options(dtype: Any) -> tuple[str, ...]:
    """NVRTC options for kernels on ``dtype`` (float32 or float64)."""
    real = {numpy.dtype(numpy.float32): "float", numpy.dtype(numpy.float64): "double"}[numpy.dtype(dtype)]
    geometry = {"MAX_COLUMNS": MAX_COLUMNS, "FUSED_QUERIES": FUSED_QUERIES, "FUSED_KEYS": FUSED_KEYS,
                "FUSED_DIMS": FUSED_DIMS, "BOX_WIDTH": BOX_WIDTH, "BOX_HEIGHT": BOX_HEIGHT,
                "BOX_MAX_PATCH": BOX_MAX_PATCH, "MATCH_ROWS": MATCH_ROWS, "MATCH_COLS": MATCH_COLS,
                "GROUP_THREADS": GROUP_THREADS, "MMA_TILE": MMA_TILE, "MMA_DIMS": MMA_DIMS,
                "MMA_CHUNK": MMA_CHUNK}
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


def find_ptxas() -> str | None:
    """The path of CUDA's assembler ``ptxas``: from the ``nvidia-cuda-nvcc`` wheel of the ``cuda-check``
    extra (the release of the NVRTC wheel beside it, so it reads that NVRTC's PTX), else on the PATH or
    in a CUDA toolkit under /usr/local; None when there is none."""
    candidates = [Path(entry) / "nvidia" / folder / "bin" / "ptxas" for entry in sys.path if entry
                  for folder in ("cu13", "cuda_nvcc")]
    found = shutil.which("ptxas")
    candidates += [Path(found)] if found else []
    candidates += sorted(Path("/usr/local").glob("cuda*/bin/ptxas"), reverse=True)
    return next((str(path) for path in candidates if path.is_file()), None)


#: One kernel's line of ``ptxas -v``'s report: its stack frame, spill stores and spill loads (bytes).
_RESOURCES = re.compile(r"Function properties for (\w+)\n\s*(\d+) bytes stack frame, "
                        r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def assemble(ptx: str, architecture: str = "sm_90") -> dict[str, tuple[int, int, int]]:
    """Assemble ``ptx`` for ``architecture`` with :func:`find_ptxas` and return, per kernel, its stack
    frame, spill stores and spill loads in bytes (``ptxas -v``).  RuntimeError with the assembler's
    output when it fails or is not installed."""
    ptxas = find_ptxas()
    if ptxas is None:
        raise RuntimeError("ptxas not found: install the nvidia-cuda-nvcc wheel (pip install -e "
                           "'.[cuda-check]') or a CUDA toolkit")
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "nlfilt.ptx"
        source.write_text(ptx)
        command = [ptxas, f"-arch={architecture}", "-v", str(source), "-o", str(source) + ".cubin"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"ptxas failed for {architecture}:\n{done.stdout}{done.stderr}")
    report = done.stdout + done.stderr
    return {name: tuple(int(value) for value in values) for name, *values in _RESOURCES.findall(report)}


@cache
def _module(device_id: int, dtype_name: str, text: str) -> Any:
    import cupy  # noqa: PLC0415 - lazy by design

    return cupy.RawModule(code=text, options=options(dtype_name))


def kernel(name: str, dtype: Any) -> Any:
    """The compiled kernel ``name`` for ``dtype`` on the current device (cached per source text, so a
    kernel registered later is compiled in)."""
    import cupy  # noqa: PLC0415 - lazy by design

    return _module(cupy.cuda.Device().id, numpy.dtype(dtype).name, source()).get_function(name)


def check_arguments(name: str, dtype: Any, arguments: tuple[Any, ...], columns: int | None = None) -> None:
    """Raise ValueError unless the arguments fit kernel ``name`` compiled for ``dtype``.

    The arguments must match the kernel's parameters as the source declares
    them, one for one: every pointer a C-contiguous array of its C type
    (``NLFILT_REAL``: ``dtype``; ``int``: int32; ``long long``: int64; the
    kernels index raw pointers), every scalar a NumPy scalar of its C type
    (never a Python number); and ``columns`` (the right-hand sides a kernel
    accumulates in registers) at most ``MAX_COLUMNS``.
    """
    dtype = numpy.dtype(dtype)
    kinds = signatures().get(name)
    if kinds is None:
        raise ValueError(f"{name}: no such kernel in nlfilt's CUDA source")
    if len(arguments) != len(kinds):
        raise ValueError(f"{name}: {len(arguments)} arguments for {len(kinds)} parameters")
    types = {"real": dtype, **{name: numpy.dtype(name) for name in ("int32", "int64", "float32", "float64")}}
    for position, (value, kind) in enumerate(zip(arguments, kinds, strict=True)):
        expected = types[kind.rstrip("*")]
        if not kind.endswith("*"):
            if not isinstance(value, numpy.generic):
                raise ValueError(f"{name}: argument {position} is a Python {type(value).__name__}; pass a "
                                 f"NumPy scalar of the kernel's C type ({expected})")
            if value.dtype != expected:
                raise ValueError(f"{name}: argument {position} is {value.dtype}; the kernel takes {expected}")
            continue
        if isinstance(value, numpy.generic) or not (hasattr(value, "dtype") and hasattr(value, "flags")):
            raise ValueError(f"{name}: argument {position} is a {type(value).__name__}, not an array")
        if value.dtype != expected:
            compiled = "; the kernel is compiled for" if kind == "real*" else "; the kernel takes"
            raise ValueError(f"{name}: argument {position} is {value.dtype}{compiled} {expected}")
        if not value.flags.c_contiguous:
            raise ValueError(f"{name}: argument {position} is not C-contiguous")
    if columns is not None and not 1 <= columns <= MAX_COLUMNS:
        raise ValueError(f"{name}: {columns} right-hand-side columns; the kernel holds 1 to {MAX_COLUMNS}")


def run(name: str, dtype: Any, grid: tuple[int, ...], block: tuple[int, ...], arguments: tuple[Any, ...],
        columns: int | None = None, shared_memory: int = 0) -> None:
    """Launch kernel ``name`` on ``grid`` x ``block`` (with ``shared_memory`` bytes of dynamic shared
    memory per block) after :func:`check_arguments`."""
    check_arguments(name, dtype, arguments, columns)
    kernel(name, dtype)(grid, block, arguments, shared_mem=shared_memory)


def launch(name: str, dtype: Any, count: int, *arguments: Any, columns: int | None = None) -> None:
    """Launch kernel ``name`` over ``count`` work items with a grid-stride grid (arguments checked)."""
    blocks = max(1, min(MAX_BLOCKS, -(-count // THREADS)))
    run(name, dtype, (blocks,), (THREADS,), arguments, columns)


def real(value: float, dtype: Any) -> Any:
    """``value`` as the kernel's NLFILT_REAL scalar type."""
    return numpy.dtype(dtype).type(value)
