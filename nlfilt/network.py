"""A ReLU CNN whose infinite-width tangent kernel is nlfilt's ``'ntk'`` kernel, and its empirical kernel.

The network of :func:`nlfilt.denoise` with ``kernel='ntk'``: one k x k
convolution of ``width`` channels (on the image's reflect-padded patches, as
nlfilt's filters see them), ``depth - 1`` 1x1 convolutions of ``width``
channels, ReLU after each, and a linear 1x1 output, in the NTK
parametrisation (standard Gaussian weights; the factors in the forward pass)::

    z_1 = P W_1,  a_l = sqrt(2) relu(z_l),  z_{l+1} = a_l W_{l+1} / sqrt(C),  g = a_L W_out / sqrt(C)

With this scaling the pre-activations of layer l have covariance
``Sigma^{l-1}`` (``Sigma^0 = <P_i, P_j>``, then the arc-cosine map), and the
tangent kernel of ``g`` tends, as ``C`` grows, to nlfilt's
``Theta^depth = Sigma^depth + Theta^{depth-1} dSigma^depth``, all layers
trained with one learning rate.  The output is ``f = (g(theta_a) -
g(theta_b)) / sqrt(2)`` for two copies started from the same weights, so that
``f = 0`` at the start (twicing's ``z_0 = 0``), its tangent kernel is that of
``g``, and the terms of second order in the weights' change cancel.  Trained on
the squared loss ``|f - y|^2 / 2`` by full-batch gradient descent with
learning rate ``1 / lambda_max(K)``, it follows nlfilt's twicing
``z_t = z_{t-1} + K / lambda_max (y - z_{t-1})`` ever more closely as the width
grows; Adam moves the weights further and adapts the kernel, which
:meth:`TangentCNN.kernel_change` measures on the finite network's own
(empirical) tangent kernel.

The deep image prior trains its networks in the *standard* parametrisation
instead (``parametrization='standard'``): the weights drawn as common
frameworks draw them, uniform in ``+-1 / sqrt(fan_in)`` (PyTorch's default
for convolutions), and no factors in the forward pass::

    z_1 = P W_1,  a_l = relu(z_l),  z_{l+1} = a_l W_{l+1},  g = a_L W_out

Its tangent kernel at initialisation has another scale and weighs the layers
differently; gradient descent's default step is then ``1 / lambda_max`` of
that empirical kernel (:meth:`TangentCNN.kernel_eigenvalue`), Adam's the deep
image prior's.

Explicit forward and backward passes, no deep-learning framework; the arrays
live on a :class:`~nlfilt.backend.Backend` (NumPy on the CPU, CuPy on a GPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy

from nlfilt.arguments import check_box, check_count, check_dtype, check_progress, check_real
from nlfilt.backend import Backend, get_backend
from nlfilt.filters import FilterOptions, build_filter
from nlfilt.resolve import prepare, resolve_options

#: Adam's default learning rate (per-weight step; weights are standard Gaussian): the deep image
#: prior's denoising setting.  At 1e-3 Adam's kernel moves about as little as gradient descent's and,
#: like it, less the wider the network (benchmarks/results/ntk_vs_network.md).
ADAM_LEARNING_RATE = 1e-2
#: Rows of the empirical tangent kernel formed at once by :meth:`TangentCNN.kernel_change`.
KERNEL_ROW_BLOCK = 1024
#: The parametrisations of :class:`TangentCNN` (the first is the default).
PARAMETRIZATIONS = ("ntk", "standard")
#: Most power-iteration steps of :meth:`TangentCNN.kernel_eigenvalue`.
EIGENVALUE_ITERATIONS = 200


def image_patches(image: Any, patch: int, backend: Backend | None = None, dtype: Any = numpy.float32) -> Any:
    """(N, patch*patch*C) reflect-padded patches of an (H, W) or (H, W, C) image, the network's input
    (the same as nlfilt's filters use), as ``dtype`` on ``backend`` (default: the CPU)."""
    backend = backend or get_backend("cpu")
    array = backend.asarray(numpy.asarray(image, dtype=numpy.float64), dtype=dtype)
    if array.ndim == 2:
        array = array[:, :, None]
    return backend.patch_matrix(array, patch)


@dataclass
class _Layer:
    """One weight layer's share of the tangent kernel: ``dg_c / dW = factor * inputs (x) backs[c]``,
    so it adds ``factor^2 (inputs inputs^T) * (backs[c] backs[c']^T)`` to ``Theta_{cc'}``."""

    inputs: Any  # (N, fan_in)
    backs: list[Any]  # per output channel c: (N, fan_out), d g_c / d pre-activation
    factor: float


class TangentCNN:
    """The network of the module notes, as two weight copies; ``f = 0`` at initialisation.

    Parameters
    ----------
    dims : int
        Input patch dimension ``d = patch**2 * channels``.
    width : int
        Channels ``C`` of every hidden layer.
    depth : int
        ReLU layers (1: one k x k convolution and the output).
    channels : int
        Output channels (the image's).
    seed : int
        Seed of the standard Gaussian initial weights (drawn on the host, so a
        seed gives the same network on every device).
    dtype : numpy.float32 or numpy.float64
        Precision of the weights and activations.
    backend : Backend, optional
        Where the arrays live and the products run (default: the CPU).
    parametrization : {'ntk', 'standard'}
        Standard Gaussian weights with the factors in the forward pass (the
        module notes), or weights uniform in ``+-1 / sqrt(fan_in)`` and no
        factors (the deep image prior's).
    """

    def __init__(self, dims: int, width: int, depth: int, channels: int = 1, seed: int = 0,
                 dtype: Any = numpy.float32, backend: Backend | None = None,
                 parametrization: str = "ntk") -> None:
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}; got {parametrization!r}")
        self.backend = backend or get_backend("cpu")
        self.parametrization = parametrization
        rng = numpy.random.default_rng(seed)
        shapes = [(dims, width)] + [(width, width)] * (depth - 1) + [(width, channels)]
        if parametrization == "ntk":
            drawn = [rng.standard_normal(shape) for shape in shapes]
            self.gain, self.scale = math.sqrt(2), 1 / math.sqrt(width)  # after each ReLU, each later layer
        else:
            drawn = [rng.uniform(-1, 1, shape) / math.sqrt(shape[0]) for shape in shapes]
            self.gain, self.scale = 1.0, 1.0
        initial = [self.backend.asarray(weights.astype(dtype)) for weights in drawn]
        self.width = width
        self.depth = depth
        self.channels = channels
        self.copies = [[weight.copy() for weight in initial], [weight.copy() for weight in initial]]
        self.initial = initial
        xp = self.backend.xp
        self._hidden_size = 2 * sum(self.backend.scalar(xp.sum(xp.square(start, dtype=numpy.float64)))
                                    for start in initial[:-1])  # |W_0|^2 of both copies' hidden layers

    @property
    def parameters(self) -> list[Any]:
        """Every weight array: copy a's layers, then copy b's."""
        return self.copies[0] + self.copies[1]

    def _forward(self, weights: list[Any], patches: Any) -> tuple[Any, list]:
        """(``g``, per layer its (inputs, pre-activation); the output layer's pre-activation is None)."""
        xp = self.backend.xp
        pre = patches @ weights[0]
        cache = [(patches, pre)]
        for weight in weights[1:-1]:
            activation = xp.maximum(pre, 0)
            activation *= self.gain
            pre = activation @ weight
            pre *= self.scale
            cache.append((activation, pre))
        activation = xp.maximum(pre, 0)
        activation *= self.gain
        cache.append((activation, None))
        output = activation @ weights[-1]
        output *= self.scale
        return output, cache

    def _layers(self, weights: list[Any], cache: list,
                upstream: Any) -> Iterator[tuple[int, Any, Any, float]]:
        """Back-propagate ``upstream`` (d/d g, (N, channels)): per weight layer, last first,
        (index, inputs, d/d its pre-activation, factor); the layer's gradient of ``sum(upstream * g)``
        is ``factor * inputs^T @ back``."""
        scale = self.scale
        last = len(weights) - 1
        yield last, cache[-1][0], upstream, scale
        back = upstream @ weights[-1].T
        back *= scale  # d/d activation of the last ReLU layer
        for layer in range(last - 1, -1, -1):
            inputs, pre = cache[layer]
            back *= pre > 0
            back *= self.gain  # d/d pre-activation of this layer
            factor = 1.0 if layer == 0 else scale
            yield layer, inputs, back, factor
            if layer:
                back = back @ weights[layer].T
                back *= factor

    def _backward(self, weights: list[Any], cache: list, upstream: Any) -> list:
        """Gradients of ``sum(upstream * g)`` with respect to ``weights``."""
        grads: list[Any] = [None] * len(weights)
        for layer, inputs, back, factor in self._layers(weights, cache, upstream):
            grads[layer] = inputs.T @ back
            grads[layer] *= factor
        return grads

    def output(self, patches: Any) -> Any:
        """``f`` on the (N, d) patches: (N, channels)."""
        first, _ = self._forward(self.copies[0], patches)
        second, _ = self._forward(self.copies[1], patches)
        return (first - second) / math.sqrt(2)

    def gradients(self, patches: Any, target: Any) -> tuple[Any, list[Any]]:
        """(``f``, the gradients of the squared loss ``|f - y|^2 / 2`` for :attr:`parameters`), at the
        current weights; nothing is read back from the device."""
        first, cache_a = self._forward(self.copies[0], patches)
        second, cache_b = self._forward(self.copies[1], patches)
        output = (first - second) / math.sqrt(2)
        residual = output - target
        grads_a = self._backward(self.copies[0], cache_a, residual / math.sqrt(2))
        grads_b = self._backward(self.copies[1], cache_b, residual / -math.sqrt(2))
        return output, grads_a + grads_b

    def loss_and_gradients(self, patches: Any, target: Any) -> tuple[float, Any, list[Any]]:
        """(``|f - y|^2 / 2``, ``f``, the loss's gradients for :attr:`parameters`): :meth:`gradients` and
        the loss, read back as a float."""
        output, grads = self.gradients(patches, target)
        residual = output - target
        return 0.5 * self.backend.scalar(self.backend.xp.sum(residual * residual)), output, grads

    def hidden_movement(self) -> float:
        """``|W - W_0| / |W_0|`` over the hidden layers (all but the output layer) of both copies."""
        xp, scalar = self.backend.xp, self.backend.scalar
        moved = sum(scalar(xp.sum((layer - start) ** 2)) for copy in self.copies
                    for layer, start in zip(copy[:-1], self.initial[:-1], strict=True))
        return math.sqrt(moved / self._hidden_size)

    def _tangent_layers(self, weights: list[Any], patches: Any) -> list[_Layer]:
        """The factors of ``g``'s tangent kernel at ``weights``: one back-propagation per output channel."""
        xp = self.backend.xp
        _, cache = self._forward(weights, patches)
        layers: list[_Layer] = []
        for channel in range(self.channels):
            upstream = xp.zeros((patches.shape[0], self.channels), dtype=patches.dtype)
            upstream[:, channel] = 1
            for layer, inputs, back, factor in self._layers(weights, cache, upstream):
                if channel == 0:
                    layers.append(_Layer(inputs, [], factor))
                layers[len(weights) - 1 - layer].backs.append(back)
        return layers

    def _tangent_block(self, weight_sets: list[list[_Layer]], rows: Any) -> Any:
        """Rows ``rows`` (a slice, or an index array) of the tangent kernel averaged over ``weight_sets``:
        (channels, channels, R, N), ``[c, c', i, j] = <d f_c(x_i) / d theta, d f_c'(x_j) / d theta>``."""
        xp = self.backend.xp
        count = rows.stop - rows.start if isinstance(rows, slice) else len(rows)
        size = weight_sets[0][0].inputs.shape[0]
        block = xp.zeros((self.channels, self.channels, count, size), dtype=weight_sets[0][0].inputs.dtype)
        for layers in weight_sets:
            for layer in layers:
                gram = layer.inputs[rows] @ layer.inputs.T
                gram *= layer.factor**2 / len(weight_sets)
                for c, back in enumerate(layer.backs):
                    for c_other, back_other in enumerate(layer.backs):
                        block[c, c_other] += gram * (back[rows] @ back_other.T)
        return block

    def tangent_kernel(self, patches: Any, rows: slice | None = None, *, initial: bool = False) -> Any:
        """The empirical tangent kernel of ``f`` on ``patches`` at the current (or the initial) weights.

        ``Theta[c, c', i, j] = sum over weights of df_c(x_i)/dtheta * df_c'(x_j)/dtheta``, formed from
        per-layer Gram matrices (``dg/dW_l = a_{l-1} (x) delta_l`` for a layer applied at every pixel),
        never from the (N, parameters) Jacobian: O(N^2 C) per layer and output channel pair.  For ``f =
        (g_a - g_b) / sqrt(2)`` it is the mean of the two copies' kernels of ``g``.  As the width grows
        it tends to nlfilt's ``ntk`` kernel ``K`` on the diagonal blocks (``c = c'``) and to 0 off them.

        Returns (channels, channels, R, N) for the rows ``rows`` (default: all N rows).
        """
        rows = rows if rows is not None else slice(0, patches.shape[0])
        rows = slice(*rows.indices(patches.shape[0])[:2])
        sets = [self.initial] if initial else self.copies
        return self._tangent_block([self._tangent_layers(weights, patches) for weights in sets], rows)

    def kernel_eigenvalue(self, patches: Any, *, iterations: int = EIGENVALUE_ITERATIONS) -> float:
        """``lambda_max`` of the empirical tangent kernel at initialisation on ``patches`` (all channel
        blocks as one (C N, C N) matrix), by power iteration (until the estimate settles to 1e-6); the
        step ``1 / lambda_max`` lets gradient descent follow that kernel's twicing.

        Matrix-free: a layer adds ``f^2 (A A^T) o (B_c B_c'^T)`` to block
        (c, c'), whose product with ``v`` is ``f^2 rowsum((A M) o B_c)`` with
        ``M = A^T diag(v) B_c'``, two products of the layer's size per
        iteration (a forward pass's work), the kernel never formed.
        """
        xp = self.backend.xp
        layers = self._tangent_layers(self.initial, patches)
        vector = xp.ones((self.channels, patches.shape[0]), dtype=numpy.float64)
        vector /= xp.sqrt(xp.sum(vector * vector))
        value = 0.0
        for _ in range(iterations):
            product = xp.zeros_like(vector)
            for layer in layers:
                inputs = layer.inputs.astype(numpy.float64)
                for c, back in enumerate(layer.backs):
                    for c_other, back_other in enumerate(layer.backs):
                        mixed = inputs.T @ (vector[c_other][:, None] * back_other.astype(numpy.float64))
                        product[c] += layer.factor**2 * xp.sum((inputs @ mixed) * back, axis=1)
            previous, value = value, self.backend.scalar(xp.sqrt(xp.sum(product * product)))
            if value == 0:
                raise ValueError("the initial tangent kernel is zero (an all-zero image)")
            vector = product / value
            if abs(value - previous) <= 1e-6 * value:
                break
        return float(value)

    def kernel_change(self, patches: Any, sample: int | None = None) -> KernelChange:
        """How the empirical tangent kernel (all channel blocks) changed from its value at initialisation,
        ``Theta_0``, to the current one, ``Theta_t`` (:class:`KernelChange`); formed in blocks of
        ``KERNEL_ROW_BLOCK`` rows, never whole.

        With ``sample`` (fewer than the N pixels) the three squared norms
        are estimated from that many rows drawn at random without
        replacement (a fixed seed), each row whole: ``N / sample`` times
        their sums, unbiased, at ``sample / N`` of the cost (O(sample N C)
        instead of O(N^2 C) per layer), for whole images.
        """
        size = patches.shape[0]
        chosen = numpy.arange(size)
        if sample is not None and sample < size:
            check_count("sample", sample, minimum=1)
            chosen = numpy.sort(numpy.random.default_rng(0).choice(size, sample, replace=False))
        start = [self._tangent_layers(self.initial, patches)]
        now = [self._tangent_layers(weights, patches) for weights in self.copies]
        sums = numpy.zeros(3)
        for first in range(0, len(chosen), KERNEL_ROW_BLOCK):
            rows = self.backend.asarray(chosen[first:first + KERNEL_ROW_BLOCK])
            after, before = self._tangent_block(now, rows), self._tangent_block(start, rows)
            sums += squared_norms(self.backend, after, before)
        return KernelChange.from_squared_norms(*(sums * (size / len(chosen))))


