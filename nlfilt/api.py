"""Public functions: :func:`denoise`, :func:`twicing_trajectory`, :func:`filter_matrix`, :func:`filter_row`.

Each validates every argument (a ValueError names the parameter and what is
allowed), applies one dtype policy, moves channels last, and hands over to
:func:`nlfilt.filters.build_filter`, the single dispatch point.
"""

from __future__ import annotations

import math
import numbers
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy

from nlfilt.backend import DEVICES, Backend, get_backend, host_array
from nlfilt.collaborative import check_shape, collaborative_filter
from nlfilt.cost import expected_applications
from nlfilt.filters import FilterOptions, ProgressMeter, build_filter, twicing
from nlfilt.kernels import kernel_class
from nlfilt.linalg import BlockLanczos
from nlfilt.noise import estimate_sigma
from nlfilt.operators import WINDOW_SHAPES
from nlfilt.patches import spatial_shape
from nlfilt.stopping import (
    DEFAULT_MAX_ITERATIONS,
    EPSILON_PER_SIGMA,
    STOP_RULES,
    TRAJECTORY_TOL,
    KrylovTrajectory,
    StopReport,
    Twin,
    auto_twicing,
    rademacher,
)

#: Default bytes an operator may hold at once (patch factors, tiles, cached weights).
DEFAULT_MEMORY_BUDGET = 256 * 2**20

#: filter_matrix refuses images with more pixels than this (a 64 x 64 image; W is then 4096 x 4096).
MAX_FILTER_MATRIX_PIXELS = 64 * 64

#: Guided NLM (``guide='pilot'``): bandwidth per sigma for the distances between pilot patches,
#: which hold little noise (so no ``2 sigma^2`` is subtracted from them), and their patch side (little
#: noise needs little averaging).  Best of h 0.35-0.7 sigma x patch 3/5/7 x window 11/21 on four
#: Set12 images at sigma 25.
GUIDE_H_PER_SIGMA = 0.7
GUIDE_PATCH = 3

#: Under ``channel_axis='auto'`` (the default) the last axis of a 3-D image holds its channels when it has
#: at most this many entries; a longer one is refused (a volume read as channels would be filtered as
#: one image of many channels, without a word).
MAX_AUTO_CHANNELS = 16

NORMALIZE_CHOICES = ("rows", "sinkhorn")
GUIDES = ("pilot",)

_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


@dataclass(frozen=True)
class DenoiseInfo:
    """What :func:`denoise` did, returned with ``return_info=True``.

    Attributes
    ----------
    iterations : int
        Twicing steps of the (final) pass: the chosen ``t`` with ``iterations='auto'``.
    pilot_iterations : int or None
        Steps of the pilot pass with ``guide='pilot'``.
    sigma : float or None
        Noise standard deviation used (given or estimated); None when nothing needed it.
    h : float or None
        NLM bandwidth of the (first) pass.
    stop : str or None
        The stopping rule with ``iterations='auto'``.
    risk : numpy.ndarray or None
        ``SURE(t) / (N C)`` for ``t = 1, 2, ...`` of the final pass (``stop='sure'``).
    residual : numpy.ndarray or None
        ``|y - z_t|^2 / (N C)`` for the same steps (``iterations='auto'``).
    applications : int
        Products with the affinity ``K`` over the whole call (each over a block of columns).
    """

    iterations: int
    pilot_iterations: int | None
    sigma: float | None
    h: float | None
    stop: str | None
    risk: numpy.ndarray | None
    residual: numpy.ndarray | None
    applications: int

#: ``progress(done, total)``: products with ``K`` done (a float) out of those expected (see :func:`denoise`).
ProgressCallback = Callable[[float, int], None]



