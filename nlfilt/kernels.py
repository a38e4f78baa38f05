"""Patch affinities: non-local means, arc-cosine and the neural tangent kernel.

Every kernel writes its affinity in the factored form

    K_ij = s_i * s_j * f(t_ij)

where ``t_ij`` is a pair statistic computed in bulk by the operators (a GEMM
block in the global mode, a box-filtered product image per offset in the
windowed mode), ``f`` is an elementwise profile applied in place and ``s`` is
an optional per-pixel scale (``None`` for NLM).  The operators never need to
know which kernel they run.

Each affinity is one class derived from :class:`Kernel`, which carries
everything about it (name, defaults, normalisation, which arguments it takes,
the pieces above, its CUDA profile and its cost constants), registered under
its name with :func:`register_kernel`.  The rest of nlfilt looks kernels up
with :func:`kernel_class`; adding one touches no other module.
"""

from __future__ import annotations

import math
import re
from functools import cache
from typing import Any

import numpy

from nlfilt.patches import sides


class Kernel:
    """What every affinity declares; derive from it and decorate with :func:`register_kernel`.

    Class attributes (the defaults are those of the tangent kernels):

    * ``name``: the name users pass as ``kernel=``.
    * ``patch``, ``window``: default patch side and search window (None: global).
    * ``h_per_sigma``: default bandwidth per noise level, for kernels with a
      bandwidth ``h`` (which then also need the noise level ``sigma``); None
      for kernels without one (``h`` and ``sigma`` are then refused, except
      sigma for automatic stopping).
    * ``normalizations``: how ``K`` may become ``W`` ('rows', 'sinkhorn',
      'eigenvalue'; see :class:`nlfilt.filters.Filter`); the first is the
      default, and the user may choose only when there are several.
    * ``has_depth``: whether ``depth`` (layers) applies.
    * ``uses_difference``: the windowed statistic is a box sum of squared
      differences (else of products).
    * ``scratch_blocks``: scratch arrays :meth:`profile` needs.
    * ``cuda_profile``: the body of the profile as a CUDA device function of
      ``NLFILT_REAL t``, ``int depth`` (the kernel's :attr:`layers`) and
      ``NLFILT_REAL floor_value`` (:func:`weight_floor`), returning ``f(t)``;
      :mod:`nlfilt.cuda` compiles it into an in-place profile kernel and a
      fused global operator for this kernel (no other file changes).  None: no
      CUDA code, and on a GPU :meth:`profile` runs as array code on CuPy, with
      its scratch.
    * ``fused_windowed``: whether its windowed weights are NLM's, which the
      fused windowed operators of :mod:`nlfilt.cuda.operators` (GPU) have
      built in.
    * ``jit_profile``: the windowed weight in compiled form for the CPU, a
      plain Python function that numba compiles into :mod:`nlfilt.jit`'s
      windowed operator (as ``cuda_profile`` into the CUDA ones), with the
      signature of :func:`nlm_jit_profile`; it may call the functions of
      :data:`JIT_HELPERS`, and reads :meth:`jit_parameters`.  None: no
      compiled operator, the array code runs.
    * ``window_denoises``: whether its windowed filter is fit to denoise with
      (the windowed tangent filters are indefinite; the command line then never
      suggests a window).
    * cost constants (nanoseconds on the development machine, see
      :func:`nlfilt.cost.estimate_cpu_seconds`): ``global_ns_per_pair``,
      ``global_ns_per_layer``, ``windowed_ns_per_weight``, ``windowed_ns_per_layer``,
      and for the compiled operator ``compiled_ns_per_weight``, ``compiled_ns_per_layer``.

    Methods: :meth:`create` (an instance for validated arguments),
    ``features``, ``global_factors``, ``windowed_statistic``, ``profile`` and
    :meth:`jit_parameters`, as the built-in kernels below document them.
    """

    name = ""
    patch = 3
    window: int | None = None
    h_per_sigma: float | None = None
    normalizations: tuple[str, ...] = ("eigenvalue",)
    has_depth = False
    uses_difference = False
    scratch_blocks = 0
    cuda_profile: str | None = None
    jit_profile: Any = None
    fused_windowed = False
    window_denoises = False
    global_ns_per_pair = 3.0
    global_ns_per_layer = 0.0
    windowed_ns_per_weight = 3.0
    windowed_ns_per_layer = 0.0
    compiled_ns_per_weight = 0.0
    compiled_ns_per_layer = 0.0

    @classmethod
    def create(cls, *, h: float | None, sigma: float | None, depth: int) -> Kernel:
        """The kernel for validated arguments (those it does not take are ignored)."""
        return cls()

    @property
    def layers(self) -> int:
        """Layers of the profile (the cost grows with them; ``depth`` in the CUDA profile)."""
        return 1

    def jit_parameters(self, dtype: Any) -> numpy.ndarray:
        """The numbers :attr:`jit_profile` reads (``parameters``), as a ``dtype`` array."""
        return numpy.zeros(0, dtype)

    @classmethod
    def cuda_name(cls) -> str:
        """The kernel's name as a C identifier (in the names of its CUDA kernels)."""
        return re.sub(r"\W", "_", cls.name)



