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

Explicit forward and backward passes, no deep-learning framework; the arrays
live on a :class:`~nlfilt.backend.Backend` (NumPy on the CPU, CuPy on a GPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy

from nlfilt.backend import Backend, get_backend

OPTIMIZERS = ("gd", "adam")
#: Adam's default learning rate (per-weight step; weights are standard Gaussian): the deep image
#: prior's denoising setting.  At 1e-3 Adam's kernel moves about as little as gradient descent's and,
#: like it, less the wider the network (benchmarks/results/ntk_vs_network.md).
ADAM_LEARNING_RATE = 1e-2
#: Rows of the empirical tangent kernel formed at once by :meth:`TangentCNN.kernel_change`.
KERNEL_ROW_BLOCK = 1024


def image_patches(image: Any, patch: int, backend: Backend | None = None, dtype: Any = numpy.float64) -> Any:
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
    """

    def __init__(self, dims: int, width: int, depth: int, channels: int = 1, seed: int = 0,
                 dtype: Any = numpy.float32, backend: Backend | None = None) -> None:
        self.backend = backend or get_backend("cpu")
        rng = numpy.random.default_rng(seed)
        shapes = [(dims, width)] + [(width, width)] * (depth - 1) + [(width, channels)]
        initial = [self.backend.asarray(rng.standard_normal(shape).astype(dtype)) for shape in shapes]
        self.width = width
        self.depth = depth
        self.channels = channels
        self.copies = [[weight.copy() for weight in initial], [weight.copy() for weight in initial]]
        self.initial = initial

    @property
    def parameters(self) -> list[Any]:
        """Every weight array: copy a's layers, then copy b's."""
        return self.copies[0] + self.copies[1]

    def _forward(self, weights: list[Any], patches: Any) -> tuple[Any, list]:
        """(``g``, per layer its (inputs, pre-activation); the output layer's pre-activation is None)."""
        xp = self.backend.xp
        scale = 1 / math.sqrt(self.width)
        pre = patches @ weights[0]
        cache = [(patches, pre)]
        for weight in weights[1:-1]:
            activation = xp.maximum(pre, 0)
            activation *= math.sqrt(2)
            pre = activation @ weight
            pre *= scale
            cache.append((activation, pre))
        activation = xp.maximum(pre, 0)
        activation *= math.sqrt(2)
        cache.append((activation, None))
        output = activation @ weights[-1]
        output *= scale
        return output, cache

    def _layers(self, weights: list[Any], cache: list,
                upstream: Any) -> Iterator[tuple[int, Any, Any, float]]:
        """Back-propagate ``upstream`` (d/d g, (N, channels)): per weight layer, last first,
        (index, inputs, d/d its pre-activation, factor); the layer's gradient of ``sum(upstream * g)``
        is ``factor * inputs^T @ back``."""
        scale = 1 / math.sqrt(self.width)
        last = len(weights) - 1
        yield last, cache[-1][0], upstream, scale
        back = upstream @ weights[-1].T
        back *= scale  # d/d activation of the last ReLU layer
        for layer in range(last - 1, -1, -1):
            inputs, pre = cache[layer]
            back *= pre > 0
            back *= math.sqrt(2)  # d/d pre-activation of this layer
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

    def loss_and_gradients(self, patches: Any, target: Any) -> tuple[float, Any, list[Any]]:
        """(``|f - y|^2 / 2``, ``f``, gradients of the loss for :attr:`parameters`), all at the current
        weights."""
        first, cache_a = self._forward(self.copies[0], patches)
        second, cache_b = self._forward(self.copies[1], patches)
        output = (first - second) / math.sqrt(2)
        residual = output - target
        grads_a = self._backward(self.copies[0], cache_a, residual / math.sqrt(2))
        grads_b = self._backward(self.copies[1], cache_b, residual / -math.sqrt(2))
        loss = 0.5 * self.backend.scalar(self.backend.xp.sum(residual * residual))
        return loss, output, grads_a + grads_b

    def hidden_movement(self) -> float:
        """``|W - W_0| / |W_0|`` over the hidden layers (all but the output layer) of both copies."""
        xp, scalar = self.backend.xp, self.backend.scalar
        moved = sum(scalar(xp.sum((layer - start) ** 2)) for copy in self.copies
                    for layer, start in zip(copy[:-1], self.initial[:-1], strict=True))
        size = 2 * sum(scalar(xp.sum(start**2)) for start in self.initial[:-1])
        return math.sqrt(moved / size)

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

    def _tangent_block(self, weight_sets: list[list[_Layer]], rows: slice) -> Any:
        """Rows ``rows`` of the tangent kernel averaged over ``weight_sets``: (channels, channels, R, N),
        ``[c, c', i, j] = <d f_c(x_i) / d theta, d f_c'(x_j) / d theta>``."""
        xp = self.backend.xp
        count = rows.stop - rows.start
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

    def kernel_change(self, patches: Any) -> KernelChange:
        """How the empirical tangent kernel (all channel blocks) changed from its value at initialisation,
        ``Theta_0``, to the current one, ``Theta_t`` (:class:`KernelChange`); formed in blocks of
        ``KERNEL_ROW_BLOCK`` rows, never whole."""
        xp, scalar = self.backend.xp, self.backend.scalar
        start = [self._tangent_layers(self.initial, patches)]
        now = [self._tangent_layers(weights, patches) for weights in self.copies]
        before_sq = after_sq = inner = 0.0
        for first in range(0, patches.shape[0], KERNEL_ROW_BLOCK):
            rows = slice(first, min(first + KERNEL_ROW_BLOCK, patches.shape[0]))
            before = self._tangent_block(start, rows)
            after = self._tangent_block(now, rows)
            before_sq += scalar(xp.sum(before * before))
            after_sq += scalar(xp.sum(after * after))
            inner += scalar(xp.sum(before * after))
        cosine = inner / math.sqrt(before_sq * after_sq)
        return KernelChange(movement=math.sqrt(max(after_sq + before_sq - 2 * inner, 0.0) / before_sq),
                            scale=math.sqrt(after_sq / before_sq),
                            shape=math.sqrt(max(2 - 2 * cosine, 0.0)))


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


@dataclass
class Training:
    """The outputs of a training run: ``outputs[t]`` is ``f`` after ``t`` steps (``outputs[0] = 0``),
    as NumPy arrays of the image's shape."""

    outputs: list[numpy.ndarray]
    movement: list[float]  # hidden-layer movement after each step (index t)
    learning_rate: float
    network: TangentCNN = field(repr=False)
    patches: Any = field(repr=False)  # the network's input, on its backend

    def kernel_change(self) -> KernelChange:
        """How the network's empirical tangent kernel changed during training
        (:meth:`TangentCNN.kernel_change` on the training image)."""
        return self.network.kernel_change(self.patches)

    def kernel_row(self, index: int, *, initial: bool = False) -> numpy.ndarray:
        """Row ``index`` (a flat pixel index) of the empirical tangent kernel after training (or at the
        start), averaged over the output channels' diagonal blocks: (N,), on the host."""
        block = self.network.tangent_kernel(self.patches, slice(index, index + 1), initial=initial)
        xp = self.network.backend.xp
        diagonal = xp.stack([block[c, c, 0] for c in range(block.shape[0])])
        return self.network.backend.to_host(diagonal.mean(axis=0)).astype(numpy.float64)


def train(image: numpy.ndarray, *, width: int, depth: int = 1, patch: int = 3, steps: int = 100,
          optimizer: str = "gd", learning_rate: float | None = None, eigenvalue: float | None = None,
          seed: int = 0, dtype: Any = numpy.float32, device: str = "cpu",
          progress: Callable[[int, int], None] | None = None) -> Training:
    """Train the network on one noisy image (input and target ``y``) and record ``f`` after every step.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        The noisy image ``y``.
    width, depth, patch : int
        The network (see :class:`TangentCNN`).
    steps : int
        Optimiser steps.
    optimizer : {'gd', 'adam'}
        Full-batch gradient descent, or Adam (beta 0.9 / 0.999, eps 1e-8).
    learning_rate : float, optional
        Default: ``1 / eigenvalue`` for 'gd' (nlfilt's twicing step) and
        ``ADAM_LEARNING_RATE`` for 'adam'.
    eigenvalue : float, optional
        ``lambda_max`` of nlfilt's ntk kernel on this image; needed for 'gd'
        without ``learning_rate`` (:func:`ntk_eigenvalue`).
    seed : int
        Seed of the initial weights.
    dtype : numpy.float32 or numpy.float64
        Precision of the weights and activations (float32: about 2.5x faster
        on a CPU, far more on a GPU).
    device : {'cpu', 'gpu', 'auto'}
        Where the network trains (as in :func:`nlfilt.denoise`).
    progress : callable, optional
        ``progress(t, steps)`` after each step.

    Notes
    -----
    A step costs three products of the (N, C) activations with every (C, C)
    hidden weight for each copy (forward, gradient, back-propagation):
    about ``12 N C^2 (depth - 1) + 12 N C (d + channels)`` floating-point
    operations; ``f_t`` is read from the forward pass of step ``t + 1``.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {optimizer!r}")
    if numpy.dtype(dtype) not in (numpy.float32, numpy.float64):
        raise ValueError(f"dtype must be numpy.float32 or numpy.float64; got {dtype!r}")
    if learning_rate is None:
        if optimizer == "adam":
            learning_rate = ADAM_LEARNING_RATE
        elif eigenvalue is None:
            raise ValueError("gradient descent needs learning_rate or eigenvalue (lambda_max of the ntk "
                             "kernel, see ntk_eigenvalue)")
        else:
            learning_rate = 1 / eigenvalue
    backend = get_backend(device)
    xp = backend.xp
    array = numpy.asarray(image, dtype=numpy.float64)
    target = backend.asarray(array.reshape(array.shape[0] * array.shape[1], -1), dtype=dtype)
    patches = image_patches(array, patch, backend, dtype)
    network = TangentCNN(patches.shape[1], width, depth, target.shape[1], seed, dtype, backend)
    moments = [(xp.zeros_like(w), xp.zeros_like(w)) for w in network.parameters]
    outputs = [numpy.zeros(array.shape, dtype=dtype)]
    movement = [0.0]
    for step in range(1, steps + 1):
        _, output, grads = network.loss_and_gradients(patches, target)
        if step > 1:
            outputs.append(backend.to_host(output).reshape(array.shape))
        for weight, grad, (first, second) in zip(network.parameters, grads, moments, strict=True):
            if optimizer == "gd":
                grad *= learning_rate
                weight -= grad
            else:
                first *= 0.9
                first += 0.1 * grad
                second *= 0.999
                grad *= grad
                second += 0.001 * grad
                denominator = xp.sqrt(second / (1 - 0.999**step))
                denominator += 1e-8
                weight -= (learning_rate / (1 - 0.9**step)) * first / denominator
        movement.append(network.hidden_movement())
        if progress is not None:
            progress(step, steps)
    outputs.append(backend.to_host(network.output(patches)).reshape(array.shape))
    return Training(outputs=outputs, movement=movement, learning_rate=float(learning_rate), network=network,
                    patches=patches)


def ntk_filter(image: numpy.ndarray, *, depth: int = 1, patch: int = 3) -> Any:
    """nlfilt's global ntk filter ``W = K / lambda_max`` of ``image`` (float64, CPU): a
    :class:`~nlfilt.filters.Filter` that keeps ``K``."""
    from nlfilt.api import prepare  # noqa: PLC0415 - avoids an import cycle at package import
    from nlfilt.filters import build_filter  # noqa: PLC0415

    backend, array, options = prepare(image, kernel="ntk", patch=patch, window=None, h=None, sigma=None,
                                      depth=depth, device="cpu", dtype=numpy.float64,
                                      memory_budget=2**28)
    return build_filter(backend, array, options, reuse=True)


def ntk_twicing(image: numpy.ndarray, *, depth: int = 1, patch: int = 3,
                steps: int = 100) -> tuple[list[numpy.ndarray], float]:
    """The closed-form trajectory ``z_t``, ``t = 0 .. steps``, of the global ntk filter, and ``lambda_max``.

    Plain twicing with one filter (float64, CPU), so ``lambda_max`` is the one
    :func:`train`'s gradient descent should use (``learning_rate = 1 / lambda_max``).
    """
    filter_ = ntk_filter(image, depth=depth, patch=patch)
    array = numpy.asarray(image, dtype=numpy.float64)
    flat = array.reshape(array.shape[0] * array.shape[1], -1)
    estimates = [numpy.zeros_like(flat)]
    for _ in range(steps):
        estimates.append(estimates[-1] + filter_.apply(flat - estimates[-1]))
    eigenvalue = filter_.compute_eigenvalue(numpy.float64)
    return [estimate.reshape(array.shape) for estimate in estimates], eigenvalue


def ntk_eigenvalue(image: numpy.ndarray, *, depth: int = 1, patch: int = 3) -> float:
    """``lambda_max`` of nlfilt's global ntk kernel ``K`` of ``image`` (float64, CPU)."""
    return ntk_twicing(image, depth=depth, patch=patch, steps=0)[1]