#: The numpydoc entries of the options the public functions share (one text, filled into each
#: docstring's ``{options}`` line by :func:`_document`).
_OPTION_DOCS = {
    "kernel": """\
kernel : {'nlm', 'arccos', 'ntk'}
    Patch affinity ``K`` (see the Notes of :func:`denoise`).""",
    "patch": """\
patch : int or tuple of 3 ints, optional
    Odd side of the square patch, at most ``min(H, W)``; for a volume one
    odd side per axis (Z, H, W), or an int for all three.  Default 5 for
    'nlm', 3 for 'arccos' and 'ntk' (on every axis).""",
    "window": """\
window : int, tuple of 3 ints, None or 'auto'
    Odd side of the square search window (for a volume one per axis, e.g.
    ``(7, 11, 11)`` for a time series with a short temporal window), or
    None for all pixel pairs (global mode).  'auto' (default) is 11 for
    'nlm' (on every axis) and None (global) for 'arccos' and 'ntk', whose
    windowed filters are not positive semidefinite (see the Notes of
    :func:`denoise`).""",
    "window_shape": """\
window_shape : {'box', 'tent'}
    The search window's weights: 'box' (default) weighs every offset 1;
    'tent' weighs an offset by ``prod (1 - |offset| / (r + 1))`` over the
    axes, ``r = window // 2``, whose Fourier transform is non-negative, so
    the windowed 'arccos' and 'ntk' filters stay positive semidefinite and
    twicing converges with them.  Only with a window.""",
    "h": """\
h : float, optional
    NLM bandwidth (> 0).  Default ``0.8 * sigma``, or, when that is 0 (a
    noise-free image), ``1e-3`` times the image's value range.
    Only for ``kernel='nlm'``.""",
    "sigma": """\
sigma : float, optional
    Noise standard deviation (>= 0): NLM subtracts ``2 sigma^2`` from
    squared patch distances, and automatic stopping weighs the residual
    against it.  Default: estimated from the image
    (:func:`nlfilt.noise.estimate_sigma`).  Only for ``kernel='nlm'`` or
    ``iterations='auto'``.""",
    "depth": """\
depth : int
    Number of ReLU layers of the network whose tangent kernel 'ntk' is
    (>= 1).  Only for ``kernel='ntk'``.""",
    "normalize": """\
normalize : {'rows', 'sinkhorn'}, optional
    How NLM turns ``K`` into ``W`` (default 'rows'); see the Notes of
    :func:`denoise`.  Only for
    ``kernel='nlm'`` ('arccos' and 'ntk' always use ``K / lambda_max``).""",
    "channel_axis": """\
channel_axis : int, None or 'auto'
    Which axis of ``image`` holds its channels (scikit-image's meaning).
    'auto' (default): none for a 2-D image, the last of a 3-D one with at
    most 16 entries (a longer last axis is refused: pass ``channel_axis=-1``
    for that many channels, e.g. a hyperspectral image).  None: no channels;
    a 3-D array is then a volume (Z, H, W), filtered with box patches and
    windows.  An int: that axis of a 3-D image, or of a 4-D volume with
    channels; the result has the input's layout.""",
    "device": """\
device : {'auto', 'cpu', 'gpu'}
    Where to compute.  'auto' uses a CUDA GPU when CuPy is installed and
    one is usable, else the CPU.""",
    "dtype": """\
dtype : {numpy.float32, numpy.float64}
    Precision of the computation and of the result.""",
    "memory_budget": """\
memory_budget : int
    Bytes the global mode's patch factors, tiles and right-hand sides may
    occupy together (it never holds an N x N matrix; a budget too small
    for even one tile row raises ValueError).  The windowed array code
    keeps its per-offset weights between applications only when they fit
    in it; its working buffers, about ``C + 8`` image-sized arrays per CPU
    thread, are not counted (the compiled NLM operator on the CPU keeps no
    weights and needs about three image-sized arrays in all).  With ``iterations='auto'`` in the global
    mode the Lanczos bases of both runs also fit in it (at least 8 steps
    each): a small budget shortens the range of steps the choice is
    made from.""",
}


#: The options the four public functions share, in their docstrings' order.
_OPTIONS = tuple(_OPTION_DOCS)

#: twicing_trajectory's own window entry (its default is the global mode).
_TRAJECTORY_WINDOW = """\
window : int, None or 'auto'
    Odd side of the square search window, or None (default) for all pixel
    pairs (global mode); 'auto' is 11 for 'nlm' and None for 'arccos' and
    'ntk' (see :func:`denoise`).\
"""