@dataclass(frozen=True)
class KernelChange:
    """How a network's empirical tangent kernel changed during training, ``Theta_0`` to ``Theta_t``.

    Attributes
    ----------
    movement : float
        ``|Theta_t - Theta_0|_F / |Theta_0|_F``, the relative Frobenius change.
    scale : float
        ``|Theta_t|_F / |Theta_0|_F``: a change of scale alone acts like another step size.
    shape : float
        ``|Theta_t / |Theta_t|_F - Theta_0 / |Theta_0|_F|_F``: the change once both are scaled to unit
        norm, i.e. of which pixels the filter averages, whatever its scale.
    """

    movement: float
    scale: float
    shape: float

    @classmethod
    def from_squared_norms(cls, difference: float, after: float, before: float) -> KernelChange:
        """The change from ``|Theta_t - Theta_0|^2``, ``|Theta_t|^2`` and ``|Theta_0|^2`` (the shape from
        ``|a/|a| - b/|b||^2 = (|a - b|^2 - (|a| - |b|)^2) / (|a| |b|)``, without the cancellation of
        ``2 - 2 cos``).  ValueError for a zero ``Theta_0`` (an all-zero image)."""
        if not before > 0:
            raise ValueError("the initial tangent kernel is zero (an all-zero image): nothing to compare")
        norm_after, norm_before = math.sqrt(after), math.sqrt(before)
        shape = (difference - (norm_after - norm_before) ** 2) / (norm_after * norm_before) if after else 1.0
        return cls(movement=math.sqrt(difference / before), scale=norm_after / norm_before,
                   shape=math.sqrt(max(shape, 0.0)))


