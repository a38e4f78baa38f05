"""The filter's options resolved from the arguments and the image, in three steps usable alone.

:func:`resolve_options` (the arguments, from the image's shape only: the
command line checks a file from its header with it), :func:`place` (the device
and dtype) and :func:`resolve_noise` (sigma and NLM's h, from the pixels);
:func:`prepare` runs the three.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from nlfilt.arguments import as_real_array, check_box, check_count, check_device, check_dtype, check_real
from nlfilt.backend import Backend, get_backend
from nlfilt.filters import FilterOptions
from nlfilt.kernels import kernel_class
from nlfilt.noise import estimate_sigma
from nlfilt.operators import WINDOW_SHAPES
from nlfilt.patches import spatial_shape
from nlfilt.stopping import DEFAULT_MAX_ITERATIONS, stop_rule, stop_rule_names

#: Default bytes an operator may hold at once (patch factors, tiles, cached weights).
DEFAULT_MEMORY_BUDGET = 256 * 2**20


#: Guided NLM (``guide='pilot'``): bandwidth per sigma for the distances between pilot patches,
#: which hold little noise (so no ``2 sigma^2`` is subtracted from them), and their patch side (little
#: noise needs little averaging).  Best of h 0.35-0.7 sigma x patch 3/5/7 x window 11/21 on four
#: Set12 images at sigma 25.
GUIDE_H_PER_SIGMA = 0.7
GUIDE_PATCH = 3

#: The normalisations of NLM, and the guides of ``denoise``.
NORMALIZE_CHOICES = ("rows", "sinkhorn")
GUIDES = ("pilot",)


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
    check_device(device)
    work_dtype = check_dtype(dtype)
    host = as_real_array(image, channel_axis)
    options = resolve_options(host.shape, kernel=kernel, patch=patch, window=window, h=h, sigma=sigma,
                              depth=depth, memory_budget=memory_budget, normalize=normalize,
                              iterations=iterations, window_shape=window_shape)
    backend, array = place(host, device, work_dtype)
    return backend, array, resolve_noise(backend, array, options, iterations)


def place(image: Any, device: str, dtype: Any) -> tuple[Backend, Any]:
    """(backend, ``image`` as an (H, W, C) or (Z, H, W, C) array of ``dtype`` on it) for ``device``;
    ``image`` is a validated real array (H, W), (H, W, C) or (Z, H, W, C).  RuntimeError for
    ``device='gpu'`` without a GPU."""
    backend = get_backend(check_device(device))
    array = backend.asarray(image, dtype=check_dtype(dtype))
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
    check_count("depth", depth, minimum=1)
    check_count("memory_budget", memory_budget, minimum=1)
    if depth != 1 and not kind.has_depth:
        raise ValueError(f"depth applies only to kernels with layers ('ntk'); got depth={depth} with "
                         f"kernel={kernel!r}")
    if h is not None:
        check_real("h", h, "> 0", lambda value: value > 0)
    if sigma is not None:
        check_real("sigma", sigma, ">= 0", lambda value: value >= 0)
    if iterations != "auto":
        check_count("iterations", iterations, minimum=1, allowed="an integer >= 1 or 'auto'")
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
    patch = check_box("patch", patch, spatial)
    if window is not None:
        window = check_box("window", window, spatial, allowed="an odd integer >= 1, None (global) or 'auto'")
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


def resolve_stopping(iterations: Any, stop: Any, max_iterations: Any) -> tuple[str | None, int | None]:
    """Validate the stopping arguments of :func:`denoise`; return (stop, max_iterations) with defaults.

    Raises ValueError naming the parameter.  Both are None unless ``iterations='auto'``.
    """
    if iterations == "auto":
        stop = stop_rule_names()[0] if stop is None else stop
        stop_rule(stop)  # ValueError naming the registered rules
        max_iterations = DEFAULT_MAX_ITERATIONS if max_iterations is None else max_iterations
        check_count("max_iterations", max_iterations, minimum=1)
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