def _document(*names: str, **replaced: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Fill the ``{options}`` line of a public function's docstring with the shared entries ``names``
    (in that order; ``replaced`` gives a function its own text for one of them)."""
    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        texts = [replaced.get(name, _OPTION_DOCS[name]) for name in names]
        block = "\n".join(textwrap.indent(text, "    ") for text in texts)
        function.__doc__ = function.__doc__.replace("    {options}", block)
        return function
    return decorate


@_document(*_OPTIONS)
def denoise(image: Any, *, kernel: str = "nlm", patch: int | None = None,
            window: int | str | None = "auto", window_shape: str = "box", h: float | None = None,
            sigma: float | None = None, depth: int = 1, iterations: int | str = 1,
            stop: str | None = None, max_iterations: int | None = None,
            normalize: str | None = None, guide: str | None = None,
            channel_axis: int | str | None = "auto", device: str = "auto", dtype: Any = numpy.float32,
            memory_budget: int = DEFAULT_MEMORY_BUDGET,
            progress: ProgressCallback | None = None, return_info: bool = False) -> Any:
    """Denoise an image with a non-local filter and twicing.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        Gray or channels-last image of any real dtype, in its own units
        (``h`` and ``sigma`` are in the same units).  Must be finite.
    {options}
    iterations : int or 'auto'
        Twicing steps (>= 1); 1 is the one-shot filter ``W y``.  'auto'
        chooses the step per image by the ``stop`` rule (see Notes).
    stop : {'sure', 'discrepancy'}, optional
        Rule of ``iterations='auto'`` (default 'sure').
    max_iterations : int, optional
        Most steps ``iterations='auto'`` may choose (default 1000).
    guide : {None, 'pilot'}
        'pilot' computes the affinities from a first estimate (a pass with
        the same options, stopping included) instead of from the noisy image,
        then filters the noisy image with them (see Notes).
    progress : callable, optional
        Called as ``progress(done, total)`` as the work advances, from the
        calling thread.  The unit is one product with the affinity ``K`` (of
        the filter, the SURE twin and both passes of ``guide='pilot'``
        alike): ``done`` (a float) counts the finished products plus the
        part of the current one (after each tile of query rows in the global
        mode, each window offset in the windowed mode); ``total`` (an int) is
        the count expected for the whole call.  The count of some work is
        only known as it runs (Lanczos for ``lambda_max``, Sinkhorn scaling,
        automatic stopping), so ``total`` may change between calls: raised
        when ``done`` reaches it, set exactly once the remaining products are
        known, and equal to ``done`` at the last call.  ``done`` never
        decreases.  Without it the call does no bookkeeping.
    return_info : bool
        Also return a :class:`DenoiseInfo` (the chosen steps, sigma, curves).

    Returns
    -------
    ndarray
        The estimate ``z_t``, same shape as ``image``, of ``dtype``: a NumPy
        array for a NumPy image (on whichever device it was computed), a
        CuPy array for a CuPy image.
    DenoiseInfo
        Only with ``return_info=True``.

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

    ``normalize='sinkhorn'`` makes the NLM filter symmetric and doubly
    stochastic, ``W = D K D`` with the diagonal ``D`` from symmetric
    Sinkhorn-Knopp iterations ``d <- sqrt(d / K d)`` (one product with ``K``
    each; 12 on Set12 at sigma 25), run until every row sum is within 1e-3 of 1.

    Automatic stopping (``iterations='auto'``; :mod:`nlfilt.stopping`): 'sure'
    takes the ``t`` minimising Stein's unbiased risk estimate
    ``|y - z_t|^2 - N C sigma^2 + 2 sigma^2 div_t``, the divergence of
    ``y -> z_t`` estimated by Monte-Carlo SURE: a twin run on ``y + eps b``
    (``b`` random signs, ``eps = 0.1 sigma``) with its own filter, since every
    ``W`` here is built from ``y`` and the fixed-``W`` trace ``C tr(A_t)`` is
    far off; 'discrepancy' takes the first ``t`` with
    ``|y - z_t|^2 / (N C) <= sigma^2``.  The windowed mode steps once per
    product with ``K`` and stops once SURE has risen for a few steps past its
    minimum; the global mode computes the whole trajectory from Lanczos bases
    of the symmetric form of ``W`` (typically 10-85 products with ``K`` for
    every ``t`` up to 1000, against one product per step), keeping the basis
    vectors (N x C numbers each) of both runs.

    ``guide='pilot'`` costs two passes.  For 'nlm' the second pass compares
    3 x 3 pilot patches with ``h = 0.7 sigma`` and no ``2 sigma^2`` offset
    (the pilot holds little noise), so the weights follow the structure
    rather than the noise; how much that gains is measured per noise level
    in benchmarks/results/quality.md (on Set12 at sigma 25 it does not beat
    its own pilot).

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
                                       memory_budget=memory_budget, normalize=normalize,
                                       iterations=iterations, channel_axis=channel_axis,
                                       window_shape=window_shape)
    stop, max_iterations = resolve_stopping(iterations, stop, max_iterations)
    if guide is not None and guide not in GUIDES:
        raise ValueError(f"guide must be None or 'pilot'; got {guide!r}")
    _check_progress(progress)
    flat = array.reshape(-1, array.shape[-1])
    twin_data = None
    if iterations == "auto" and stop == "sure" and options.sigma > 0:
        epsilon = EPSILON_PER_SIGMA * options.sigma
        probe = rademacher(backend.xp, flat.shape, flat.dtype)
        twin_data = (flat + flat.dtype.type(epsilon) * probe, probe, epsilon)
    meter = None
    if progress is not None:
        per_pass = expected_applications(options, iterations, False, runs=1 if twin_data is None else 2)
        meter = ProgressMeter(progress, [per_pass] * (2 if guide == "pilot" else 1))
    filters: list[Any] = []
    run = {"flat": flat, "iterations": iterations, "stop": stop, "max_iterations": max_iterations,
           "sigma": options.sigma, "twin_data": twin_data, "meter": meter, "filters": filters}
    twin_guide = None if twin_data is None else twin_data[0].reshape(array.shape)
    estimate, twin_estimate, report = _twicing_pass(backend, array, twin_guide, options, **run)
    pilot_iterations = None
    if guide == "pilot":
        pilot_iterations = report.iterations
        twin_guide = None if twin_estimate is None else twin_estimate.reshape(array.shape)
        if meter is not None:
            meter.next_stage()
        estimate, twin_estimate, report = _twicing_pass(backend, estimate.reshape(array.shape), twin_guide,
                                                        guided_options(options), **run)
    if meter is not None:
        meter.finish()
    estimate = backend.like_input(in_layout(estimate.reshape(array.shape), image, channel_axis), image)
    if not return_info:
        return estimate
    auto = iterations == "auto"
    info = DenoiseInfo(iterations=report.iterations, pilot_iterations=pilot_iterations, sigma=options.sigma,
                       h=options.h, stop=stop if auto else None, risk=report.risk,
                       residual=report.residual if auto else None,
                       applications=sum(filter_.applications for filter_ in filters))
    return estimate, info