def squared_norms(backend: Backend, after: Any, before: Any) -> numpy.ndarray:
    """``[|after - before|^2, |after|^2, |before|^2]``, summed in float64 (on ``backend``) whatever the
    arrays' precision: a small change of a large kernel must not vanish in float32 rounding."""
    xp = backend.xp
    difference = after.astype(numpy.float64) - before.astype(numpy.float64)
    return numpy.array([backend.scalar(xp.sum(xp.square(part, dtype=numpy.float64)))
                        for part in (difference, after, before)])


@dataclass
class Training:
    """The outputs of a training run: ``outputs[t]`` is ``f`` after ``t`` steps (``outputs[0] = 0``),
    as NumPy arrays of the image's shape."""

    outputs: list[numpy.ndarray]
    movement: list[float]  # hidden-layer movement after each step (index t)
    learning_rate: float
    network: TangentCNN = field(repr=False)
    patches: Any = field(repr=False)  # the network's input, on its backend

    def kernel_change(self, sample: int | None = None) -> KernelChange:
        """How the network's empirical tangent kernel changed during training
        (:meth:`TangentCNN.kernel_change` on the training image; ``sample``: estimated from that many
        rows)."""
        return self.network.kernel_change(self.patches, sample)

    def kernel_row(self, index: int, *, initial: bool = False) -> numpy.ndarray:
        """Row ``index`` (a flat pixel index) of the empirical tangent kernel after training (or at the
        start), averaged over the output channels' diagonal blocks: (N,), on the host."""
        block = self.network.tangent_kernel(self.patches, slice(index, index + 1), initial=initial)
        xp = self.network.backend.xp
        diagonal = xp.stack([block[c, c, 0] for c in range(block.shape[0])])
        return self.network.backend.to_host(diagonal.mean(axis=0)).astype(numpy.float64)


