"""The analysis functions: the filter itself rather than a denoised image.

:func:`twicing_trajectory` (every twicing step from a Krylov basis),
:func:`filter_matrix` (the whole ``W`` of a small image), :func:`filter_row`
(one row of ``W``, as an image) and :func:`filter_spectrum` (the leading
eigenpairs of ``W``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy

from nlfilt.arguments import ProgressCallback, check_count, check_progress, in_layout
from nlfilt.cost import expected_applications
from nlfilt.docs import OPTIONS, TRAJECTORY_WINDOW, document
from nlfilt.filters import ProgressMeter, build_filter
from nlfilt.linalg import BlockLanczos
from nlfilt.resolve import DEFAULT_MEMORY_BUDGET, prepare
from nlfilt.stopping import TRAJECTORY_TOL, KrylovTrajectory, rademacher

#: filter_matrix refuses images with more pixels than this (a 64 x 64 image; W is then 4096 x 4096).
MAX_FILTER_MATRIX_PIXELS = 64 * 64


@dataclass
class Trajectory:
    """The twicing estimates ``z_t`` of one filter for every ``t`` up to :attr:`iterations`.

    Returned by :func:`twicing_trajectory`; built from Lanczos bases
    (:class:`nlfilt.stopping.KrylovTrajectory`), so each ``z_t`` costs a
    product of the stored basis with a small vector, not ``t`` products with
    ``K``.

    Attributes
    ----------
    iterations : int
        Largest ``t`` available (the requested one, unless the Lanczos step limit came first).
    residual : numpy.ndarray
        ``|y - z_t|^2 / (N C)`` for ``t = 1 .. iterations``.
    applications : int
        Products with ``K`` the trajectory took (with row sums, Sinkhorn scaling).
    """

    iterations: int
    residual: numpy.ndarray
    applications: int
    _krylov: Any
    _shape: tuple[int, ...]  # (H, W, C)
    _image: Any  # the image, for its layout and kind of array
    _channel_axis: Any = "auto"

    def estimate(self, t: int) -> Any:
        """Return ``z_t`` (``0 <= t <= iterations``) with the image's shape: a NumPy array for a
        NumPy image, a CuPy array for a CuPy image."""
        estimate = in_layout(self._krylov.estimate(t).reshape(self._shape), self._image, self._channel_axis)
        return self._krylov.filter.backend.like_input(estimate, self._image)


@document(*OPTIONS, window=TRAJECTORY_WINDOW)
def twicing_trajectory(image: Any, iterations: int = 100, *, kernel: str = "nlm", patch: int | None = None,
                       window: int | str | None = None, window_shape: str = "box", h: float | None = None,
                       sigma: float | None = None,
                       depth: int = 1, normalize: str | None = None, channel_axis: int | str | None = "auto",
                       device: str = "auto", dtype: Any = numpy.float32,
                       memory_budget: int = DEFAULT_MEMORY_BUDGET, tol: float = TRAJECTORY_TOL,
                       progress: ProgressCallback | None = None) -> Trajectory:
    """Twicing estimates for every step up to ``iterations`` from a few dozen products with ``K``.

    For a study of the whole gradient-descent path (the PSNR or the
    residual against the step) without ``iterations`` products with ``K``.
    The options are those of :func:`denoise`, except that ``window``
    defaults to None (global): windowed 'arccos' and 'ntk' filters are
    indefinite.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        The noisy image ``y``.
    iterations : int
        Largest step ``T`` wanted (>= 1).
    {options}
    tol : float
        Each ``z_t`` is accurate to about this, relative (the change one
        more Lanczos step would make is at most ``tol`` for every ``t <= T``).
    progress : callable, optional
        As in :func:`denoise`, over the Lanczos products with ``K`` (their
        count is only known at the end, so ``total`` is an estimate until then).

    Returns
    -------
    Trajectory

    Notes
    -----
    ``W`` is similar to a symmetric ``S`` (``K / lambda_max``; ``D K D`` for
    Sinkhorn; ``D^-1/2 K D^-1/2`` for row-normalised NLM), so
    ``z_t = p_t(W) y`` with ``p_t(x) = 1 - (1 - x)^t`` is a Krylov function
    of ``S``: ``m`` Lanczos steps give it exactly for ``t < m`` and to
    ``tol`` far beyond.  For 'arccos' and 'ntk', ``lambda_max`` is the top
    Ritz value of the same run.  Memory: the Lanczos basis, ``m`` vectors of
    N x C numbers (``m`` is usually 10-50 for ``T`` up to 1000).

    Examples
    --------
    >>> import numpy, nlfilt
    >>> noisy = numpy.random.default_rng(0).random((24, 24))
    >>> path = nlfilt.twicing_trajectory(noisy, 500, kernel="arccos", device="cpu")
    >>> path.iterations, path.applications < 50
    (500, True)
    """
    backend, array, options = prepare(image, kernel=kernel, patch=patch, window=window, h=h, sigma=sigma,
                                      depth=depth, device=device, dtype=dtype, memory_budget=memory_budget,
                                      normalize=normalize, channel_axis=channel_axis,
                                      window_shape=window_shape)
    check_count("iterations", iterations, minimum=1)
    check_progress(progress)
    meter = None
    if progress is not None:
        meter = ProgressMeter(progress, [expected_applications(options, "auto", False, runs=1)])
    filter_ = build_filter(backend, array, options, reuse=True, meter=meter)
    krylov = KrylovTrajectory(filter_, array.reshape(-1, array.shape[-1]), max_iterations=iterations, tol=tol)
    while krylov.horizon < iterations and not krylov.exhausted:
        krylov.step()
    if meter is not None:
        meter.finish()
    return Trajectory(iterations=krylov.horizon, residual=krylov.residual, applications=filter_.applications,
                      _krylov=krylov, _shape=array.shape, _image=image, _channel_axis=channel_axis)


@document(*OPTIONS)
def filter_matrix(image: Any, *, kernel: str = "nlm", patch: int | None = None,
                  window: int | str | None = "auto", window_shape: str = "box", h: float | None = None,
                  sigma: float | None = None, depth: int = 1, channel_axis: int | str | None = "auto",
                  device: str = "auto", dtype: Any = numpy.float32,
                  memory_budget: int = DEFAULT_MEMORY_BUDGET,
                  normalize: str | None = None) -> numpy.ndarray:
    """Return the dense filter ``W`` that :func:`denoise` applies, for small images.

    Row ``i`` holds the weights pixel ``i`` (row-major numbering) gives every
    pixel: reshaped to (H, W) it is the picture of the non-local filter a
    network implies.  The options and their defaults are those of
    :func:`denoise`.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        At most 4096 pixels (64 x 64).
    {options}

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
                                       memory_budget=memory_budget, normalize=normalize,
                                       channel_axis=channel_axis, window_shape=window_shape)
    pixels = math.prod(array.shape[:-1])
    if pixels > MAX_FILTER_MATRIX_PIXELS:
        raise ValueError(
            f"image has {'x'.join(map(str, array.shape[:-1]))} = {pixels} pixels; filter_matrix builds the "
            f"dense {pixels}x{pixels} filter and accepts at most {MAX_FILTER_MATRIX_PIXELS} pixels "
            "(64x64); use denoise for larger images"
        )
    filter_ = build_filter(backend, array, options, reuse=True)
    return backend.to_host(filter_.dense())