def denoise_collaborative(image: Any, *, sigma: float | None = None, channel_axis: int | str | None = "auto",
                          device: str = "auto", dtype: Any = numpy.float32,
                          progress: ProgressCallback | None = None, return_info: bool = False) -> Any:
    """Denoise an image with the collaborative Wiener filter, nlfilt's highest-quality mode.

    Two stages over groups of similar 8 x 8 patches (BM3D's scheme, see
    :mod:`nlfilt.collaborative`): hard thresholding of each group's 3-D DCT
    gives a pilot; groups matched on the pilot are then shrunk by the
    empirical Wiener gains ``P^2 / (P^2 + sigma^2)`` of the pilot's
    coefficients, and every patch is added back weighted.  Colour images are
    filtered in an opponent colour space with groups matched on luminance.
    Not a fixed linear filter ``W`` of the image: the pilot makes it
    adaptive, so there is no ``filter_matrix`` or twicing for it.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        Gray or channels-last image of any real dtype, at least 8 x 8.
    sigma : float, optional
        Noise standard deviation (>= 0) in the image's units; 0 returns the
        image.  Default: estimated (:func:`nlfilt.noise.estimate_sigma`).
    device : {'auto', 'cpu', 'gpu'}
        Where to compute (as in :func:`denoise`).
    dtype : {numpy.float32, numpy.float64}
        Precision of the computation and of the result.
    progress : callable, optional
        ``progress(done, 4)`` after each of the four steps (matching and
        filtering, for each stage).
    return_info : bool
        Also return a :class:`DenoiseInfo` (``sigma`` filled in; one
        "iteration", no products with ``K``).

    Returns
    -------
    ndarray
        The estimate, same shape as ``image``, of ``dtype`` (NumPy in, NumPy
        out; CuPy in, CuPy out).

    Examples
    --------
    >>> import numpy, nlfilt
    >>> noisy = 0.5 + 0.1 * numpy.random.default_rng(0).standard_normal((32, 32))
    >>> nlfilt.denoise_collaborative(noisy, device="cpu").shape
    (32, 32)
    """
    _check_device(device)
    work_dtype = _check_dtype(dtype)
    _check_progress(progress)
    host = _as_real_array(image, channel_axis)
    if host.ndim == 4:
        raise ValueError("the collaborative filter works on 2-D images; for a volume use nlfilt.denoise "
                         "(channel_axis=None), or filter its slices one by one")
    if sigma is not None:
        _check_real("sigma", sigma, ">= 0", lambda value: value >= 0)
    check_shape(host.shape)  # before the image goes to the device
    backend, array = place(host, device, work_dtype)
    if sigma is None:
        sigma = estimate_sigma(backend.xp, array)
    estimate = collaborative_filter(backend, array, float(sigma), progress=progress)
    estimate = backend.like_input(in_layout(estimate.reshape(array.shape), image, channel_axis), image)
    if not return_info:
        return estimate
    return estimate, DenoiseInfo(iterations=1, pilot_iterations=None, sigma=float(sigma), h=None, stop=None,
                                 risk=None, residual=None, applications=0)


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


