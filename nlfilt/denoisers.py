"""The public denoisers: :func:`denoise` (one non-local filter with twicing) and
:func:`denoise_collaborative` (the collaborative filter of grouped patches).

Each validates every argument (a ValueError names the parameter and what is
allowed), applies one dtype policy, moves channels last, and hands over to
:func:`nlfilt.filters.build_filter` or :func:`nlfilt.collaborative.collaborative_filter`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy

from nlfilt.accelerate import accelerate
from nlfilt.arguments import (
    ProgressCallback,
    as_real_array,
    check_device,
    check_dtype,
    check_progress,
    check_real,
    in_layout,
)
from nlfilt.backend import Backend
from nlfilt.clipping import declip_as
from nlfilt.collaborative import PATCH, STEP, ArrayGroups, check_shape, collaborative_filter
from nlfilt.cost import expected_applications
from nlfilt.docs import OPTIONS, document
from nlfilt.filters import FilterOptions, ProgressMeter, build_filter, twicing
from nlfilt.noise import estimate_sigma
from nlfilt.resolve import DEFAULT_MEMORY_BUDGET, GUIDES, guided_options, place, prepare, resolve_stopping
from nlfilt.series import collaborative_series
from nlfilt.stopping import EPSILON_PER_SIGMA, StopReport, Twin, auto_twicing, rademacher, stop_rule
from nlfilt.volume import check_volume, collaborative_volume, cube_shape


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




@document(*OPTIONS)
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
    in benchmarks/results/quality.md.

    The defaults come from PSNR measurements on Set12 with noise of standard
    deviation 25 (benchmarks/tune_defaults.py, benchmarks/results/defaults.md):
    for 'nlm' the one-shot filter's best patch, window and ``h``; for 'arccos'
    and 'ntk' the patch global twicing does best with.

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
    check_progress(progress)
    flat = array.reshape(-1, array.shape[-1])
    twin_data = None
    if iterations == "auto" and stop_rule(stop).needs_twin and options.sigma > 0:
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
                          stack: str = "series", spacing: tuple[float, float, float] | None = None,
                          declip: bool = True, low_snr: bool | None = None, device: str = "auto",
                          dtype: Any = numpy.float32, progress: ProgressCallback | None = None,
                          return_info: bool = False) -> Any:
    """Denoise an image, or a stack of frames, with the collaborative filter of grouped patches, nlfilt's
    highest-quality mode.

    Two stages over groups of similar 8 x 8 patches (BM3D's scheme, see
    :mod:`nlfilt.collaborative`): hard thresholding of each group's 3-D
    transform (biorthogonal wavelet on the patches, Haar across the group)
    gives a pilot; groups matched on the pilot are then estimated twice, by
    the empirical Wiener gains ``P^2 / (P^2 + sigma^2)`` of the pilot's
    coefficients and by NL-Bayes's empirical-Bayes estimate with the
    pilot's patch covariance, every patch added back weighted, and the two
    estimates averaged (at low signal-to-noise, the pilot refined by the
    image's estimate one scale down, and the latter in every colour
    channel).  Colour images are
    filtered in an opponent colour space with groups matched on luminance.
    Not a fixed linear filter ``W`` of the image: the pilot makes it
    adaptive, so there is no ``filter_matrix`` or twicing for it.

    A stack of frames (a time series, a video's frames, the slices of a
    volume), (T, H, W) with ``channel_axis=None`` or (T, H, W, C) with the
    channel axis given, is filtered as a series (``stack='series'``): each
    group is drawn from its reference's frame and the 4 frames before and
    after it, following motion (V-BM3D's scheme, :mod:`nlfilt.series`); a
    stack of one frame is filtered as an image.  With ``stack='volume'`` it
    is one volume (Z, H, W[, C]) whose patches are 4 x 4 x 4 cubes (BM4D's
    scheme, :mod:`nlfilt.volume`), shortened along Z for slices further
    apart than pixels (``spacing``).

    Parameters
    ----------
    image : array_like, shape (H, W), (H, W, C), (T, H, W) or (T, H, W, C)
        Gray or channels-last image of any real dtype, at least 8 x 8, or a
        stack of them (``channel_axis`` as in :func:`denoise`).
    sigma : float, optional
        Noise standard deviation (>= 0) in the image's units; 0 returns the
        image.  Default: estimated (:func:`nlfilt.noise.estimate_sigma`).
    stack : {'series', 'volume'}
        How a stack is filtered: as frames in order, or as one volume of
        cubes.
    spacing : tuple of 3 floats, optional
        A volume's voxel spacing (Z, Y, X), in any one unit (``stack='volume'``
        only); None: isotropic voxels.
    declip : bool
        Undo the bias clipping leaves (:mod:`nlfilt.clipping`): where a
        channel's smallest or largest value holds at least 0.1 % of its
        pixels (noise clipped to the format's range, as in 8-bit photos), the
        filter's estimates near it, which are means of clipped values, are
        mapped back to the clean values with those means, within the
        channel's range (each frame of a series on its own).  Measured on
        8-bit photos with noise of deviation 50: +0.35 dB gray, +2.4 dB
        colour; at 15, nothing gray, +0.3 dB colour.  An image without
        clipped pixels is left as the filter gave it.
    low_snr : bool, optional
        Whether a 2-D image's filter takes its low signal-to-noise form
        (a pilot refined by the image's estimate one scale down, and the
        empirical-Bayes estimate in every colour channel; see
        :data:`nlfilt.collaborative.LOW_SNR`).  None:
        decided on the image's pilot (sigma at least 0.18 times its
        contrast); :func:`nlfilt.dask.denoise_collaborative` passes one
        decision to all its chunks.
    device : {'auto', 'cpu', 'gpu'}
        Where to compute (as in :func:`denoise`).
    dtype : {numpy.float32, numpy.float64}
        Precision of the computation and of the result.
    progress : callable, optional
        ``progress(done, total)`` after each of the four steps (matching and
        filtering, for each stage): ``total`` 4, or 4 per window of a long
        series.
    return_info : bool
        Also return a :class:`DenoiseInfo` (``sigma`` filled in, for a stack
        the median of its frames' estimates; one "iteration", no products
        with ``K``).

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
    >>> frames = 0.5 + 0.1 * numpy.random.default_rng(0).standard_normal((3, 32, 32))
    >>> nlfilt.denoise_collaborative(frames, channel_axis=None, device="cpu").shape
    (3, 32, 32)
    """
    check_device(device)
    work_dtype = check_dtype(dtype)
    check_progress(progress)
    host = as_real_array(image, channel_axis)
    if sigma is not None:
        check_real("sigma", sigma, ">= 0", lambda value: value >= 0)
    if stack not in ("series", "volume"):
        raise ValueError(f"stack must be 'series' or 'volume'; got {stack!r}")
    if not isinstance(declip, (bool, numpy.bool_)):
        raise ValueError(f"declip must be True or False; got {declip!r}")
    if low_snr is not None and not isinstance(low_snr, (bool, numpy.bool_)):
        raise ValueError(f"low_snr must be None, True or False; got {low_snr!r}")
    volume = stack == "volume" and host.ndim == 4
    if spacing is not None and not volume:
        raise ValueError("spacing is for a stack filtered as one volume (stack='volume')")
    cube = cube_shape(spacing, host.shape[0])[0] if volume else None
    if volume:
        check_volume(host.shape, cube)
    else:
        check_shape(host.shape[-3:])  # before the image goes to the device
    shape = host.shape
    if host.ndim == 4 and host.shape[0] == 1 and not volume:  # one frame: an image
        host = host[0]
    backend, array = place(host, device, work_dtype)
    if sigma is None:
        sigma = estimate_sigma(backend.xp, array)  # a stack: the median of its frames' estimates
    if volume:
        estimate = collaborative_volume(backend, array, float(sigma), spacing=spacing, progress=progress)
    elif array.ndim == 4:
        estimate = collaborative_series(backend, array, float(sigma), progress=progress)
    else:
        groups = accelerate(backend, ArrayGroups(backend, array.shape, patch=PATCH, step=STEP))
        estimate = collaborative_filter(groups, array, float(sigma), low_snr=low_snr, progress=progress)
    if declip:
        estimate = declip_as(backend.xp, estimate, array, float(sigma), frames=array.ndim == 4 and not volume)
    estimate = backend.like_input(in_layout(estimate.reshape(shape), image, channel_axis), image)
    if not return_info:
        return estimate
    return estimate, DenoiseInfo(iterations=1, pilot_iterations=None, sigma=float(sigma), h=None, stop=None,
                                 risk=None, residual=None, applications=0)


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
