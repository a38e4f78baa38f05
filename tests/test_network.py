"""The NumPy tangent CNN: its gradients, and gradient descent following nlfilt's ntk filter."""

from __future__ import annotations

import numpy
import pytest

import nlfilt
from nlfilt.network import TangentCNN, image_patches, ntk_eigenvalue, train

RNG = numpy.random.default_rng(11)
IMAGE = numpy.add.outer(numpy.linspace(50, 200, 12), numpy.linspace(0, 40, 12)) + RNG.normal(0, 20, (12, 12))


def relative(a, b) -> float:
    return float(numpy.linalg.norm(a - b) / numpy.linalg.norm(b))


@pytest.mark.parametrize("depth", [1, 3])
def test_backward_pass_matches_finite_differences(depth):
    image = RNG.random((6, 7, 2)) * 100
    network = TangentCNN(3 * 3 * 2, 12, depth, channels=2, seed=depth)
    for layer in network.copies[1]:  # make the copies differ, so f != 0 and both get gradients
        layer += 0.3 * RNG.standard_normal(layer.shape)
    patches, target = image_patches(image, 3), image.reshape(-1, 2)
    _, _, grads = network.loss_and_gradients(patches, target)
    for weight, grad in zip(network.parameters, grads, strict=True):
        for _ in range(3):
            index = tuple(int(RNG.integers(0, extent)) for extent in weight.shape)
            original = weight[index]
            weight[index] = original + 1e-5
            plus = network.loss_and_gradients(patches, target)[0]
            weight[index] = original - 1e-5
            minus = network.loss_and_gradients(patches, target)[0]
            weight[index] = original
            numerical = (plus - minus) / 2e-5
            assert grad[index] == pytest.approx(numerical, rel=1e-5, abs=1e-6 * numpy.abs(grad).max())


def test_network_starts_from_zero_output():
    network = TangentCNN(9, 32, 2)
    assert numpy.all(network.output(image_patches(IMAGE, 3)) == 0)


@pytest.mark.parametrize("depth", [1, 2])
def test_gradient_descent_follows_the_ntk_filter_and_more_closely_when_wider(depth):
    eigenvalue = ntk_eigenvalue(IMAGE, depth=depth)
    closed_form = nlfilt.denoise(IMAGE, kernel="ntk", depth=depth, iterations=10, device="cpu",
                                 dtype=numpy.float64)
    wide = train(IMAGE, width=2048, depth=depth, steps=10, eigenvalue=eigenvalue, seed=1)
    narrow = train(IMAGE, width=128, depth=depth, steps=10, eigenvalue=eigenvalue, seed=1)
    assert wide.learning_rate == pytest.approx(1 / eigenvalue)
    assert relative(wide.outputs[10], closed_form) <= 0.05
    assert relative(wide.outputs[10], closed_form) < relative(narrow.outputs[10], closed_form)
    # the first step is the one-shot filter W y
    one_shot = nlfilt.denoise(IMAGE, kernel="ntk", depth=depth, device="cpu", dtype=numpy.float64)
    assert relative(wide.outputs[1], one_shot) <= 0.05


def test_adam_moves_the_hidden_weights_further_than_gradient_descent():
    eigenvalue = ntk_eigenvalue(IMAGE)
    descent = train(IMAGE, width=256, steps=20, eigenvalue=eigenvalue)
    adam = train(IMAGE, width=256, steps=20, optimizer="adam", learning_rate=1e-2)
    # at a fit at least as close to y as gradient descent's, Adam's hidden weights moved several times more
    assert relative(adam.outputs[-1], IMAGE) <= relative(descent.outputs[-1], IMAGE)
    assert adam.movement[-1] > 3 * descent.movement[-1] > 0


def test_bad_optimizer_and_missing_step_are_clear_errors():
    with pytest.raises(ValueError, match="optimizer"):
        train(IMAGE, width=8, optimizer="sgd")
    with pytest.raises(ValueError, match="eigenvalue"):
        train(IMAGE, width=8)


def test_float32_training_matches_float64():
    eigenvalue = ntk_eigenvalue(IMAGE)
    single = train(IMAGE, width=64, steps=5, eigenvalue=eigenvalue, dtype=numpy.float32)
    double = train(IMAGE, width=64, steps=5, eigenvalue=eigenvalue)
    assert single.outputs[5].dtype == numpy.float32
    assert relative(single.outputs[5], double.outputs[5]) < 1e-4