@_document(*_OPTIONS, window=_TRAJECTORY_WINDOW)
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
    _check_count("iterations", iterations, minimum=1)
    _check_progress(progress)
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


def resolve_stopping(iterations: Any, stop: Any, max_iterations: Any) -> tuple[str | None, int | None]:
    """Validate the stopping arguments of :func:`denoise`; return (stop, max_iterations) with defaults.

    Raises ValueError naming the parameter.  Both are None unless ``iterations='auto'``.
    """
    if iterations == "auto":
        stop = "sure" if stop is None else stop
        if stop not in STOP_RULES:
            raise ValueError(f"stop must be one of {', '.join(map(repr, STOP_RULES))}; got {stop!r}")
        max_iterations = DEFAULT_MAX_ITERATIONS if max_iterations is None else max_iterations
        _check_count("max_iterations", max_iterations, minimum=1)
        return stop, max_iterations
    if stop is not None or max_iterations is not None:
        raise ValueError(f"stop and max_iterations apply only to iterations='auto'; got stop={stop!r}, "
                         f"max_iterations={max_iterations!r} with iterations={iterations!r}")
    return None, None


def guided_options(options: FilterOptions) -> FilterOptions:
    """Options of the pass that compares pilot patches (``guide='pilot'``).

    For NLM: ``h = GUIDE_H_PER_SIGMA sigma``, no ``2 sigma^2`` offset, and
    patches of side ``GUIDE_PATCH`` (when smaller than the first pass's).
    """
    if kernel_class(options.kernel).h_per_sigma is None:  # no bandwidth to re-derive
        return options
    h = GUIDE_H_PER_SIGMA * options.sigma if options.sigma else options.h
    patch = (min(options.patch, GUIDE_PATCH) if isinstance(options.patch, int)
             else tuple(min(side, GUIDE_PATCH) for side in options.patch))
    return replace(options, h=h, sigma=0.0, patch=patch)


def _twicing_pass(backend: Backend, guide: Any, twin_guide: Any, options: FilterOptions, *, flat: Any,
                  iterations: int | str, stop: str | None, max_iterations: int | None, sigma: float | None,
                  twin_data: tuple[Any, Any, float] | None, meter: ProgressMeter | None,
                  filters: list[Any]) -> tuple[Any, Any, StopReport]:
    """One pass of :func:`denoise`: the filter of ``guide`` applied to ``flat`` (N, C) by twicing.

    With SURE stopping, the twin run (filter of ``twin_guide``, data
    ``twin_data``) goes along.  Appends the filters built to ``filters``;
    they report their products with ``K`` to ``meter``.
    """
    filter_ = build_filter(backend, guide, options, reuse=iterations != 1, meter=meter)
    filters.append(filter_)
    if iterations != "auto":
        report = StopReport(iterations=iterations, rule="fixed", risk=None, residual=numpy.zeros(0))
        return twicing(filter_, flat, iterations), None, report
    twin = None
    if twin_data is not None:
        twin = Twin(build_filter(backend, twin_guide, options, reuse=True, meter=meter), *twin_data)
        filters.append(twin.filter)
    return auto_twicing(filter_, flat, sigma=sigma, rule=stop, twin=twin, max_iterations=max_iterations,
                        krylov=options.window is None, basis_budget=options.memory_budget)


@_document(*_OPTIONS)
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


@_document(*_OPTIONS)
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
    _check_progress(progress)
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


@_document(*_OPTIONS)
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
    _check_count("count", count, minimum=1)
    if count > size:
        raise ValueError(f"count must be at most the {size} pixels of the image; got {count}")
    if steps is not None:
        _check_count("steps", steps, minimum=count)
    steps = min(size, max(3 * count, count + 30) if steps is None else steps)
    _check_progress(progress)
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


