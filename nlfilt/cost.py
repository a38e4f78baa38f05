"""The cost model: products with ``K`` a call makes, CPU seconds and working memory.

Used to refuse runs that would take too long or need too much memory before
they start (the command line checks every file from its header), to size
progress bars.  benchmarks/bench_cpu.py measures the constants and the
estimate against the time of every mode (benchmarks/results/cpu.md);
benchmarks/collaborative_speed.py those of the collaborative filter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nlfilt.backend import CPU_BATCH_BYTES, CPU_TILE_ELEMENTS, GPU_BATCH_BYTES, get_backend
from nlfilt.filters import FilterOptions, keeps_weights
from nlfilt.jit import serves as compiled_serves
from nlfilt.kernels import kernel_class, make_kernel
from nlfilt.patches import sides, spatial_shape
from nlfilt.series import bands, windows
from nlfilt.stopping import stop_rule, stop_rule_names

#: Products with ``K`` that Lanczos needs for ``lambda_max`` (tolerance 1e-3): the global arc-cosine
#: and NTK matrices have one dominant eigenvalue (2-3 products on Set12 crops of 48-96 pixels), the
#: windowed ones, indefinite, need 12-39 (median 18 on crops of 128-512 pixels).
EIGENVALUE_APPLICATIONS = {"global": 2, "windowed": 18}
#: Products with ``K`` that Sinkhorn scaling needs, the row sums included (Set12 at sigma 10-50, window 11:
#: 13-14; tolerance 1e-3).
SINKHORN_APPLICATIONS = 13
#: Products with ``K`` that ``iterations='auto'`` typically needs per run (the image and, with SURE, its
#: twin are two runs): stepping (windowed) looks at 4-5 steps, a Krylov trajectory (global) takes 4-11
#: Lanczos steps (median 6; Set12 crops of 64 pixels at sigma 10-50, and NLM's row sums besides).
AUTO_APPLICATIONS = {"stepping": 5, "krylov": 6}


@dataclass(frozen=True)
class _Plan:
    """The products with ``K`` of a :func:`nlfilt.denoise` call: ``filters`` filters, each making
    ``setup`` products for its normalisation (one column each) and ``steps`` for twicing."""

    filters: int
    setup: int
    steps: int


def _plan(options: FilterOptions, iterations: int | str, guided: bool, runs: int | None,
          stop: str | None = None) -> _Plan:
    auto = iterations == "auto"
    krylov = auto and options.window is None
    if runs is None:  # with 'auto', the image's run and, for a rule that needs one, its twin's
        runs = 1 + (auto and stop_rule(stop or stop_rule_names()[0]).needs_twin)
    steps = AUTO_APPLICATIONS["krylov" if krylov else "stepping"] if auto else int(iterations)
    if options.normalize == "eigenvalue":  # lambda_max; a Krylov trajectory finds it itself
        setup = 0 if krylov else EIGENVALUE_APPLICATIONS["global" if options.window is None else "windowed"]
    elif options.normalize == "sinkhorn":
        setup = SINKHORN_APPLICATIONS
    else:  # the row sums: a product of their own for a Krylov trajectory, else a column of the first step
        setup = 1 if krylov else 0
    return _Plan(filters=runs * (2 if guided else 1), setup=setup, steps=steps)


def expected_applications(options: FilterOptions, iterations: int | str, guided: bool, *,
                          runs: int | None = None, stop: str | None = None) -> int:
    """Typical products with ``K`` for :func:`nlfilt.denoise` with these options (for cost estimates).

    ``iterations`` is a count (0 for one row of ``W``, as :func:`nlfilt.filter_row` needs) or 'auto';
    ``guided`` doubles the count (two passes).  ``runs`` is the number of twicing runs per pass (default:
    with 'auto', the image's and, when the ``stop`` rule needs one, its twin's; else 1).  The
    normalisation adds its own products: ``lambda_max`` (``EIGENVALUE_APPLICATIONS``), Sinkhorn scaling
    (``SINKHORN_APPLICATIONS``) or, for a Krylov trajectory, the row sums.
    """
    plan = _plan(options, iterations, guided, runs, stop)
    return plan.filters * (plan.setup + plan.steps)


#: Wall-clock cost on the 2-core development machine (NumPy's BLAS and ``backend.workers`` host
#: threads), measured by benchmarks/bench_cpu.py (benchmarks/results/cpu.md) and used to refuse
#: long runs and to report estimates.  Global mode, nanoseconds per pixel pair evaluated (a tile of
#: query rows pairs them with the pixels from the tile on, so about N^2 / 2 pairs per product): the
#: kernel profile and the two products with the right-hand side ('ntk': of depth 1, plus
#: GLOBAL_NS_PER_PAIR_AND_LAYER per further layer), plus the GEMM, per patch dimension d.
#: (0.04: the command line's timings at the default small patches, 9-75 dimensions, where the GEMM's short
#: inner dimension runs far below its peak; benchmarks/cost_check.py, quiet, 128^2 to 512^2)
GLOBAL_NS_PER_PAIR_AND_DIM = 0.04
#: Windowed mode, nanoseconds per pixel and offset (one of each opposite pair, (window^2 + 1) / 2 of
#: them).  The weights (the patch statistic by box sums, and the profile; 'ntk' of depth 1, plus
#: WINDOWED_NS_PER_WEIGHT_AND_LAYER per further layer), computed at every product or, when the
#: operator keeps them, once per filter at WINDOWED_NS_PER_KEPT_WEIGHT more (the copy); for C > 1
#: channels, plus WINDOWED_NS_PER_CHANNEL times C (the channel differences and their sum).  The
#: multiply-adds, per right-hand-side column.
WINDOWED_NS_PER_KEPT_WEIGHT = 0.5
WINDOWED_NS_PER_CHANNEL = 2.0
WINDOWED_NS_PER_COLUMN = 0.5
#: Seconds of Python and NumPy call overhead per offset: when its weights are computed, and in each
#: product (the multiply-adds).
WINDOWED_SECONDS_PER_WEIGHING = 35e-6
WINDOWED_SECONDS_PER_OFFSET = 9e-6
#: The compiled windowed operator (:class:`nlfilt.jit.CompiledWindowed`, which serves the kernels with a
#: compiled profile on the CPU when numba is installed), nanoseconds per pixel and offset (one of each
#: opposite pair, as above; the weights are computed at every product and never kept): the kernel's
#: ``compiled_ns_per_weight`` (and ``compiled_ns_per_layer``), plus per patch side (the statistic's sum
#: over the patch's columns), per channel beyond the first, and per right-hand-side column (both
#: directions of the pair; the row sums count as one).
COMPILED_NS_PER_PATCH_SIDE = 0.02
COMPILED_NS_PER_CHANNEL = 0.07
COMPILED_NS_PER_COLUMN = 0.1
#: Seconds per product besides its pairs (starting the worker threads, the tiles' bookkeeping), per
#: call (validation, set-up), and per pixel and channel (the noise estimate, the features).
SECONDS_PER_PRODUCT = 0.3e-3
SECONDS_PER_CALL = 1e-3
SECONDS_PER_VALUE = 20e-9


def estimate_cpu_seconds(shape: tuple[int, ...], options: FilterOptions, applications: int, *,
                         iterations: int | str | None = None, guided: bool = False,
                         stop: str | None = None) -> float:
    """Estimated CPU seconds of ``applications`` products with ``K`` on an image of ``shape``.

    Global mode: every product evaluates about N^2 / 2 pixel pairs, each at
    the kernel's cost plus the GEMM's per patch dimension.  Windowed mode:
    every product visits (window^2 + 1) / 2 offsets, each with N
    multiply-adds per right-hand-side column; their weights are computed at
    every product, or once per filter when the operator keeps them (it is
    applied more than once and they fit the memory budget); the compiled
    operator, where it serves, computes its weights at every product.  With
    ``iterations``, ``guided`` and ``stop`` (as given to :func:`expected_applications`,
    which gives the count for a call of :func:`nlfilt.denoise`) the products
    are split as the call makes them: filters built (the SURE twin, the
    pilot pass), normalisation products of one column, twicing steps of C
    columns; without them, one filter making ``applications`` steps.  The
    constants are wall-clock seconds on the 2 cores of the development
    machine (benchmarks/bench_cpu.py compares the estimate with the time).
    """
    spatial, channels = _spatial(shape)
    pixels = math.prod(spatial)
    kernel = kernel_class(options.kernel)
    layers = _layers(options)
    if iterations is None:
        plan = _Plan(filters=1, setup=0, steps=applications)
    else:
        plan = _plan(options, iterations, guided, None, stop)
        plan = _Plan(plan.filters, min(plan.setup, applications // plan.filters),
                     max(0, applications // plan.filters - plan.setup))
    products = plan.filters * (plan.setup + plan.steps)
    seconds = SECONDS_PER_CALL + SECONDS_PER_VALUE * pixels * channels + SECONDS_PER_PRODUCT * products
    if options.window is None:
        dims = math.prod(sides(options.patch, len(spatial))) * channels
        per_pair = (kernel.global_ns_per_pair + kernel.global_ns_per_layer * (layers - 1)
                    + GLOBAL_NS_PER_PAIR_AND_DIM * dims)
        return seconds + products * _global_pairs(pixels) * per_pair * 1e-9
    columns = plan.filters * (plan.setup + plan.steps * channels)
    if options.normalize == "rows":
        columns += plan.filters  # the row sums ride on each filter's first product
    offsets = _offsets(spatial, options.window)
    several = products > plan.filters if iterations is None else iterations != 1  # as nlfilt.denoise has it
    compiled, kept = _windowed_operator(shape, options, several)
    if compiled:
        weight = (kernel.compiled_ns_per_weight + kernel.compiled_ns_per_layer * (layers - 1)
                  + COMPILED_NS_PER_PATCH_SIDE * options.patch
                  + COMPILED_NS_PER_CHANNEL * (channels - 1))
        return seconds + 1e-9 * pixels * offsets * (products * weight + columns * COMPILED_NS_PER_COLUMN)
    weight = kernel.windowed_ns_per_weight + kernel.windowed_ns_per_layer * (layers - 1)
    if channels > 1:
        weight += WINDOWED_NS_PER_CHANNEL * channels
    if kept:
        weight += WINDOWED_NS_PER_KEPT_WEIGHT
    weighings = plan.filters if kept else products
    per_offset = 1e-9 * pixels * (weighings * weight + columns * WINDOWED_NS_PER_COLUMN)
    per_offset += weighings * WINDOWED_SECONDS_PER_WEIGHING + products * WINDOWED_SECONDS_PER_OFFSET
    return seconds + offsets * per_offset


def _spatial(shape: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
    """(spatial extents, channels) of an image shape: (H, W), (H, W, C), or a volume's (Z, H, W, C)."""
    spatial = spatial_shape(shape)
    return spatial, shape[len(spatial)] if len(shape) > len(spatial) else 1


