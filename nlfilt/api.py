"""Public functions: :func:`denoise`, :func:`filter_matrix` and :func:`filter_row`.

Each validates every argument (a ValueError names the parameter and what is
allowed), applies one dtype policy, moves channels last, and hands over to
:func:`nlfilt.filters.build_filter`, the single dispatch point.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy

from nlfilt.backend import DEVICES, Backend, get_backend
from nlfilt.filters import FilterOptions, build_filter, twicing
from nlfilt.kernels import KERNELS
from nlfilt.noise import estimate_sigma

#: Default bytes an operator may hold at once (patch factors, tiles, cached weights).
DEFAULT_MEMORY_BUDGET = 256 * 2**20

#: filter_matrix refuses images with more pixels than this (a 64 x 64 image; W is then 4096 x 4096).
MAX_FILTER_MATRIX_PIXELS = 64 * 64

#: Per-kernel defaults, chosen from PSNR measurements on Set12 (benchmarks/tune_defaults.py,
#: results in benchmarks/results/defaults.md).
KERNEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "nlm": {"patch": 5, "window": 11, "h_per_sigma": 0.8},
    "arccos": {"patch": 3, "window": None},
    "ntk": {"patch": 3, "window": None},
}

_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))

ProgressCallback = Callable[[int, int], None]


def denoise(image: Any, *, kernel: str = "nlm", patch: int | None = None,
            window: int | str | None = "auto", h: float | None = None,
            sigma: float | None = None, depth: int = 1, iterations: int = 1,
            device: str = "auto", dtype: Any = numpy.float32,
            memory_budget: int = DEFAULT_MEMORY_BUDGET,
            progress: ProgressCallback | None = None) -> Any:
    """Denoise an image with a non-local filter and twicing.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        Gray or channels-last image of any real dtype, in its own units
        (``h`` and ``sigma`` are in the same units).  Must be finite.
    kernel : {'nlm', 'arccos', 'ntk'}
        Patch affinity ``K`` (see Notes).
    patch : int, optional
        Odd side of the square patch, at most ``min(H, W)``.  Default 5 for
        'nlm', 3 for 'arccos' and 'ntk'.
    window : int, None or 'auto'
        Odd side of the square search window, or None for all pixel pairs
        (global mode).  'auto' (default) is 11 for 'nlm' and None (global) for
        'arccos' and 'ntk', whose windowed filters are not positive
        semidefinite (see Notes).
    h : float, optional
        NLM bandwidth (> 0).  Default ``0.8 * sigma``, or, when that is 0 (a
        noise-free image), ``1e-3`` times the image's value range.
        Only for ``kernel='nlm'``.
    sigma : float, optional
        NLM noise standard deviation (>= 0), subtracted from squared patch
        distances.  Default: estimated from the image
        (:func:`nlfilt.noise.estimate_sigma`).  Only for ``kernel='nlm'``.
    depth : int
        Number of ReLU layers of the network whose tangent kernel 'ntk' is
        (>= 1).  Only for ``kernel='ntk'``.
    iterations : int
        Twicing steps (>= 1); 1 is the one-shot filter ``W y``.
    device : {'auto', 'cpu', 'gpu'}
        Where to compute.  'auto' uses a CUDA GPU when CuPy is installed and
        one is usable, else the CPU.
    dtype : {numpy.float32, numpy.float64}
        Precision of the computation and of the result.
    memory_budget : int
        Bytes the global mode's patch factors, tiles and right-hand sides may
        occupy together (it never holds an N x N matrix; a budget too small
        for even one tile row raises ValueError).  The windowed mode keeps
        its per-offset weights between applications only when they fit in
        it; its working buffers, about ``C + 8`` image-sized arrays per CPU
        thread, are not counted.
    progress : callable, optional
        Called as ``progress(t, iterations)`` after each twicing step.

    Returns
    -------
    ndarray
        The estimate ``z_iterations``, same shape as ``image``, of ``dtype``
        (a CuPy array when computed on the GPU).

    Raises
    ------
    ValueError
        For an invalid argument or image (the message names the parameter).
    RuntimeError
        For ``device='gpu'`` when no GPU is usable.

    Notes
    -----
    With ``P_i`` the patch of pixel ``i`` (reflect padding, all channels
    stacked, ``d = patch**2 * C`` values):

    * ``'nlm'``: ``K_ij = exp(-max(|P_i - P_j|^2 / d - 2 sigma^2, 0) / h^2)``
      and ``W = diag(1 / K 1) K`` (rows sum to 1).
    * ``'arccos'``: ``K_ij = |P_i| |P_j| / pi (sin phi + (pi - phi) cos phi)``
      with ``phi`` the angle between the patches: ``Sigma^1``, the tangent
      kernel of a one-hidden-layer ReLU CNN when only its output layer is
      trained.  ``W = K / lambda_max(K)`` (gradient descent with step
      ``1 / lambda_max``).
    * ``'ntk'``: the full tangent kernel ``Theta^depth`` of a CNN with one
      k x k convolution, ``depth - 1`` 1x1 ReLU convolutions and a linear 1x1
      output, He initialisation, all layers trained:
      ``Theta^l = Sigma^l + Theta^{l-1} * dSigma^l`` from
      ``Sigma^0 = Theta^0 = <P_i, P_j>``.  Depth 1 is 'arccos' plus the
      first-layer term ``<P_i, P_j> (pi - phi) / pi``.
      ``W = K / lambda_max(K)``.

    ``lambda_max`` is found by Lanczos to 1e-3 relative.  Twicing runs
    ``z_t = z_{t-1} + W (y - z_{t-1})`` from ``z_0 = 0``; every channel uses
    the same ``W``.  The window mode only pairs pixels at most ``window // 2``
    apart on each axis, truncated at the borders.

    Cost per application of ``W``: global, N^2 pairs (a GEMM of depth ``d``
    and one kernel evaluation each); windowed, ``N * window**2 / 2`` kernel
    evaluations plus O(log patch) additions each.

    A window cuts a positive semidefinite kernel into an indefinite one: the
    windowed 'arccos' and 'ntk' filters have eigenvalues down to about -0.2,
    which twicing amplifies by about 1.2 per step, so their estimates degrade
    from the first steps on.  They are offered for study; use the global mode
    to denoise with them.

    The defaults come from PSNR measurements on Set12 with noise of standard
    deviation 25 (benchmarks/tune_defaults.py, benchmarks/results/defaults.md):
    for 'nlm' the one-shot filter peaks at patch 5, window 11 and
    ``h = 0.8 sigma`` (28.72 dB mean, sigma estimated; 0.9 sigma ties); for 'arccos' and 'ntk'
    global twicing does best with patch 3.

    References
    ----------
    .. [1] A. Buades, B. Coll, J.-M. Morel, "A non-local algorithm for image
       denoising", CVPR 2005.
    .. [2] J. Tachella, J. Tang, M. Davies, "The neural tangent link between
       CNN denoisers and non-local filters", CVPR 2021.

    Examples
    --------
    >>> import numpy, nlfilt
    >>> rng = numpy.random.default_rng(0)
    >>> noisy = 0.5 + 0.1 * rng.standard_normal((32, 32))
    >>> nlfilt.denoise(noisy, device="cpu").shape
    (32, 32)
    """
    backend, array, options = prepare(image, kernel=kernel, patch=patch, window=window, h=h,
                                       sigma=sigma, depth=depth, device=device, dtype=dtype,
                                       memory_budget=memory_budget)
    _check_count("iterations", iterations, minimum=1)
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be a callable or None; got {progress!r}")
    filter_ = build_filter(backend, array, options, reuse=iterations > 1)
    flat = array.reshape(-1, array.shape[2])
    estimate = twicing(filter_, flat, iterations, progress)
    return estimate.reshape(numpy.shape(image))


def filter_matrix(image: Any, *, kernel: str = "nlm", patch: int | None = None,
                  window: int | str | None = "auto", h: float | None = None,
                  sigma: float | None = None, depth: int = 1, device: str = "auto",
                  dtype: Any = numpy.float32,
                  memory_budget: int = DEFAULT_MEMORY_BUDGET) -> numpy.ndarray:
    """Return the dense filter ``W`` that :func:`denoise` applies, for small images.

    Row ``i`` holds the weights pixel ``i`` (row-major numbering) gives every
    pixel: reshaped to (H, W) it is the picture of the non-local filter a
    network implies.  The options and their defaults are those of
    :func:`denoise`.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        At most 4096 pixels (64 x 64).
    kernel, patch, window, h, sigma, depth, device, dtype, memory_budget
        As in :func:`denoise`.

    Returns
    -------
    numpy.ndarray, shape (H*W, H*W)
        ``W`` on the host, of ``dtype``.

    Raises
    ------
    ValueError
        For an invalid argument, or an image of more than 4096 pixels.

    Notes
    -----
    Built from the same tiles or offsets as the matrix-free operators, so
    ``filter_matrix(y) @ y.reshape(H*W, -1)`` is ``denoise(y)`` up to rounding.

    Examples
    --------
    >>> import numpy, nlfilt
    >>> noisy = numpy.random.default_rng(0).random((16, 16))
    >>> weights = nlfilt.filter_matrix(noisy, window=None, device="cpu")
    >>> weights.shape, bool(numpy.allclose(weights.sum(axis=1), 1, atol=1e-5))
    ((256, 256), True)
    """
    backend, array, options = prepare(image, kernel=kernel, patch=patch, window=window, h=h,
                                       sigma=sigma, depth=depth, device=device, dtype=dtype,
                                       memory_budget=memory_budget)
    pixels = array.shape[0] * array.shape[1]
    if pixels > MAX_FILTER_MATRIX_PIXELS:
        raise ValueError(
            f"image has {array.shape[0]}x{array.shape[1]} = {pixels} pixels; filter_matrix builds the "
            f"dense {pixels}x{pixels} filter and accepts at most {MAX_FILTER_MATRIX_PIXELS} pixels "
            "(64x64); use denoise for larger images"
        )
    filter_ = build_filter(backend, array, options, reuse=True)
    return backend.to_host(filter_.dense())


def filter_row(image: Any, pixel: tuple[int, int], *, kernel: str = "nlm", patch: int | None = None,
               window: int | str | None = "auto", h: float | None = None, sigma: float | None = None,
               depth: int = 1, device: str = "auto", dtype: Any = numpy.float32,
               memory_budget: int = DEFAULT_MEMORY_BUDGET) -> numpy.ndarray:
    """Return the weights one pixel gives every pixel: its row of ``W``, as an image.

    Computed without forming ``W``: one GEMM row in the global mode (O(N d)),
    one application of the windowed operator otherwise; 'arccos' and 'ntk'
    also need ``lambda_max`` (Lanczos, about 5-20 applications of ``K``).
    The options and their defaults are those of :func:`denoise`.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        The image the filter is built from.
    pixel : (int, int)
        Row and column of the pixel whose weights are returned.

    Returns
    -------
    numpy.ndarray, shape (H, W)
        ``W[i, :]`` for ``i = row * W + col``, reshaped to the image grid.

    Raises
    ------
    ValueError
        For an invalid argument, or a pixel outside the image.

    Examples
    --------
    >>> import numpy, nlfilt
    >>> noisy = numpy.random.default_rng(0).random((16, 16))
    >>> weights = nlfilt.filter_row(noisy, (3, 4), window=None, device="cpu")
    >>> weights.shape, round(float(weights.sum()), 4)
    ((16, 16), 1.0)
    """
    backend, array, options = prepare(image, kernel=kernel, patch=patch, window=window, h=h,
                                      sigma=sigma, depth=depth, device=device, dtype=dtype,
                                      memory_budget=memory_budget)
    height, width = array.shape[:2]
    try:
        row, col = (int(value) for value in pixel)
        valid = (row, col) == tuple(pixel) and 0 <= row < height and 0 <= col < width
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"pixel must be (row, col) with 0 <= row < {height} and 0 <= col < {width}; "
                         f"got {pixel!r}")
    filter_ = build_filter(backend, array, options, reuse=options.kernel != "nlm")
    return backend.to_host(filter_.row(row * width + col)).reshape(height, width)


def prepare(image: Any, *, kernel: str, patch: Any, window: Any, h: Any, sigma: Any,
             depth: Any, device: str, dtype: Any,
             memory_budget: Any) -> tuple[Backend, Any, FilterOptions]:
    """Validate the arguments and return (backend, (H, W, C) image on it, options).

    The shared front half of :func:`denoise` and :func:`filter_matrix`, also
    used by the benchmarks to build operators with the same defaults.  Raises
    ValueError naming the parameter for any invalid argument.
    """
    if not isinstance(kernel, str) or kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(map(repr, KERNELS))}; got {kernel!r}")
    if not isinstance(device, str) or device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(map(repr, DEVICES))}; got {device!r}")
    try:
        work_dtype = None if dtype is None else numpy.dtype(dtype)  # numpy.dtype(None) is float64
    except TypeError:
        work_dtype = None
    if work_dtype is None or work_dtype not in _DTYPES:
        raise ValueError(f"dtype must be numpy.float32 or numpy.float64; got {dtype!r}")
    _check_count("depth", depth, minimum=1)
    _check_count("memory_budget", memory_budget, minimum=1)
    if depth != 1 and kernel != "ntk":
        raise ValueError(f"depth applies only to kernel='ntk'; got depth={depth} with kernel={kernel!r}")
    if h is not None:
        _check_real("h", h, "> 0", lambda value: value > 0)
    if sigma is not None:
        _check_real("sigma", sigma, ">= 0", lambda value: value >= 0)
    if kernel != "nlm" and (h is not None or sigma is not None):
        raise ValueError(
            f"h and sigma apply only to kernel='nlm'; kernel={kernel!r} has no bandwidth (got "
            f"h={h!r}, sigma={sigma!r})"
        )

    host = _as_real_array(image)
    defaults = KERNEL_DEFAULTS[kernel]
    height, width = host.shape[:2]
    patch = defaults["patch"] if patch is None else patch
    _check_count("patch", patch, minimum=1, odd=True)
    if patch > min(height, width):
        raise ValueError(
            f"patch must be an odd integer from 1 to min(H, W) = {min(height, width)} for this "
            f"{height}x{width} image; got {patch}"
        )
    if isinstance(window, str):
        if window != "auto":
            raise ValueError(f"window must be an odd integer >= 1, None (global) or 'auto'; got {window!r}")
        window = defaults["window"]
    if window is not None:
        _check_count("window", window, minimum=1, odd=True,
                     allowed="an odd integer >= 1, None (global) or 'auto'")

    backend = get_backend(device)
    array = backend.asarray(host, dtype=work_dtype)
    if kernel == "nlm":
        if sigma is None:
            if min(height, width) < 4:
                raise ValueError(f"sigma cannot be estimated from a {height}x{width} image (4x4 at least); "
                                 "pass sigma")
            sigma = estimate_sigma(backend.xp, array)
        if h is None:
            h = defaults["h_per_sigma"] * sigma
            if h <= 0:
                spread = float(array.max() - array.min())
                h = 1e-3 * spread if spread > 0 else 1.0
    options = FilterOptions(kernel=kernel, patch=int(patch), window=None if window is None else int(window),
                            h=None if h is None else float(h), sigma=None if sigma is None else float(sigma),
                            depth=int(depth), memory_budget=int(memory_budget))
    return backend, array, options


def _as_real_array(image: Any) -> numpy.ndarray:
    """Return ``image`` as a finite real (H, W, C) NumPy array, or raise ValueError."""
    if hasattr(image, "__cuda_array_interface__") and hasattr(image, "get"):
        image = image.get()
    array = numpy.asarray(image)
    if array.dtype == object or not (numpy.issubdtype(array.dtype, numpy.number) or array.dtype == bool):
        raise ValueError(f"image must be a real numeric array; got dtype {array.dtype}")
    if numpy.iscomplexobj(array):
        raise ValueError(f"image must be real; got complex dtype {array.dtype}")
    if array.ndim not in (2, 3):
        raise ValueError(f"image must have 2 dimensions (H, W) or 3 (H, W, C); got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"image is empty (shape {array.shape})")
    if array.dtype.kind == "f" and not numpy.isfinite(array).all():
        bad = int(numpy.count_nonzero(~numpy.isfinite(array)))
        raise ValueError(f"image has {bad} NaN or Inf pixel values; all values must be finite")
    return array if array.ndim == 3 else array[:, :, None]


def _check_count(name: str, value: Any, *, minimum: int, odd: bool = False, allowed: str = "") -> None:
    """Raise ValueError unless ``value`` is an integer >= minimum (and odd if asked)."""
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not is_int or value < minimum or (odd and value % 2 == 0):
        if not allowed:
            allowed = f"an {'odd ' if odd else ''}integer >= {minimum}"
        raise ValueError(f"{name} must be {allowed}; got {value!r}")


def _check_real(name: str, value: Any, rule: str, accept: Callable[[float], bool]) -> None:
    """Raise ValueError unless ``value`` is a finite real number satisfying ``rule``."""
    is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not is_real or not math.isfinite(value) or not accept(float(value)):
        raise ValueError(f"{name} must be a finite number {rule}; got {value!r}")