class GradientDescent:
    """Full-batch gradient descent: ``W <- W - learning_rate * dL/dW`` (in place)."""

    def __init__(self, parameters: list[Any], learning_rate: float, xp: Any) -> None:
        self.learning_rate = learning_rate

    @staticmethod
    def default_learning_rate(eigenvalue: float | None) -> float:
        """``1 / lambda_max`` of nlfilt's ntk kernel: the step with which it follows twicing."""
        if eigenvalue is None:
            raise ValueError("gradient descent needs learning_rate or eigenvalue (lambda_max of the ntk "
                             "kernel, see ntk_eigenvalue)")
        check_real("eigenvalue", eigenvalue, "> 0 (lambda_max of the ntk kernel)", lambda value: value > 0)
        return 1 / eigenvalue

    def update(self, step: int, parameters: list[Any], grads: list[Any]) -> None:
        """Apply step ``step`` (from 1); ``grads`` are used as scratch."""
        for weight, grad in zip(parameters, grads, strict=True):
            grad *= self.learning_rate
            weight -= grad


class Adam:
    """Adam (Kingma & Ba): moments with decay 0.9 and 0.999, bias-corrected, epsilon 1e-8."""

    BETAS = (0.9, 0.999)
    EPSILON = 1e-8

    def __init__(self, parameters: list[Any], learning_rate: float, xp: Any) -> None:
        self.learning_rate = learning_rate
        self.xp = xp
        self.moments = [(xp.zeros_like(weight), xp.zeros_like(weight)) for weight in parameters]

    @staticmethod
    def default_learning_rate(eigenvalue: float | None) -> float:
        """:data:`ADAM_LEARNING_RATE`, whatever the kernel."""
        return ADAM_LEARNING_RATE

    def update(self, step: int, parameters: list[Any], grads: list[Any]) -> None:
        """Apply step ``step`` (from 1); ``grads`` are used as scratch."""
        beta, beta_square = self.BETAS
        for weight, grad, (first, second) in zip(parameters, grads, self.moments, strict=True):
            first *= beta
            first += (1 - beta) * grad
            second *= beta_square
            grad *= grad
            second += (1 - beta_square) * grad
            denominator = self.xp.sqrt(second / (1 - beta_square**step))
            denominator += self.EPSILON
            weight -= (self.learning_rate / (1 - beta**step)) * first / denominator