def prepare(image: Any, *, kernel: str, patch: Any, window: Any, h: Any, sigma: Any,
            depth: Any, device: str, dtype: Any, memory_budget: Any, normalize: Any = None,
            iterations: Any = 1, channel_axis: Any = "auto",
            window_shape: Any = "box") -> tuple[Backend, Any, FilterOptions]:
    """Validate the arguments and return (backend, (H, W, C) image on it, options).

    The shared front half of the public functions, also used by the command
    line and the benchmarks to build operators with the same defaults; the
    three steps, each usable alone: :func:`resolve_options` (the arguments,
    from the image's shape only), :func:`place` (the device and dtype) and
    :func:`resolve_noise` (sigma and NLM's h, from the pixels).  Raises
    ValueError naming the parameter for any invalid argument.
    """
    _check_device(device)
    work_dtype = _check_dtype(dtype)
    host = _as_real_array(image, channel_axis)
    options = resolve_options(host.shape, kernel=kernel, patch=patch, window=window, h=h, sigma=sigma,
                              depth=depth, memory_budget=memory_budget, normalize=normalize,
                              iterations=iterations, window_shape=window_shape)
    backend, array = place(host, device, work_dtype)
    return backend, array, resolve_noise(backend, array, options, iterations)


def place(image: Any, device: str, dtype: Any) -> tuple[Backend, Any]:
    """(backend, ``image`` as an (H, W, C) or (Z, H, W, C) array of ``dtype`` on it) for ``device``;
    ``image`` is a validated real array (H, W), (H, W, C) or (Z, H, W, C).  RuntimeError for
    ``device='gpu'`` without a GPU."""
    backend = get_backend(_check_device(device))
    array = backend.asarray(image, dtype=_check_dtype(dtype))
    return backend, array if array.ndim in (3, 4) else array.reshape(*array.shape, 1)


def resolve_noise(backend: Backend, array: Any, options: FilterOptions, iterations: Any = 1) -> FilterOptions:
    """``options`` with sigma estimated from ``array`` (H, W, C on ``backend``) where it is needed and
    not given (always for a kernel with a bandwidth; for the others with ``iterations='auto'``), and
    the bandwidth ``h`` from it (``h_per_sigma * sigma``, or 1e-3 of the value range for a noise-free
    image)."""
    height, width = array.shape[-3:-1]  # of one slice, for a volume
    sigma = options.sigma
    bandwidth = kernel_class(options.kernel).h_per_sigma
    if sigma is None and (bandwidth is not None or iterations == "auto"):
        if min(height, width) < 4:
            raise ValueError(f"sigma cannot be estimated from a {height}x{width} image (4x4 at least); "
                             "pass sigma")
        sigma = estimate_sigma(backend.xp, array)
    h = options.h
    if bandwidth is not None and h is None:
        h = bandwidth * sigma
        if h <= 0:
            spread = float(array.max() - array.min())
            h = 1e-3 * spread if spread > 0 else 1.0
    return replace(options, h=None if h is None else float(h), sigma=None if sigma is None else float(sigma))


def _check_device(device: Any) -> str:
    if not isinstance(device, str) or device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(map(repr, DEVICES))}; got {device!r}")
    return device


def _check_dtype(dtype: Any) -> numpy.dtype:
    try:
        work_dtype = None if dtype is None else numpy.dtype(dtype)  # numpy.dtype(None) is float64
    except TypeError:
        work_dtype = None
    if work_dtype is None or work_dtype not in _DTYPES:
        raise ValueError(f"dtype must be numpy.float32 or numpy.float64; got {dtype!r}")
    return work_dtype


