"""A ReLU CNN in NumPy whose infinite-width tangent kernel is nlfilt's ``'ntk'`` kernel.

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
``f = 0`` at the start (twicing's ``z_0 = 0``) and its tangent kernel is that of
``g``.  Trained on the squared loss ``|f - y|^2 / 2`` by full-batch gradient
descent with learning rate ``1 / lambda_max(K)``, it follows nlfilt's twicing
``z_t = z_{t-1} + K / lambda_max (y - z_{t-1})`` ever more closely as the width
grows; Adam moves the weights further and adapts the kernel.

Explicit forward and backward passes, no deep-learning framework.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy

from nlfilt.patches import patch_matrix

OPTIMIZERS = ("gd", "adam")
#: Adam's default learning rate (per-weight step; weights are standard Gaussian).
ADAM_LEARNING_RATE = 1e-3


def image_patches(image: numpy.ndarray, patch: int) -> numpy.ndarray:
    """(N, patch*patch*C) reflect-padded patches, the network's input (the same as nlfilt's filters use)."""
    array = numpy.asarray(image, dtype=numpy.float64)
    if array.ndim == 2:
        array = array[:, :, None]
    return patch_matrix(numpy, array, patch)


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
        Seed of the standard Gaussian initial weights.
    dtype : numpy.float64 or numpy.float32
        Precision of the weights.
    """

    def __init__(self, dims: int, width: int, depth: int, channels: int = 1, seed: int = 0,
                 dtype: Any = numpy.float64) -> None:
        rng = numpy.random.default_rng(seed)
        shapes = [(dims, width)] + [(width, width)] * (depth - 1) + [(width, channels)]
        initial = [rng.standard_normal(shape).astype(dtype) for shape in shapes]
        self.width = width
        self.depth = depth
        self.copies = [[weight.copy() for weight in initial], [weight.copy() for weight in initial]]
        self.initial = initial

    @property
    def parameters(self) -> list[numpy.ndarray]:
        """Every weight array: copy a's layers, then copy b's."""
        return self.copies[0] + self.copies[1]

    def _forward(self, weights: list[numpy.ndarray], patches: numpy.ndarray) -> tuple[numpy.ndarray, list]:
        scale = 1 / math.sqrt(self.width)
        pre = patches @ weights[0]
        cache = [(patches, pre)]
        for weight in weights[1:-1]:
            activation = math.sqrt(2) * numpy.maximum(pre, 0)
            pre = (activation @ weight) * scale
            cache.append((activation, pre))
        activation = math.sqrt(2) * numpy.maximum(pre, 0)
        cache.append((activation, None))
        return (activation @ weights[-1]) * scale, cache

    def _backward(self, weights: list[numpy.ndarray], cache: list, upstream: numpy.ndarray) -> list:
        """Gradients of ``sum(upstream * g)`` with respect to ``weights``."""
        scale = 1 / math.sqrt(self.width)
        activation = cache[-1][0]
        grads = [None] * len(weights)
        grads[-1] = activation.T @ upstream * scale
        back = upstream @ weights[-1].T * scale  # d/d activation of the last ReLU layer
        for layer in range(len(weights) - 2, -1, -1):
            inputs, pre = cache[layer]
            back = back * (math.sqrt(2) * (pre > 0))  # d/d pre-activation of this layer
            factor = 1.0 if layer == 0 else scale
            grads[layer] = inputs.T @ back * factor
            if layer:
                back = back @ weights[layer].T * factor
        return grads

    def output(self, patches: numpy.ndarray) -> numpy.ndarray:
        """``f`` on the (N, d) patches: (N, channels)."""
        first, _ = self._forward(self.copies[0], patches)
        second, _ = self._forward(self.copies[1], patches)
        return (first - second) / math.sqrt(2)

    def loss_and_gradients(self, patches: numpy.ndarray,
                           target: numpy.ndarray) -> tuple[float, numpy.ndarray, list[numpy.ndarray]]:
        """(``|f - y|^2 / 2``, ``f``, gradients of the loss for :attr:`parameters`)."""
        first, cache_a = self._forward(self.copies[0], patches)
        second, cache_b = self._forward(self.copies[1], patches)
        output = (first - second) / math.sqrt(2)
        residual = output - target
        grads_a = self._backward(self.copies[0], cache_a, residual / math.sqrt(2))
        grads_b = self._backward(self.copies[1], cache_b, -residual / math.sqrt(2))
        return 0.5 * float(numpy.sum(residual**2)), output, grads_a + grads_b

    def hidden_movement(self) -> float:
        """``|W - W_0| / |W_0|`` over the hidden layers (all but the output layer) of both copies."""
        moved = sum(float(numpy.sum((layer - start) ** 2)) for copy in self.copies
                    for layer, start in zip(copy[:-1], self.initial[:-1], strict=True))
        size = 2 * sum(float(numpy.sum(start**2)) for start in self.initial[:-1])
        return math.sqrt(moved / size)