#: The optimisers :func:`train` offers, by name.
OPTIMIZER_CLASSES: dict[str, type] = {"gd": GradientDescent, "adam": Adam}
OPTIMIZERS = tuple(OPTIMIZER_CLASSES)


def train(image: numpy.ndarray, *, width: int, depth: int = 1, patch: int = 3, steps: int = 100,
          optimizer: str = "gd", learning_rate: float | None = None, eigenvalue: float | None = None,
          seed: int = 0, dtype: Any = numpy.float32, device: str = "cpu", parametrization: str = "ntk",
          progress: Callable[[int, int], None] | None = None) -> Training:
    """Train the network on one noisy image (input and target ``y``) and record ``f`` after every step.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        The noisy image ``y`` (not all zero).
    width, depth : int
        Channels of every hidden layer and ReLU layers (>= 1; see :class:`TangentCNN`).
    patch : int
        Odd side of the first convolution, at most ``min(H, W)``.
    steps : int
        Optimiser steps (>= 0).
    optimizer : {'gd', 'adam'}
        Full-batch gradient descent, or Adam (beta 0.9 / 0.999, eps 1e-8).
    learning_rate : float, optional
        Default: ``1 / eigenvalue`` for 'gd' (nlfilt's twicing step) and
        ``ADAM_LEARNING_RATE`` for 'adam'.
    eigenvalue : float, optional
        ``lambda_max`` of the kernel gradient descent follows, for 'gd'
        without ``learning_rate``: nlfilt's global ntk kernel on this image
        in the ntk parametrisation (:func:`ntk_eigenvalue`, which the wide
        network's kernel tends to); when not given, that of the network's own
        kernel at initialisation (:meth:`TangentCNN.kernel_eigenvalue`,
        matrix-free, O(N C) per iteration: the step for whole images, and
        the only one in the standard parametrisation).
    seed : int
        Seed of the initial weights.
    dtype : numpy.float32 or numpy.float64
        Precision of the weights and activations (float32 is the faster).
    device : {'cpu', 'gpu', 'auto'}
        Where the network trains (as in :func:`nlfilt.denoise`).
    parametrization : {'ntk', 'standard'}
        The network's parametrisation (:class:`TangentCNN`).
    progress : callable, optional
        ``progress(t, steps)`` after each step.

    Returns
    -------
    Training
        ``outputs[t]``, ``f`` after ``t`` steps as NumPy arrays of the image's
        shape (``outputs[0] = 0``), the hidden weights' movement after each
        step, the learning rate used, and the trained network, whose
        :meth:`Training.kernel_change` and :meth:`Training.kernel_row` read
        its empirical tangent kernel.

    Raises
    ------
    ValueError
        For an invalid argument, or an all-zero image.
    RuntimeError
        For ``device='gpu'`` without a usable GPU.

    Notes
    -----
    A step costs three products of the (N, C) activations with every (C, C)
    hidden weight for each copy (forward, gradient, back-propagation):
    about ``12 N C^2 (depth - 1) + 12 N C (d + channels)`` floating-point
    operations; ``f_t`` is read from the forward pass of step ``t + 1``.

    Examples
    --------
    >>> import numpy
    >>> from nlfilt.network import ntk_eigenvalue, train
    >>> y = numpy.random.default_rng(0).random((8, 8)) * 255
    >>> run = train(y, width=256, steps=5, eigenvalue=ntk_eigenvalue(y))
    >>> len(run.outputs), run.outputs[5].shape, run.kernel_change().movement < 0.1
    (6, (8, 8), True)
    """
    array = numpy.asarray(image, dtype=numpy.float64)
    _check_training(array, width, depth, patch, steps, optimizer, learning_rate)
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}; got {parametrization!r}")
    check_progress(progress)
    dtype = check_dtype(dtype)
    kind = OPTIMIZER_CLASSES[optimizer]
    own_step = learning_rate is None and kind is GradientDescent and eigenvalue is None
    if learning_rate is None and not own_step:
        learning_rate = kind.default_learning_rate(eigenvalue)
    backend = get_backend(device)
    target = backend.asarray(array.reshape(array.shape[0] * array.shape[1], -1), dtype=dtype)
    patches = image_patches(array, patch, backend, dtype)
    network = TangentCNN(patches.shape[1], width, depth, target.shape[1], seed, dtype, backend,
                         parametrization=parametrization)
    if own_step:  # gradient descent without an eigenvalue: its own initial kernel's step
        learning_rate = kind.default_learning_rate(network.kernel_eigenvalue(patches))
    rule = kind(network.parameters, learning_rate, backend.xp)
    outputs = [numpy.zeros(array.shape, dtype=dtype)]
    movement = [0.0]
    for step in range(1, steps + 1):
        output, grads = network.gradients(patches, target)
        if step > 1:
            outputs.append(backend.to_host(output).reshape(array.shape))
        rule.update(step, network.parameters, grads)
        movement.append(network.hidden_movement())
        if progress is not None:
            progress(step, steps)
    outputs.append(backend.to_host(network.output(patches)).reshape(array.shape))
    return Training(outputs=outputs, movement=movement, learning_rate=float(learning_rate), network=network,
                    patches=patches)