def _offsets(spatial: tuple[int, ...], window: int | tuple[int, ...]) -> int:
    """Window offsets an operator visits: one of each pair of opposite offsets, and zero."""
    full = math.prod(2 * min(side // 2, extent - 1) + 1
                     for side, extent in zip(sides(window, len(spatial)), spatial, strict=True))
    return (full + 1) // 2


def _global_pairs(pixels: int) -> float:
    """Pixel pairs a global product evaluates: tiles of query rows against the pixels from the tile on."""
    rows = max(1, min(pixels, CPU_TILE_ELEMENTS // pixels))
    tiles = -(-pixels // rows)
    return pixels * pixels * (tiles + 1) / (2 * tiles)


def _windowed_operator(shape: tuple[int, ...], options: FilterOptions, several: bool) -> tuple[bool, bool]:
    """(whether the compiled operator computes a windowed filter, whether the array code keeps its
    weights) for an image of ``shape`` and a filter applied ``several`` times: as
    :func:`nlfilt.filters.build_filter` and :func:`nlfilt.jit.select` decide."""
    kernel = kernel_class(options.kernel)
    kept = keeps_weights(options, several) and _windowed_weights_fit(shape, options)
    return compiled_serves(kernel, _layers(options), kept) and len(_spatial(shape)[0]) == 2, kept


def _layers(options: FilterOptions) -> int:
    """The kernel's layers (:attr:`nlfilt.kernels.Kernel.layers`) for ``options``."""
    return make_kernel(options.kernel, h=options.h, sigma=options.sigma, depth=options.depth).layers


def _windowed_weights_fit(shape: tuple[int, ...], options: FilterOptions) -> bool:
    """Whether a windowed operator on an image of ``shape`` keeps its weights (float32, see
    :class:`nlfilt.operators.WindowedAffinity`): all offsets' weights beside the workers' buffers."""
    spatial, _ = _spatial(shape)
    pixels = math.prod(spatial)
    offsets = _offsets(spatial, options.window)
    workers = get_backend("cpu").workers
    return 4 * (pixels * offsets + workers * _windowed_worker_values(shape, options)) <= options.memory_budget


def _windowed_worker_values(shape: tuple[int, ...], options: FilterOptions) -> int:
    """Values a windowed operator's worker thread holds: the channel differences, five padded work
    images, the profile scratch, the product buffer and the accumulator planes."""
    spatial, channels = _spatial(shape)
    patches = sides(options.patch, len(spatial))
    padded = math.prod(extent + side - 1 for extent, side in zip(spatial, patches, strict=True))
    return padded * (channels + 5) + math.prod(spatial) * (5 + 2 * (channels + 1))


#: Lanczos steps a Krylov trajectory typically keeps (Set12, benchmarks/results/trajectory.md: 8-85).
TYPICAL_KRYLOV_STEPS = 100


def estimate_working_bytes(shape: tuple[int, ...], options: FilterOptions, workers: int,
                           iterations: int | str = 1, stop: str | None = None) -> int:
    """Rough peak bytes of a :func:`nlfilt.denoise` call on an image of ``shape`` (float32).

    Global mode: the operator is bounded by ``options.memory_budget`` (it
    refuses more).  Windowed mode, array code: per worker thread the channel
    differences, five padded work images, the profile scratch and the
    accumulator planes, plus the image, the right-hand sides and the result;
    compiled operator (:func:`nlfilt.jit.serves`): the padded features (and
    their channel planes), the right-hand sides with the row sums, the
    product and twicing's estimate and residual (3 x the image measured for a
    one-shot 4096 x 4096 gray filter, benchmarks/results/cpu.md).
    ``iterations='auto'`` adds, when the ``stop`` rule needs one, the twin
    (a second operator and its cached weights, up to the budget) and, in the
    global mode, the Lanczos bases of the runs (``TYPICAL_KRYLOV_STEPS``
    vectors of N x C numbers each, together at most the memory budget, which
    bounds them).
    """
    spatial, channels = _spatial(shape)
    pixels = math.prod(spatial)
    runs = 1 + (iterations == "auto" and stop_rule(stop or stop_rule_names()[0]).needs_twin)
    if options.window is None:
        needed = options.memory_budget
        if iterations == "auto":
            bases = min(runs * 4 * TYPICAL_KRYLOV_STEPS * pixels * channels, options.memory_budget)
            needed += (runs - 1) * options.memory_budget + bases
        return needed
    if _windowed_operator(shape, options, iterations != 1)[0]:
        needed = 4 * pixels * (4 * channels + 2 * (channels + 1))
    else:
        needed = 4 * (workers * _windowed_worker_values(shape, options) + 6 * pixels * (channels + 1))
    needed += (runs - 1) * options.memory_budget  # a twin's cached weights (its buffers are shared in time)
    return needed


#: The collaborative filter (:mod:`nlfilt.collaborative`, its compiled kernels) on the 2-core development
#: machine: seconds per call, per pixel (matching and the first channel, its empirical-Bayes estimate
#: included) and per pixel and further channel (a colour image's larger Wiener groups included;
#: benchmarks/collaborative_speed.py measures them and the estimate's ratio to the time).
COLLABORATIVE_SECONDS_PER_CALL = 0.004
COLLABORATIVE_SECONDS_PER_PIXEL = 5.1e-6
COLLABORATIVE_SECONDS_PER_EXTRA_CHANNEL = 6.2e-6
#: On a GPU, per pixel and channel: the array code's memory traffic (matching: about 60 bytes per pixel
#: and search offset, 2 x 39^2 offsets, at 1 TB/s) with a margin of two; an arithmetic figure, not yet
#: measured on a GPU (benchmarks/gpu_check.py prints the estimate against the time).
COLLABORATIVE_GPU_SECONDS_PER_PIXEL = 4e-7
#: Peak working memory besides the input (measured with tracemalloc on the CPU): bytes per pixel (gray)
#: and per pixel and further channel; on a GPU the array code's batches add ``GPU_BATCH_BYTES``.
COLLABORATIVE_BYTES_PER_PIXEL = 59
COLLABORATIVE_BYTES_PER_EXTRA_CHANNEL = 32


#: A stack filtered as a series (:mod:`nlfilt.series`), per pixel of the frames its windows read (a long
#: stack's context frames counted again): seconds on the CPU (matching across 9 frames and the first
#: channel, its empirical-Bayes estimate included: benchmarks/video.py's estimate / time 0.71 at 9.5e-6; per
#: further channel), and on a GPU (an arithmetic figure, not yet measured: the array code's
#: stack matching gathers 64 values for each of about 1,300 candidates per reference, in both stages).
SERIES_SECONDS_PER_PIXEL = 1.3e-5
SERIES_SECONDS_PER_EXTRA_CHANNEL = 2.5e-6
SERIES_GPU_SECONDS_PER_PIXEL = 2e-6
#: Working bytes per pixel of a series' window (the frames side by side, the pilot, the estimate and the
#: groups), and per pixel of the whole stack (its working copy and the result).
SERIES_BYTES_PER_WINDOW_PIXEL = 47
SERIES_BYTES_PER_STACK_VALUE = 8


#: A volume of cubes (nlfilt.volume): seconds per voxel (compiled matching, array-code filtering and
#: empirical-Bayes estimate; the development machine: 13-14 us gray at 0.5 million voxels in
#: benchmarks/volume.py, 7.4-8.2 us before the empirical-Bayes estimate), on a GPU
#: (array code, an estimate from the arithmetic), the share a further channel adds; working bytes per value
#: (the volume's working copies) and the batches of its array code, about 1.4 times ``CPU_BATCH_BYTES`` at
#: their peak (tracemalloc: 182-192 MiB from 0.3 to 0.9 million values).
VOLUME_SECONDS_PER_VOXEL = 1.35e-5
VOLUME_GPU_SECONDS_PER_VOXEL = 1e-6
VOLUME_EXTRA_CHANNEL = 0.3
VOLUME_BYTES_PER_VALUE = 24
VOLUME_BATCH_FACTOR = 1.4


def _series_pixels(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(pixels of the frames read, pixels of the largest band of a window, channels) of a stack (T, H, W,
    C): windows of frames, each in bands of rows, both with their context."""
    frames, height, width, channels = shape
    read = largest = 0
    for first, last, _, _ in windows(frames, height * width):
        rows = [bottom - top for top, bottom, _, _ in bands(last - first, height, width, channels)]
        read += (last - first) * sum(rows) * width
        largest = max(largest, (last - first) * max(rows) * width)
    return read, largest, channels


def estimate_collaborative_seconds(shape: tuple[int, ...], device: str = "cpu",
                                   volume: bool = False) -> float:
    """Estimated seconds of :func:`nlfilt.denoise_collaborative` on an image of ``shape`` (H, W) or
    (H, W, C), or a stack (T, H, W, C) filtered as a series (``volume``: as a volume of cubes), on the
    CPU (compiled kernels, the development machine's 2 cores) or the GPU ('gpu')."""
    if len(shape) == 4 and volume:
        voxels, channels = math.prod(shape[:3]), shape[3]
        per_voxel = VOLUME_GPU_SECONDS_PER_VOXEL if device == "gpu" else VOLUME_SECONDS_PER_VOXEL
        return COLLABORATIVE_SECONDS_PER_CALL + voxels * per_voxel * (
            1 + (channels - 1) * VOLUME_EXTRA_CHANNEL)
    if len(shape) == 4:
        read, _, channels = _series_pixels(shape)
        if device == "gpu":
            return COLLABORATIVE_SECONDS_PER_CALL + read * channels * SERIES_GPU_SECONDS_PER_PIXEL
        return COLLABORATIVE_SECONDS_PER_CALL + read * (
            SERIES_SECONDS_PER_PIXEL + (channels - 1) * SERIES_SECONDS_PER_EXTRA_CHANNEL)
    pixels = shape[0] * shape[1]
    channels = shape[2] if len(shape) == 3 else 1
    if device == "gpu":
        return COLLABORATIVE_SECONDS_PER_CALL + pixels * channels * COLLABORATIVE_GPU_SECONDS_PER_PIXEL
    return COLLABORATIVE_SECONDS_PER_CALL + pixels * (
        COLLABORATIVE_SECONDS_PER_PIXEL + (channels - 1) * COLLABORATIVE_SECONDS_PER_EXTRA_CHANNEL)


def estimate_collaborative_bytes(shape: tuple[int, ...], device: str = "cpu", volume: bool = False) -> int:
    """Estimated peak working bytes of :func:`nlfilt.denoise_collaborative` on an image of ``shape``
    (a stack (T, H, W, C): a series, or with ``volume`` a volume of cubes) besides the image itself:
    linear in the pixels (a series: in the stack's values and a window's pixels); on the GPU the array
    code's batches besides."""
    if len(shape) == 4 and volume:
        needed = math.prod(shape) * VOLUME_BYTES_PER_VALUE + int(VOLUME_BATCH_FACTOR * CPU_BATCH_BYTES)
    elif len(shape) == 4:
        _, window, channels = _series_pixels(shape)
        needed = math.prod(shape) * SERIES_BYTES_PER_STACK_VALUE + window * (
            SERIES_BYTES_PER_WINDOW_PIXEL + (channels - 1) * COLLABORATIVE_BYTES_PER_EXTRA_CHANNEL)
    else:
        pixels = shape[0] * shape[1]
        channels = shape[2] if len(shape) == 3 else 1
        needed = pixels * (COLLABORATIVE_BYTES_PER_PIXEL
                           + (channels - 1) * COLLABORATIVE_BYTES_PER_EXTRA_CHANNEL)
    if device == "gpu":
        needed += GPU_BATCH_BYTES
    return needed
