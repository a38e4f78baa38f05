"""The numpydoc entries of the options the public functions share: one text per option, filled into
each docstring's ``{options}`` line by :func:`document`."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

#: The numpydoc entries of the options the public functions share (one text, filled into each
#: docstring's ``{options}`` line by :func:`document`).
OPTION_DOCS = {
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
OPTIONS = tuple(OPTION_DOCS)


#: twicing_trajectory's own window entry (its default is the global mode).
TRAJECTORY_WINDOW = """\
window : int, None or 'auto'
    Odd side of the square search window, or None (default) for all pixel
    pairs (global mode); 'auto' is 11 for 'nlm' and None for 'arccos' and
    'ntk' (see :func:`denoise`).\
"""


def document(*names: str, **replaced: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Fill the ``{options}`` line of a public function's docstring with the shared entries ``names``
    (in that order; ``replaced`` gives a function its own text for one of them)."""
    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        texts = [replaced.get(name, OPTION_DOCS[name]) for name in names]
        block = "\n".join(textwrap.indent(text, "    ") for text in texts)
        function.__doc__ = function.__doc__.replace("    {options}", block)
        return function
    return decorate