def _check_training(array: numpy.ndarray, width: Any, depth: Any, patch: Any, steps: Any, optimizer: Any,
                    learning_rate: Any) -> None:
    """ValueError naming the first invalid argument of :func:`train`."""
    if array.ndim not in (2, 3) or array.size == 0 or not numpy.all(numpy.isfinite(array)):
        raise ValueError(f"image must be a finite (H, W) or (H, W, C) array; got shape {array.shape}")
    if not numpy.any(array):
        raise ValueError("image is all zeros: the network's input and its tangent kernel are zero")
    for name, value, minimum in (("width", width, 1), ("depth", depth, 1), ("steps", steps, 0)):
        check_count(name, value, minimum=minimum)
    check_box("patch", patch, array.shape[:2])
    if optimizer not in OPTIMIZER_CLASSES:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {optimizer!r}")
    if learning_rate is not None:
        check_real("learning_rate", learning_rate, "> 0", lambda value: value > 0)


@dataclass
class ClosedForm:
    """nlfilt's global ntk filter of an image and its twicing trajectory (:func:`ntk_closed_form`)."""

    trajectory: list[numpy.ndarray]  # z_t for t = 0 .. steps, of the image's shape
    eigenvalue: float  # lambda_max of K
    filter: Any = field(repr=False)  # the Filter W = K / lambda_max

    def kernel_row(self, index: int) -> numpy.ndarray:
        """Row ``index`` (a flat pixel index) of ``K`` itself, ``lambda_max W[index, :]``: (N,)."""
        return numpy.asarray(self.filter.row(index), dtype=numpy.float64).ravel() * self.eigenvalue