@document(*OPTIONS)
def filter_row(image: Any, pixel: tuple[int, int], *, kernel: str = "nlm", patch: int | None = None,
               window: int | str | None = "auto", window_shape: str = "box", h: float | None = None,
               sigma: float | None = None,
               depth: int = 1, channel_axis: int | str | None = "auto", device: str = "auto",
               dtype: Any = numpy.float32, memory_budget: int = DEFAULT_MEMORY_BUDGET,
               normalize: str | None = None, progress: ProgressCallback | None = None) -> numpy.ndarray:
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
    {options}
    progress : callable, optional
        As in :func:`denoise`, over the products with ``K`` that
        ``lambda_max`` or the Sinkhorn scaling need (none for NLM's row sums:
        then it is never called).

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
                                      memory_budget=memory_budget, normalize=normalize,
                                      channel_axis=channel_axis, window_shape=window_shape)
    spatial = array.shape[:-1]
    try:
        position = tuple(int(value) for value in pixel)
        valid = (position == tuple(pixel) and len(position) == len(spatial)
                 and all(0 <= value < extent for value, extent in zip(position, spatial, strict=True)))
    except (TypeError, ValueError):
        valid = False
    if not valid:
        names = "(row, col)" if len(spatial) == 2 else "(slice, row, col)"
        ranges = ", ".join(f"0 <= {name} < {extent}" for name, extent in
                           zip(names.strip("()").split(", "), spatial, strict=True))
        raise ValueError(f"pixel must be {names} with {ranges}; got {pixel!r}")
    check_progress(progress)
    meter = None if progress is None else ProgressMeter(progress, [expected_applications(options, 0, False)])
    filter_ = build_filter(backend, array, options, reuse=options.normalize != "rows", meter=meter)
    weights = backend.to_host(filter_.row(int(numpy.ravel_multi_index(position, spatial)))).reshape(spatial)
    if meter is not None:
        meter.finish()
    return weights