@dataclass
class Training:
    """The outputs of a training run: ``outputs[t]`` is ``f`` after ``t`` steps (``outputs[0] = 0``)."""

    outputs: list[numpy.ndarray]
    movement: list[float]  # hidden-layer movement after each step (index t)
    learning_rate: float
    network: TangentCNN = field(repr=False)


def train(image: numpy.ndarray, *, width: int, depth: int = 1, patch: int = 3, steps: int = 100,
          optimizer: str = "gd", learning_rate: float | None = None, eigenvalue: float | None = None,
          seed: int = 0, dtype: Any = numpy.float64,
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
    dtype : numpy.float64 or numpy.float32
        Precision of the weights and activations (float32 halves the time of wide runs).
    progress : callable, optional
        ``progress(t, steps)`` after each step.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {optimizer!r}")
    array = numpy.asarray(image, dtype=numpy.float64)
    target = array.reshape(array.shape[0] * array.shape[1], -1).astype(dtype)
    patches = image_patches(array, patch).astype(dtype)
    network = TangentCNN(patches.shape[1], width, depth, target.shape[1], seed, dtype)
    if learning_rate is None:
        if optimizer == "adam":
            learning_rate = ADAM_LEARNING_RATE
        elif eigenvalue is None:
            raise ValueError("gradient descent needs learning_rate or eigenvalue (lambda_max of the ntk "
                             "kernel, see ntk_eigenvalue)")
        else:
            learning_rate = 1 / eigenvalue
    moments = [(numpy.zeros_like(w), numpy.zeros_like(w)) for w in network.parameters]
    outputs = [numpy.zeros_like(target)]
    movement = [0.0]
    for step in range(1, steps + 1):
        _, _, grads = network.loss_and_gradients(patches, target)
        for weight, grad, (first, second) in zip(network.parameters, grads, moments, strict=True):
            if optimizer == "gd":
                weight -= learning_rate * grad
            else:
                first *= 0.9
                first += 0.1 * grad
                second *= 0.999
                second += 0.001 * grad**2
                corrected = first / (1 - 0.9**step)
                weight -= learning_rate * corrected / (numpy.sqrt(second / (1 - 0.999**step)) + 1e-8)
        outputs.append(network.output(patches))
        movement.append(network.hidden_movement())
        if progress is not None:
            progress(step, steps)
    shape = array.shape
    return Training(outputs=[output.reshape(shape) for output in outputs], movement=movement,
                    learning_rate=float(learning_rate), network=network)


def ntk_twicing(image: numpy.ndarray, *, depth: int = 1, patch: int = 3,
                steps: int = 100) -> tuple[list[numpy.ndarray], float]:
    """The closed-form trajectory ``z_t``, ``t = 0 .. steps``, of the global ntk filter, and ``lambda_max``.

    Plain twicing with one filter (float64, CPU), so ``lambda_max`` is the one
    :func:`train`'s gradient descent should use (``learning_rate = 1 / lambda_max``).
    """
    from nlfilt.api import prepare  # noqa: PLC0415 - avoids an import cycle at package import
    from nlfilt.filters import build_filter  # noqa: PLC0415

    backend, array, options = prepare(image, kernel="ntk", patch=patch, window=None, h=None, sigma=None,
                                      depth=depth, device="cpu", dtype=numpy.float64,
                                      memory_budget=2**28)
    filter_ = build_filter(backend, array, options, reuse=True)
    flat = array.reshape(-1, array.shape[2])
    estimates = [numpy.zeros_like(flat)]
    for _ in range(steps):
        estimates.append(estimates[-1] + filter_.apply(flat - estimates[-1]))
    shape = numpy.shape(image)
    return [estimate.reshape(shape) for estimate in estimates], filter_.compute_eigenvalue(numpy.float64)


def ntk_eigenvalue(image: numpy.ndarray, *, depth: int = 1, patch: int = 3) -> float:
    """``lambda_max`` of nlfilt's global ntk kernel ``K`` of ``image`` (float64, CPU)."""
    return ntk_twicing(image, depth=depth, patch=patch, steps=0)[1]