def resolve_options(shape: tuple[int, ...], *, kernel: str, patch: Any, window: Any, h: Any, sigma: Any,
                    depth: Any, memory_budget: Any, normalize: Any = None,
                    iterations: Any = 1, window_shape: Any = "box") -> FilterOptions:
    """Validate the filter arguments for an image of ``shape`` and fill in the defaults.

    Everything that does not need the pixels: the command line checks a file
    from its header with it before decoding.  ``sigma`` and ``h`` stay None
    when not given (:func:`prepare` estimates them).  Raises ValueError
    naming the parameter.
    """
    kind = kernel_class(kernel)
    _check_count("depth", depth, minimum=1)
    _check_count("memory_budget", memory_budget, minimum=1)
    if depth != 1 and not kind.has_depth:
        raise ValueError(f"depth applies only to kernels with layers ('ntk'); got depth={depth} with "
                         f"kernel={kernel!r}")
    if h is not None:
        _check_real("h", h, "> 0", lambda value: value > 0)
    if sigma is not None:
        _check_real("sigma", sigma, ">= 0", lambda value: value >= 0)
    if iterations != "auto":
        _check_count("iterations", iterations, minimum=1, allowed="an integer >= 1 or 'auto'")
    if kind.h_per_sigma is None and h is not None:
        raise ValueError(f"h applies only to kernels with a bandwidth ('nlm'); kernel={kernel!r} has none "
                         f"(got h={h!r})")
    if kind.h_per_sigma is None and sigma is not None and iterations != "auto":
        raise ValueError(f"sigma applies only to kernels with a bandwidth ('nlm') or iterations='auto'; got "
                         f"sigma={sigma!r} with kernel={kernel!r} and iterations={iterations!r}")
    if normalize is not None:
        if len(kind.normalizations) < 2:
            raise ValueError(f"normalize applies only to kernels that offer a choice ('nlm'); "
                             f"kernel={kernel!r} is always normalised by {kind.normalizations[0]!r} "
                             f"('arccos' and 'ntk' divide K by its largest eigenvalue); got "
                             f"normalize={normalize!r}")
        if normalize not in kind.normalizations:
            raise ValueError(f"normalize must be one of {', '.join(map(repr, kind.normalizations))}; "
                             f"got {normalize!r}")
    spatial = spatial_shape(shape)
    if isinstance(window, str):
        if window != "auto":
            raise ValueError(f"window must be an odd integer >= 1, None (global) or 'auto'; got {window!r}")
        window = kind.window
    if patch is None:
        patch = kind.patch
        if patch > min(spatial):
            raise ValueError(
                f"the {'x'.join(map(str, spatial))} image is smaller than the default patch {patch} of "
                f"kernel {kernel!r}; set patch to an odd integer up to {min(spatial)}"
                + (" or a box, e.g. (1, 5, 5)" if len(spatial) == 3 else ""))
    patch = _box("patch", patch, spatial)
    if window is not None:
        window = _box("window", window, spatial, allowed="an odd integer >= 1, None (global) or 'auto'")
    if window_shape not in WINDOW_SHAPES:
        raise ValueError(f"window_shape must be one of {', '.join(map(repr, WINDOW_SHAPES))}; got "
                         f"{window_shape!r}")
    if window_shape != "box" and window is None:
        raise ValueError(f"window_shape={window_shape!r} shapes a search window; the global mode "
                         "(window=None) has none")
    return FilterOptions(kernel=kernel, patch=patch, window=window,
                         h=None if h is None else float(h), sigma=None if sigma is None else float(sigma),
                         depth=int(depth), memory_budget=int(memory_budget),
                         normalize=normalize or kind.normalizations[0], window_shape=window_shape)


def _box(name: str, value: Any, spatial: tuple[int, ...], allowed: str = "") -> int | tuple[int, ...]:
    """A validated patch or window: an odd int for a 2-D image (at most min(H, W) for the patch), one
    odd side per axis (a tuple) for a volume (an int is used on every axis)."""
    if len(spatial) == 3 and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value),) * 3
    if isinstance(value, tuple | list) and len(spatial) == 3:
        if len(value) != 3:
            raise ValueError(f"{name} of a volume must be an odd integer or three, (Z, H, W); got {value!r}")
        for side in value:
            _check_count(name, side, minimum=1, odd=True, allowed=f"odd sides >= 1 (got {tuple(value)!r})")
        if name == "patch" and any(side > extent for side, extent in zip(value, spatial, strict=True)):
            raise ValueError(f"patch sides must be at most the volume's {'x'.join(map(str, spatial))}; got "
                             f"{tuple(value)}")
        return tuple(int(side) for side in value)
    if isinstance(value, tuple | list) and len(set(value)) == 1 and len(value) == 2:
        value = value[0]  # a square given as (p, p)
    _check_count(name, value, minimum=1, odd=True, allowed=allowed or "an odd integer >= 1 (one side: 2-D "
                 "patches and windows are square)")
    if name == "patch" and value > min(spatial):
        raise ValueError(f"patch must be an odd integer from 1 to min(H, W) = {min(spatial)} for this "
                         f"{'x'.join(map(str, spatial))} image; got {value}")
    return int(value)