def _closed_form_arguments(depth: int, patch: int, window: int | None) -> dict[str, Any]:
    """The filter arguments of the closed form (:func:`ntk_filter`)."""
    return {"kernel": "ntk", "patch": patch, "window": window, "h": None, "sigma": None, "depth": depth,
            "memory_budget": 2**28, "window_shape": "box" if window is None else "tent"}


def ntk_filter(image: numpy.ndarray, *, depth: int = 1, patch: int = 3, window: int | None = None) -> Any:
    """nlfilt's ntk filter ``W = K / lambda_max`` of ``image`` (float64, CPU): a
    :class:`~nlfilt.filters.Filter` that keeps ``K``; global, or with ``window`` (odd) within a tent
    window (``window_shape='tent'``: positive semidefinite, so twicing is stable)."""
    backend, array, options = prepare(image, device="cpu", dtype=numpy.float64,
                                      **_closed_form_arguments(depth, patch, window))
    return build_filter(backend, array, options, reuse=True)


def ntk_filter_options(shape: tuple[int, ...], *, depth: int = 1, patch: int = 3,
                       window: int | None = None) -> FilterOptions:
    """The options :func:`ntk_filter` builds its filter with for an image of ``shape`` (from its shape
    alone, as for a cost estimate before decoding); ValueError as :func:`ntk_filter` for bad ones."""
    return resolve_options(shape, **_closed_form_arguments(depth, patch, window))