_REGISTRY: dict[str, type[Kernel]] = {}


def register_kernel(cls: type[Kernel]) -> type[Kernel]:
    """Register ``cls`` under ``cls.name`` (a class decorator); a name may be registered once."""
    if not cls.name or not isinstance(cls.name, str):
        raise ValueError(f"a kernel class needs a name; {cls.__name__} has {cls.name!r}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        taken = _REGISTRY[cls.name].__name__
        raise ValueError(f"a kernel named {cls.name!r} is already registered ({taken})")
    _REGISTRY[cls.name] = cls
    return cls


def unregister_kernel(name: str) -> None:
    """Remove a registered kernel (for tests and plug-ins)."""
    _REGISTRY.pop(name, None)


def kernel_names() -> tuple[str, ...]:
    """The names of the registered kernels."""
    return tuple(_REGISTRY)


def kernel_class(name: Any) -> type[Kernel]:
    """The class registered as ``name``; ValueError naming the registered ones otherwise."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"kernel must be one of {', '.join(map(repr, kernel_names()))}; got {name!r}")
    return _REGISTRY[name]


# The compiled profiles (numba, see Kernel.jit_profile).  Plain Python, compiled by nlfilt.jit; indices are
# cast to unsigned so that numba drops its negative-index checks and the compiler vectorises the loops.


def fast_exp(t: Any) -> Any:
    """``exp(t)``; in compiled code a branch-free polynomial for float32 ``t``
    (:func:`nlfilt.jit.exp_float32`)."""
    return math.exp(t)


def nlm_jit_profile(t: Any, count: int, inverse: Any, here: int, there: int, scratch: Any, layers: int,
                    parameters: Any) -> None:
    """NLM's weights in place: ``t[:count]`` holds the pairs' box-summed squared differences ``D``; they
    become ``exp(clip(offset - D, floor, 0))`` with ``parameters = [offset, floor]``.

    The signature of every compiled profile: ``inverse[here + i]`` and
    ``inverse[there + i]`` are the per-pixel inverse norms of the pair's two
    pixels (for the cosine kernels), ``scratch`` is (5, len(t)), ``layers``
    the kernel's :attr:`Kernel.layers`.
    """
    offset, floor = parameters[0], parameters[1]
    zero = offset - offset
    for i in range(count):
        t[i] = fast_exp(min(max(offset - t[i], floor), zero))


def jit_cosines(t: Any, count: int, inverse: Any, here: int, there: int) -> None:
    """Box-summed products ``<P_i, P_j>`` to cosines, clipped to [-1, 1], in place."""
    one = inverse[0] - inverse[0] + 1
    unsigned = numpy.uint64
    for i in range(count):
        cosine = t[i] * inverse[unsigned(here + i)] * inverse[unsigned(there + i)]
        t[i] = min(max(cosine, -one), one)


def jit_horner(x: Any, count: int, parameters: Any, first: int, degree: int, out: Any) -> None:
    """``out <- sum_k parameters[first + k] x^k``, k = 0 .. degree, by Horner's rule (as :func:`_horner`)."""
    top = parameters[first + degree]
    for i in range(count):
        out[i] = x[i] * top
    for k in range(degree - 1, 0, -1):
        coefficient = parameters[first + k]
        for i in range(count):
            out[i] = (out[i] + coefficient) * x[i]
    constant = parameters[first]
    for i in range(count):
        out[i] += constant


def jit_relu_layer(c: Any, count: int, scratch: Any, parameters: Any, with_theta: bool) -> None:
    """:func:`_relu_layer` on ``c[:count]`` in compiled form; ``parameters`` holds the monomial
    coefficients of ``p`` then of ``g`` (:func:`_polynomial`), ``scratch[4]`` is ``theta``."""
    x, root, acc, theta = scratch[0], scratch[1], scratch[2], scratch[4]
    one = parameters[0] - parameters[0] + 1
    half_pi = one * (math.pi / 2)
    inverse_pi = one * (1 / math.pi)
    degree = parameters.size // 2 - 1
    for i in range(count):
        u = abs(c[i])
        root[i] = math.sqrt(one - u)
        x[i] = u * 2 - one
    if with_theta:
        jit_horner(x, count, parameters, 0, degree, acc)
        for i in range(count):
            angle = half_pi + math.copysign(half_pi - acc[i] * root[i], c[i])  # pi - arccos c
            theta[i] = theta[i] * angle * inverse_pi
            u = (x[i] + one) * (one / 2)
            acc[i] = math.sqrt(u + one) - acc[i] * u  # g = sqrt(1 + u) - u p
    else:
        jit_horner(x, count, parameters, degree + 1, degree, acc)
    for i in range(count):
        u = (x[i] + one) * (one / 2)
        c[i] = ((c[i] + u) * half_pi + acc[i] * root[i]) * inverse_pi
    if with_theta:
        for i in range(count):
            theta[i] += c[i]


def arccos_jit_profile(t: Any, count: int, inverse: Any, here: int, there: int, scratch: Any, layers: int,
                       parameters: Any) -> None:
    """The arc-cosine profile of box-summed products, in place (see :func:`nlm_jit_profile`)."""
    jit_cosines(t, count, inverse, here, there)
    jit_relu_layer(t, count, scratch, parameters, False)


def ntk_jit_profile(t: Any, count: int, inverse: Any, here: int, there: int, scratch: Any, layers: int,
                    parameters: Any) -> None:
    """``theta^layers`` of box-summed products, in place (see :func:`nlm_jit_profile`)."""
    jit_cosines(t, count, inverse, here, there)
    theta = scratch[4]
    for i in range(count):
        theta[i] = t[i]
    for _ in range(layers):
        jit_relu_layer(t, count, scratch, parameters, True)
    for i in range(count):
        t[i] = theta[i]


#: The functions compiled profiles may call (nlfilt.jit makes them callable from compiled code).
JIT_HELPERS = (jit_cosines, jit_horner, jit_relu_layer)


@register_kernel
class NLMKernel(Kernel):
    """Non-local means: ``K_ij = exp(-max(|P_i - P_j|^2 / d - 2 sigma^2, 0) / h^2)``.

    (Weights below the dtype's smallest normal number are raised to it: see
    :meth:`profile`.)

    The image is centred (distances do not change, float32 round-off in the
    expanded GEMM form ``|a|^2 + |b|^2 - 2<a, b>`` does) and divided by
    ``h sqrt(d)``, so that with ``a = P_i / (h sqrt d)``::

        t_ij = 2 sigma^2 / h^2 - |a_i - a_j|^2,    f(t) = exp(min(t, 0)).
    """

    name = "nlm"
    patch = 5
    window = 11
    h_per_sigma = 0.8
    normalizations = ("rows", "sinkhorn")
    uses_difference = True  # windowed statistic: box sum of squared differences
    scratch_blocks = 0  # scratch buffers, each the size of the array profiled
    cuda_profile = """
        t = t < floor_value ? floor_value : t;  // see profile()
        t = t > (NLFILT_REAL)0 ? (NLFILT_REAL)0 : t;
        return exp(t);
    """
    jit_profile = staticmethod(nlm_jit_profile)
    fused_windowed = True
    window_denoises = True
    global_ns_per_pair = 1.2
    windowed_ns_per_weight = 1.4
    compiled_ns_per_weight = 0.17

    def __init__(self, h: float, sigma: float) -> None:
        self.h = h
        self.sigma = sigma

    @classmethod
    def create(cls, *, h: float | None, sigma: float | None, depth: int) -> NLMKernel:
        return cls(h=h, sigma=sigma)

    def features(self, xp: Any, image: Any, patch_size: int | tuple[int, ...]) -> Any:
        """Return the image the pair statistics are computed on ((H, W, C) or (Z, H, W, C); the patch a
        side or one side per spatial axis)."""
        dims = math.prod(sides(patch_size, image.ndim - 1)) * image.shape[-1]
        centre = xp.mean(image, axis=tuple(range(image.ndim - 1)), keepdims=True)
        return (image - centre) * image.dtype.type(1.0 / (self.h * math.sqrt(dims)))

    @property
    def offset(self) -> float:
        """The constant ``2 sigma^2 / h^2`` that the squared distance is compared with."""
        return 2.0 * self.sigma**2 / self.h**2

    def global_factors(self, xp: Any, patches: Any) -> tuple[Any, Any, Any]:
        """Return (left, right, scale) with ``left[i] @ right[:, j] == t_ij``.

        ``left = [2 a, -s, -1]`` and ``right = [a, 1, s]^T`` with
        ``s_i = |a_i|^2 - sigma^2 / h^2``, so that the GEMM alone gives
        ``2 <a_i, a_j> - s_i - s_j = 2 sigma^2 / h^2 - |a_i - a_j|^2``.
        """
        size, dims = patches.shape
        half_shift = xp.einsum("ij,ij->i", patches, patches)
        half_shift -= patches.dtype.type(self.offset / 2)
        right = xp.empty((dims + 2, size), dtype=patches.dtype)
        right[:dims] = patches.T
        right[dims] = 1
        right[dims + 1] = half_shift
        left = xp.empty((size, dims + 2), dtype=patches.dtype)
        xp.multiply(patches, patches.dtype.type(2), out=left[:, :dims])
        left[:, dims] = -half_shift
        left[:, dims + 1] = -1
        return left, right, None


    def jit_parameters(self, dtype: Any) -> numpy.ndarray:
        """``[offset, floor]`` for :func:`nlm_jit_profile`."""
        return numpy.array([self.offset, weight_floor(dtype)], dtype)

    def windowed_statistic(self, xp: Any, box: Any, inv_norm_i: Any, inv_norm_j: Any,
                           offset: tuple[int, int]) -> Any:
        """Turn the box-summed squared difference into ``t`` (in place).

        ``offset`` (rows, columns) from pixel i to pixel j is what a spatially
        weighted kernel would use; NLM's weights do not depend on it.
        """
        xp.subtract(box.dtype.type(self.offset), box, out=box)
        return box

    def profile(self, xp: Any, t: Any, scratch: list[Any]) -> Any:
        """Apply ``f(t) = exp(min(t, 0))`` in place.

        ``t`` is first clipped below at ``log`` of the smallest normal number
        of its dtype, so that far-apart patches get that tiny weight (at most
        1e-38 of the diagonal weight 1) rather than subnormal numbers, which
        are many times slower to compute with.
        """
        floor = t.dtype.type(weight_floor(t.dtype))
        xp.clip(t, floor, t.dtype.type(0), out=t)
        return xp.exp(t, out=t)


class CosineKernel(Kernel):
    """Kernels of the angle between patches, scaled by their norms.

    ``K_ij = |P_i| |P_j| f(cos phi_ij)``.  A zero patch has norm 0, so its row
    and column of ``K`` are 0.
    """

    uses_difference = False  # windowed statistic: box sum of products

    def features(self, xp: Any, image: Any, patch_size: int | tuple[int, ...]) -> Any:
        """Return the image the pair statistics are computed on (unchanged)."""
        return image

    def global_factors(self, xp: Any, patches: Any) -> tuple[Any, Any, Any]:
        """Return (left, right, scale) with ``left[i] @ right[:, j] == cos phi_ij``.

        ``patches`` is normalised in place (zero patches stay zero).
        """
        norm = xp.sqrt(xp.einsum("ij,ij->i", patches, patches))
        patches *= safe_reciprocal(xp, norm)[:, None]
        return patches, xp.ascontiguousarray(patches.T), norm

    def windowed_statistic(self, xp: Any, box: Any, inv_norm_i: Any, inv_norm_j: Any,
                           offset: tuple[int, int]) -> Any:
        """Turn the box-summed product ``<P_i, P_j>`` into ``cos phi`` (in place)."""
        box *= inv_norm_i
        box *= inv_norm_j
        return box

    def profile(self, xp: Any, t: Any, scratch: list[Any]) -> Any:
        """Apply the kernel's profile to cosines ``t`` in place."""
        raise NotImplementedError

    def jit_parameters(self, dtype: Any) -> numpy.ndarray:
        """The coefficients of ``p`` then ``g`` (:func:`_polynomial`) for :func:`jit_relu_layer`."""
        return numpy.array(_polynomial("p", numpy.dtype(dtype)) + _polynomial("g", numpy.dtype(dtype)), dtype)


@register_kernel
class ArcCosKernel(CosineKernel):
    """Arc-cosine kernel of degree 1, the tangent kernel of the output layer alone.

    ``f(c) = (sin phi + (pi - phi) cos phi) / pi`` with ``phi = arccos c``; it
    equals ``2 E[relu(w.x) relu(w.x')] / (|x| |x'|)`` for standard Gaussian
    ``w`` (``Sigma^1`` of a He-initialised layer).
    """

    name = "arccos"
    scratch_blocks = 3
    cuda_profile = """
        NLFILT_REAL derivative;  // (pi - phi) / pi, not needed here
        return nlfilt_relu_layer(nlfilt_clip_cosine(t), &derivative);
    """
    jit_profile = staticmethod(arccos_jit_profile)
    global_ns_per_pair = 2.5
    windowed_ns_per_weight = 27.0  # the arc-cosine and norms per weight (benchmarks/cost_check.py)
    compiled_ns_per_weight = 0.95

    def profile(self, xp: Any, t: Any, scratch: list[Any]) -> Any:
        """Apply ``f`` in place (three scratch blocks)."""
        xp.clip(t, -1, 1, out=t)
        _relu_layer(xp, t, scratch)
        return t



@register_kernel
class NTKKernel(CosineKernel):
    """Neural tangent kernel of a ReLU CNN: one k x k convolution, depth-1 1x1 layers.

    With ``c^0 = cos phi`` and ``theta^0 = c^0`` (the norms factored out)::

        c^l     = (sin phi^{l-1} + (pi - phi^{l-1}) c^{l-1}) / pi,   phi^{l-1} = arccos c^{l-1}
        theta^l = c^l + theta^{l-1} (pi - phi^{l-1}) / pi

    and ``f = theta^depth``.  Since ``Sigma^l_ii = |P_i|^2`` on every layer this is
    the recursion ``Theta^l = Sigma^l + Theta^{l-1} dSigma^l`` divided by
    ``|P_i| |P_j|``.
    """

    name = "ntk"
    has_depth = True
    scratch_blocks = 5
    cuda_profile = """
        NLFILT_REAL c = nlfilt_clip_cosine(t);
        NLFILT_REAL theta = c;  // theta^0 = c^0; per layer theta^l = c^l + theta^{l-1} (pi - phi) / pi
        for (int layer = 0; layer < depth; ++layer) {
            NLFILT_REAL derivative;
            c = nlfilt_relu_layer(c, &derivative);
            theta = c + theta * derivative;
        }
        return theta;
    """
    jit_profile = staticmethod(ntk_jit_profile)
    global_ns_per_pair = 4.2  # depth 1; each further layer adds global_ns_per_layer
    global_ns_per_layer = 5.0
    windowed_ns_per_weight = 28.0
    windowed_ns_per_layer = 12.0
    compiled_ns_per_weight = 1.3
    compiled_ns_per_layer = 0.95

    def __init__(self, depth: int) -> None:
        self.depth = depth

    @classmethod
    def create(cls, *, h: float | None, sigma: float | None, depth: int) -> NTKKernel:
        return cls(depth=depth)

    @property
    def layers(self) -> int:
        return self.depth

    def profile(self, xp: Any, t: Any, scratch: list[Any]) -> Any:
        """Apply ``theta^depth`` in place (five scratch blocks)."""
        xp.clip(t, -1, 1, out=t)
        theta = scratch[4]
        theta[...] = t
        for _ in range(self.depth):
            _relu_layer(xp, t, scratch[:4], theta)
        t[...] = theta
        return t



def _relu_layer(xp: Any, c: Any, scratch: list[Any], theta: Any = None) -> None:
    """Advance one ReLU layer in place, for cosines ``c`` in [-1, 1].

    ``c <- (sin phi + (pi - phi) c) / pi`` with ``phi = arccos c``; when
    ``theta`` is given, also ``theta <- theta (pi - phi) / pi + c_new``.

    NumPy's arccos and sin cost many times an exp, so both are rewritten with
    ``u = |c|`` and ``arccos u = sqrt(1 - u) p(u)``::

        pi - arccos c             = pi/2 + copysign(pi/2 - sqrt(1 - u) p(u), c)
        sin phi + (pi - phi) c    = sqrt(1 - u) g(u) + pi max(c, 0),
        g(u)                      = sqrt(1 + u) - u p(u)

    where ``p`` and ``g`` are smooth on [0, 1] and evaluated as polynomials
    accurate to the working precision (:func:`_polynomial`); with ``theta``
    only ``p`` is, and ``g`` follows from it.  Only ``1 - u`` enters the
    square root, which is exact near ``u = 1`` where ``1 - c^2`` would lose
    half the digits.  ``scratch`` holds three blocks, four with ``theta``.
    """
    x, root, acc = scratch[:3]
    dtype = c.dtype.type
    half_pi = dtype(math.pi / 2)
    xp.abs(c, out=x)
    xp.subtract(dtype(1), x, out=root)
    xp.sqrt(root, out=root)  # sqrt(1 - u)
    xp.multiply(x, dtype(2), out=x)
    x -= dtype(1)  # the polynomials' variable, 2u - 1 in [-1, 1]
    if theta is None:
        _horner(xp, x, _polynomial("g", c.dtype), acc)
        x += dtype(1)
        x *= dtype(0.5)  # u again
    else:
        work = scratch[3]
        _horner(xp, x, _polynomial("p", c.dtype), acc)
        xp.multiply(acc, root, out=work)  # arccos u, in [0, pi/2]
        xp.subtract(half_pi, work, out=work)
        xp.copysign(work, c, out=work)
        work += half_pi  # pi - arccos c
        theta *= work
        theta *= dtype(1 / math.pi)
        x += dtype(1)
        x *= dtype(0.5)  # u again
        xp.add(x, dtype(1), out=work)
        xp.sqrt(work, out=work)
        acc *= x
        xp.subtract(work, acc, out=acc)  # g = sqrt(1 + u) - u p
    acc *= root
    c += x  # c + u = 2 max(c, 0)
    c *= half_pi
    c += acc
    c *= dtype(1 / math.pi)
    if theta is not None:
        theta += c


def _horner(xp: Any, x: Any, coefficients: tuple[float, ...], out: Any) -> Any:
    """``out <- sum_k coefficients[k] x^k`` by Horner's rule, in place."""
    dtype = x.dtype.type
    xp.multiply(x, dtype(coefficients[-1]), out=out)
    for coefficient in coefficients[-2:0:-1]:
        out += dtype(coefficient)
        out *= x
    out += dtype(coefficients[0])
    return out


#: Polynomial degrees reaching the working precision on [0, 1] (errors measured against
#: float64 arccos: 2.5e-8 and 5e-9 at degree 7, 7e-15 and 2e-15 at degree 15).
_DEGREES = {numpy.dtype(numpy.float32): 7, numpy.dtype(numpy.float64): 15}


@cache
def _polynomial(name: str, dtype: numpy.dtype) -> tuple[float, ...]:
    """Monomial coefficients, in ``x = 2u - 1``, of ``p`` or ``g`` on ``u`` in [0, 1].

    ``p(u) = arccos(u) / sqrt(1 - u)`` (``sqrt 2`` at ``u = 1``) and
    ``g(u) = sqrt(1 + u) - u p(u)``, interpolated at Chebyshev nodes in float64.
    Both are analytic on [0, 1] (their nearest singularity is at ``u = -1``), so
    the interpolants converge geometrically.
    """
    degree = _DEGREES.get(numpy.dtype(dtype), 15)
    nodes = numpy.cos(numpy.pi * (numpy.arange(4 * degree) + 0.5) / (4 * degree))
    u = (nodes + 1) / 2
    p = numpy.arccos(u) / numpy.sqrt(1 - u)
    values = p if name == "p" else numpy.sqrt(1 + u) - u * p
    series = numpy.polynomial.chebyshev.chebfit(nodes, values, degree)
    return tuple(float(value) for value in numpy.polynomial.chebyshev.cheb2poly(series))


def safe_reciprocal(xp: Any, values: Any) -> Any:
    """``1 / values`` where positive, 0 elsewhere."""
    positive = values > 0
    return xp.where(positive, 1 / xp.where(positive, values, 1), 0).astype(values.dtype)


def weight_floor(dtype: Any) -> float:
    """``log`` of the smallest normal number of ``dtype``: the NLM exponent is clipped there."""
    return math.log(numpy.finfo(dtype).tiny)


#: The built-in kernels (the command line offers these).
KERNELS = ("nlm", "arccos", "ntk")


def make_kernel(name: str, *, h: float | None, sigma: float | None, depth: int) -> Kernel:
    """Build the kernel object for validated options; ValueError for an unregistered name."""
    return kernel_class(name).create(h=h, sigma=sigma, depth=depth)