def _as_real_array(image: Any, channel_axis: Any = "auto") -> numpy.ndarray:
    """Return ``image`` as a finite real (H, W, C) NumPy array, or (Z, H, W, C) for a volume (its
    channels, on ``channel_axis``, moved last; a view where possible), or raise ValueError."""
    array = host_array(image)
    if array.dtype == object or not (numpy.issubdtype(array.dtype, numpy.number) or array.dtype == bool):
        raise ValueError(f"image must be a real numeric array; got dtype {array.dtype}")
    if numpy.iscomplexobj(array):
        raise ValueError(f"image must be real; got complex dtype {array.dtype}")
    axis = channel_position(array.shape, channel_axis)
    if array.size == 0:
        raise ValueError(f"image is empty (shape {array.shape})")
    if array.dtype.kind == "f" and not numpy.isfinite(array).all():
        bad = int(numpy.count_nonzero(~numpy.isfinite(array)))
        raise ValueError(f"image has {bad} NaN or Inf pixel values; all values must be finite")
    return array[..., None] if axis is None else numpy.moveaxis(array, axis, -1)


def channel_position(shape: tuple[int, ...], channel_axis: Any) -> int | None:
    """The axis (0, 1 or 2) of an image of ``shape`` that holds its channels, or None for a gray image;
    ValueError for a shape or ``channel_axis`` nlfilt cannot take (see ``channel_axis`` in
    :func:`denoise`)."""
    if channel_axis is not None and channel_axis != "auto" and (
            not isinstance(channel_axis, numbers.Integral) or isinstance(channel_axis, bool)):
        raise ValueError(f"channel_axis must be an int, None or 'auto'; got {channel_axis!r}")
    ndim = len(shape)
    if ndim not in (2, 3, 4):
        raise ValueError(f"image must have 2 dimensions (H, W), 3 ((H, W, C) or a volume (Z, H, W) with "
                         f"channel_axis=None) or 4 (a volume with channels); got shape {tuple(shape)}")
    if ndim == 2:
        if channel_axis is None or channel_axis == "auto":
            return None
        raise ValueError(f"channel_axis={channel_axis} needs a 3-D image with channels on that axis; the "
                         f"image has shape {tuple(shape)} (for a gray image leave it at 'auto' or None)")
    if ndim == 4 and not isinstance(channel_axis, numbers.Integral):
        raise ValueError(f"a 4-D image of shape {tuple(shape)} is a volume with channels: pass the channel "
                         f"axis (channel_axis=-1 for (Z, H, W, C)); got channel_axis={channel_axis!r}")
    if channel_axis is None:  # a volume (Z, H, W)
        return None
    if channel_axis == "auto":
        if shape[2] > MAX_AUTO_CHANNELS:
            raise ValueError(
                f"image has shape {tuple(shape)}: its last axis of {shape[2]} is too long to be taken as "
                f"channels by default (at most {MAX_AUTO_CHANNELS}); for a volume (Z, H, W) pass "
                f"channel_axis=None, for {shape[2]} channels (a hyperspectral image) channel_axis=-1")
        return 2
    if not -ndim <= channel_axis < ndim:
        raise ValueError(f"channel_axis must be {-ndim} to {ndim - 1} for a {ndim}-D image; got "
                         f"{channel_axis}")
    return channel_axis % ndim


def in_layout(result: Any, image: Any, channel_axis: Any) -> Any:
    """``result``, an (H, W, C) array computed from ``image``, in ``image``'s layout: its shape, with the
    channels back on their axis (NumPy or CuPy)."""
    axis = channel_position(numpy.shape(image), channel_axis)
    if axis is None:
        return result.reshape(numpy.shape(image))
    return numpy.moveaxis(result, -1, axis)


def _check_count(name: str, value: Any, *, minimum: int, odd: bool = False, allowed: str = "") -> None:
    """Raise ValueError unless ``value`` is an integer >= minimum (and odd if asked)."""
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not is_int or value < minimum or (odd and value % 2 == 0):
        if not allowed:
            allowed = f"an {'odd ' if odd else ''}integer >= {minimum}"
        raise ValueError(f"{name} must be {allowed}; got {value!r}")


def _check_progress(progress: Any) -> None:
    """Raise ValueError unless ``progress`` is None or callable."""
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be a callable or None; got {progress!r}")


def _check_real(name: str, value: Any, rule: str, accept: Callable[[float], bool]) -> None:
    """Raise ValueError unless ``value`` is a finite real number satisfying ``rule``."""
    is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not is_real or not math.isfinite(value) or not accept(float(value)):
        raise ValueError(f"{name} must be a finite number {rule}; got {value!r}")