def ntk_closed_form(image: numpy.ndarray, *, depth: int = 1, patch: int = 3, steps: int = 100,
                    window: int | None = None) -> ClosedForm:
    """nlfilt's ntk filter of ``image`` (float64, CPU; global, or tent-windowed with ``window``, see
    :func:`ntk_filter`), its plain twicing trajectory ``z_t``, ``t = 0 .. steps``, and ``lambda_max``
    (for the global filter the one :func:`train`'s gradient descent should use: ``learning_rate = 1 /
    lambda_max``; a window's is smaller)."""
    filter_ = ntk_filter(image, depth=depth, patch=patch, window=window)
    array = numpy.asarray(image, dtype=numpy.float64)
    flat = array.reshape(array.shape[0] * array.shape[1], -1)
    estimates = [numpy.zeros_like(flat)]
    for _ in range(steps):
        estimates.append(estimates[-1] + filter_.apply(flat - estimates[-1]))
    return ClosedForm(trajectory=[estimate.reshape(array.shape) for estimate in estimates],
                      eigenvalue=filter_.compute_eigenvalue(numpy.float64), filter=filter_)


def ntk_twicing(image: numpy.ndarray, *, depth: int = 1, patch: int = 3,
                steps: int = 100) -> tuple[list[numpy.ndarray], float]:
    """(the trajectory ``z_t``, ``lambda_max``) of :func:`ntk_closed_form`."""
    closed = ntk_closed_form(image, depth=depth, patch=patch, steps=steps)
    return closed.trajectory, closed.eigenvalue


def ntk_eigenvalue(image: numpy.ndarray, *, depth: int = 1, patch: int = 3) -> float:
    """``lambda_max`` of nlfilt's global ntk kernel ``K`` of ``image`` (float64, CPU)."""
    return ntk_closed_form(image, depth=depth, patch=patch, steps=0).eigenvalue