@dataclass(frozen=True)
class Spectrum:
    """The leading eigenpairs of a filter ``W`` (see :func:`filter_spectrum`).

    Attributes
    ----------
    eigenvalues : numpy.ndarray, shape (k,)
        The ``k`` largest eigenvalues of ``W``, in decreasing order.
    eigenvectors : numpy.ndarray, shape (k, H, W) or (k, Z, H, W)
        The matching right eigenvectors of ``W`` (``W v = lambda v``), of unit
        norm, as images of the pixel grid.
    applications : int
        Products with ``K`` the Lanczos run took.
    """

    eigenvalues: numpy.ndarray
    eigenvectors: numpy.ndarray
    applications: int


@document(*OPTIONS)
def filter_spectrum(image: Any, count: int = 8, *, kernel: str = "nlm", patch: int | None = None,
                    window: int | str | None = "auto", window_shape: str = "box", h: float | None = None,
                    sigma: float | None = None, depth: int = 1, normalize: str | None = None,
                    channel_axis: int | str | None = "auto", device: str = "auto", dtype: Any = numpy.float32,
                    memory_budget: int = DEFAULT_MEMORY_BUDGET, steps: int | None = None,
                    progress: ProgressCallback | None = None) -> Spectrum:
    """The leading eigenvalues of a filter ``W`` and its eigenvectors, as images.

    The view in which non-local filters are usually explained: ``W``'s
    eigenvectors are the image structures it keeps (eigenvalue near 1) or
    removes (near 0), and twicing brings back each with the gain
    ``1 - (1 - lambda)^t`` after ``t`` steps.  Computed from products with
    ``K`` only (Lanczos on the symmetric operator ``W`` is similar to, see
    :meth:`nlfilt.filters.Filter.symmetric_form`), so ``W`` is never formed:
    global on small images, windowed at any size.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        The image the filter is built from.
    count : int
        Eigenpairs wanted (>= 1, at most the pixel count).
    {options}
    steps : int, optional
        Lanczos steps (products with ``K``); default ``max(3 count, count +
        30)``, capped at the pixel count.  More steps, more accurate trailing
        pairs.
    progress : callable, optional
        As in :func:`denoise`, over the products with ``K``.

    Returns
    -------
    Spectrum

    Notes
    -----
    With ``W = D^-1 B D / s`` (``B`` symmetric, ``D`` diagonal), Lanczos on
    ``B`` from a Rademacher start vector gives Ritz pairs ``(mu, u)``; the
    eigenpairs of ``W`` are ``(mu / s, D^-1 u)``.  Eigenvalues are accurate
    first at the ends of the spectrum: the leading ones converge within a
    few dozen steps.

    Examples
    --------
    >>> import numpy, nlfilt
    >>> noisy = numpy.random.default_rng(0).random((16, 16))
    >>> spectrum = nlfilt.filter_spectrum(noisy, 4, window=None, device="cpu")
    >>> spectrum.eigenvectors.shape, round(float(spectrum.eigenvalues[0]), 4)
    ((4, 16, 16), 1.0)
    """
    backend, array, options = prepare(image, kernel=kernel, patch=patch, window=window, h=h, sigma=sigma,
                                      depth=depth, device=device, dtype=dtype, memory_budget=memory_budget,
                                      normalize=normalize, channel_axis=channel_axis,
                                      window_shape=window_shape)
    spatial = array.shape[:-1]
    size = math.prod(spatial)
    check_count("count", count, minimum=1)
    if count > size:
        raise ValueError(f"count must be at most the {size} pixels of the image; got {count}")
    if steps is not None:
        check_count("steps", steps, minimum=count)
    steps = min(size, max(3 * count, count + 30) if steps is None else steps)
    check_progress(progress)
    meter = None if progress is None else ProgressMeter(progress, [steps + 1])
    filter_ = build_filter(backend, array, options, reuse=True, meter=meter)
    xp = backend.xp
    apply_b, similarity, scale = filter_.symmetric_form(array.dtype)
    lanczos = BlockLanczos(xp, apply_b, rademacher(xp, (size, 1), array.dtype))
    while int(lanczos.steps[0]) < steps and not lanczos.done:
        lanczos.step()
    values, vectors = numpy.linalg.eigh(lanczos.tridiagonal(0))
    top = numpy.argsort(values)[::-1][:count]
    scale = float(values.max()) if scale is None else scale  # lambda_max(K), for K / lambda_max
    ritz = lanczos.basis(0).T @ xp.asarray(vectors[:, top], dtype=array.dtype)  # (N, k)
    if similarity is not None:
        ritz = ritz / similarity
    ritz = ritz / xp.linalg.norm(ritz, axis=0, keepdims=True)
    if meter is not None:
        meter.finish()
    eigenvectors = backend.to_host(ritz.T).reshape(len(top), *spatial)
    return Spectrum(eigenvalues=values[top] / scale if scale else values[top], eigenvectors=eigenvectors,
                    applications=filter_.applications)
