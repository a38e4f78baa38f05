"""The NumPy tangent CNN: its gradients, and gradient descent following nlfilt's ntk filter."""

from __future__ import annotations

import numpy
import pytest

import nlfilt
from nlfilt.network import (
    PARAMETRIZATIONS,
    TangentCNN,
    image_patches,
    ntk_closed_form,
    ntk_eigenvalue,
    train,
)

RNG = numpy.random.default_rng(11)
IMAGE = numpy.add.outer(numpy.linspace(50, 200, 12), numpy.linspace(0, 40, 12)) + RNG.normal(0, 20, (12, 12))


def relative(a, b) -> float:
    return float(numpy.linalg.norm(a - b) / numpy.linalg.norm(b))


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
@pytest.mark.parametrize("depth", [1, 3])
def test_backward_pass_matches_finite_differences(depth, parametrization):
    image = RNG.random((6, 7, 2)) * 100
    network = TangentCNN(3 * 3 * 2, 12, depth, channels=2, seed=depth, dtype=numpy.float64,
                         parametrization=parametrization)
    for layer in network.copies[1]:  # make the copies differ, so f != 0 and both get gradients
        layer += 0.3 * RNG.standard_normal(layer.shape)
    patches, target = image_patches(image, 3, dtype=numpy.float64), image.reshape(-1, 2)
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


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_tangent_kernel_is_the_product_of_the_jacobians(parametrization):
    """Theta[c, c', i, j] = <df_c(x_i)/dtheta, df_c'(x_j)/dtheta>, the Jacobian formed output by output;
    its largest eigenvalue is the power iteration's."""
    image = RNG.random((5, 6, 2)) * 10
    network = TangentCNN(3 * 3 * 2, 7, 3, channels=2, seed=4, dtype=numpy.float64,
                         parametrization=parametrization)
    for layer in network.copies[1]:
        layer += 0.3 * RNG.standard_normal(layer.shape)
    patches = image_patches(image, 3, dtype=numpy.float64)
    size = patches.shape[0]
    _, cache_a = network._forward(network.copies[0], patches)
    _, cache_b = network._forward(network.copies[1], patches)
    jacobian = numpy.zeros((2, size, sum(weight.size for weight in network.parameters)))
    for channel in range(2):
        for pixel in range(size):
            upstream = numpy.zeros((size, 2))
            upstream[pixel, channel] = 1 / numpy.sqrt(2)  # df/dg_a = 1/sqrt(2), df/dg_b = -1/sqrt(2)
            grads = (network._backward(network.copies[0], cache_a, upstream)
                     + network._backward(network.copies[1], cache_b, -upstream))
            jacobian[channel, pixel] = numpy.concatenate([grad.ravel() for grad in grads])
    expected = numpy.einsum("cip,djp->cdij", jacobian, jacobian)
    numpy.testing.assert_allclose(network.tangent_kernel(patches), expected, rtol=1e-10,
                                  atol=1e-12 * numpy.abs(expected).max())
    numpy.testing.assert_allclose(network.tangent_kernel(patches, slice(4, 11)), expected[:, :, 4:11],
                                  rtol=1e-10, atol=1e-12 * numpy.abs(expected).max())
    initial = network.tangent_kernel(patches, initial=True).transpose(0, 2, 1, 3).reshape(2 * size, 2 * size)
    assert network.kernel_eigenvalue(patches) == pytest.approx(numpy.linalg.eigvalsh(initial).max(), rel=1e-5)


def test_the_standard_parametrisation_draws_as_frameworks_do_and_has_no_forward_factors():
    network = TangentCNN(27, 64, 2, channels=3, seed=1, dtype=numpy.float64, parametrization="standard")
    for weight, fan_in in zip(network.initial, (27, 64, 64), strict=True):
        bound = 1 / numpy.sqrt(fan_in)
        assert numpy.abs(weight).max() <= bound and numpy.abs(weight).max() > 0.9 * bound
        assert weight.std() == pytest.approx(bound / numpy.sqrt(3), rel=0.1)  # uniform: bound / sqrt(3)
    patches = numpy.random.default_rng(8).random((10, 27))
    hidden = numpy.maximum(numpy.maximum(patches @ network.initial[0], 0) @ network.initial[1], 0)
    numpy.testing.assert_allclose(network._forward(network.initial, patches)[0], hidden @ network.initial[2])
    with pytest.raises(ValueError, match="parametrization must be one of"):
        TangentCNN(27, 8, 1, parametrization="mup")


def test_gradient_descent_in_the_standard_parametrisation_takes_its_own_kernels_step():
    image = numpy.random.default_rng(9).random((8, 8)) * 255
    run = train(image, width=256, steps=20, parametrization="standard")
    network = TangentCNN(9, 256, 1, parametrization="standard")
    eigenvalue = network.kernel_eigenvalue(image_patches(image, 3))
    assert run.learning_rate == pytest.approx(1 / eigenvalue, rel=1e-4)
    errors = [numpy.mean((output - image) ** 2) for output in run.outputs]
    assert errors[-1] < 0.5 * errors[0] and all(later <= earlier * 1.0001
                                                for earlier, later in zip(errors, errors[1:], strict=False))
    adam = train(image, width=256, steps=20, optimizer="adam", parametrization="standard")
    assert adam.learning_rate == 1e-2 and adam.kernel_change().movement > run.kernel_change().movement


@pytest.mark.parametrize("depth", [1, 2])
def test_initial_tangent_kernel_tends_to_the_ntk_kernel(depth):
    eigenvalue = ntk_eigenvalue(IMAGE, depth=depth)
    closed = nlfilt.filter_matrix(IMAGE, kernel="ntk", depth=depth, window=None) * eigenvalue  # K
    patches = image_patches(IMAGE, 3, dtype=numpy.float64)
    distance = {}
    for width in (128, 4096):
        network = TangentCNN(9, width, depth, seed=3, dtype=numpy.float64)
        kernel = network.tangent_kernel(patches, initial=True)
        distance[width] = relative(kernel[0, 0], closed)
    assert distance[4096] < 0.05
    assert distance[4096] < 0.5 * distance[128]


def test_gradient_descent_keeps_its_kernel_and_adam_moves_it():
    """The lazy regime: gradient descent's tangent kernel moves less the wider the network (so it
    follows the fixed filter); Adam's (learning rate 1e-2) does not, it adapts the filter."""
    eigenvalue = ntk_eigenvalue(IMAGE)
    moved = {}
    for width in (64, 1024):
        for optimizer in ("gd", "adam"):
            run = train(IMAGE, width=width, steps=100, optimizer=optimizer, eigenvalue=eigenvalue, seed=1)
            moved[optimizer, width] = run.kernel_change().movement
    assert moved["gd", 1024] < 0.3 * moved["gd", 64]
    assert moved["adam", 1024] > 0.5 * moved["adam", 64]
    assert moved["adam", 1024] > 5 * moved["gd", 1024]


def test_kernel_row_is_the_channel_mean_of_the_diagonal_blocks():
    image = RNG.random((6, 5, 3)) * 100
    run = train(image, width=16, steps=3, optimizer="adam", seed=2, dtype=numpy.float64)
    full = run.network.tangent_kernel(run.patches)
    expected = numpy.mean([full[c, c, 7] for c in range(3)], axis=0)
    numpy.testing.assert_allclose(run.kernel_row(7), expected, rtol=1e-12)
    initial = run.network.tangent_kernel(run.patches, initial=True)
    numpy.testing.assert_allclose(run.kernel_row(7, initial=True),
                                  initial[:, :, 7].trace(axis1=0, axis2=1) / 3, rtol=1e-12)


def test_kernel_change_matches_the_dense_kernels_and_splits_scale_from_shape(monkeypatch):
    image = RNG.random((6, 5, 2)) * 100
    run = train(image, width=24, depth=2, steps=4, optimizer="adam", seed=5, dtype=numpy.float64)
    before = run.network.tangent_kernel(run.patches, initial=True)
    after = run.network.tangent_kernel(run.patches)
    monkeypatch.setattr("nlfilt.network.KERNEL_ROW_BLOCK", 7)  # 30 rows: blocks of 7, 7, 7, 7, 2
    change = run.kernel_change()
    size = numpy.linalg.norm
    assert change.movement == pytest.approx(size(after - before) / size(before), rel=1e-9)
    assert change.scale == pytest.approx(size(after) / size(before), rel=1e-9)
    assert change.shape == pytest.approx(size(after / size(after) - before / size(before)), rel=1e-7)
    # the shape's change is the movement once the change of scale is taken out
    assert change.shape**2 == pytest.approx((change.movement**2 - (change.scale - 1) ** 2) / change.scale,
                                            rel=1e-9)
    assert change.shape > 0
    untrained = train(image, width=24, depth=2, steps=0, optimizer="adam", seed=5).kernel_change()
    assert (untrained.movement, untrained.scale, untrained.shape) == pytest.approx((0, 1, 0), abs=1e-6)


def test_a_small_kernel_change_survives_float32():
    """The change of a wide network's kernel under gradient descent is ~1e-3 of the kernel: summed in
    float32 the difference of squared norms would lose most of it."""
    eigenvalue = ntk_eigenvalue(IMAGE)
    changes = [train(IMAGE, width=2048, steps=2, eigenvalue=eigenvalue, seed=3, dtype=dtype).kernel_change()
               for dtype in (numpy.float32, numpy.float64)]
    assert changes[1].movement < 3e-3
    assert changes[0].movement == pytest.approx(changes[1].movement, rel=0.02)
    assert changes[0].shape == pytest.approx(changes[1].shape, rel=0.05)


def test_training_on_every_backend_matches_float64_on_the_cpu(device):
    eigenvalue = ntk_eigenvalue(IMAGE)
    reference = train(IMAGE, width=64, steps=5, eigenvalue=eigenvalue, dtype=numpy.float64)
    single = train(IMAGE, width=64, steps=5, eigenvalue=eigenvalue, device=device)
    assert isinstance(single.outputs[5], numpy.ndarray) and single.outputs[5].dtype == numpy.float32
    assert relative(single.outputs[5], reference.outputs[5]) < 1e-4
    assert single.kernel_change().movement == pytest.approx(reference.kernel_change().movement, rel=1e-3)


def test_network_starts_from_zero_output():
    network = TangentCNN(9, 32, 2)
    assert numpy.all(network.output(image_patches(IMAGE, 3, dtype=numpy.float64)) == 0)


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


@pytest.mark.parametrize(("arguments", "named"), [
    (dict(optimizer="sgd"), "optimizer"), (dict(dtype=numpy.float16), "dtype"),
    (dict(dtype="float16x"), "dtype"), (dict(width=0), "width"), (dict(depth=0), "depth"),
    (dict(steps=-1), "steps"), (dict(patch=4), "patch"), (dict(patch=15), "patch"),
    (dict(learning_rate=-1.0), "learning_rate"), (dict(eigenvalue=0.0), "eigenvalue"),
])
def test_bad_arguments_are_errors_naming_the_parameter(arguments, named):
    settings = dict(width=8, optimizer="gd", eigenvalue=1e6) | arguments
    with pytest.raises(ValueError, match=named):
        train(IMAGE, **settings)


def test_an_all_zero_image_is_a_clear_error_and_a_missing_step_the_networks_own():
    with pytest.raises(ValueError, match="all zeros"):
        train(numpy.zeros((6, 6)), width=8, optimizer="adam")
    own = train(IMAGE, width=64, steps=2)  # no eigenvalue: the network's own initial kernel's step
    network = TangentCNN(9, 64, 1)
    eigenvalue = network.kernel_eigenvalue(image_patches(IMAGE, 3))
    assert own.learning_rate == pytest.approx(1 / eigenvalue, rel=1e-4)


def test_kernel_change_from_sampled_rows_estimates_the_whole_kernels():
    """Whole images: the three squared norms from random rows, N / sample times their sums; all rows (or
    more) give the exact change, the same rows every call."""
    image = RNG.random((16, 16)) * 255
    run = train(image, width=64, depth=2, steps=20, optimizer="adam", seed=3, dtype=numpy.float64)
    exact = run.kernel_change()
    assert run.kernel_change(256) == exact and run.kernel_change(10_000) == exact
    half = run.kernel_change(128)
    assert half == run.kernel_change(128)
    for name in ("movement", "scale", "shape"):
        assert getattr(half, name) == pytest.approx(getattr(exact, name), rel=0.1), name
    assert half != exact
    with pytest.raises(ValueError, match="sample"):
        run.kernel_change(0)


def test_the_tent_windowed_closed_form_is_nlfilts_twicing():
    """Whole images' closed form: W = K / lambda_max within a tent window, z_t its plain twicing."""
    image = RNG.random((14, 15)) * 255
    closed = ntk_closed_form(image, depth=2, steps=3, window=7)
    for steps in (1, 3):
        expected = nlfilt.denoise(image, kernel="ntk", depth=2, patch=3, window=7, window_shape="tent",
                                  iterations=steps, device="cpu", dtype=numpy.float64)
        numpy.testing.assert_allclose(closed.trajectory[steps], expected, rtol=1e-9)
    assert closed.eigenvalue < ntk_eigenvalue(image, depth=2)  # the window drops pairs of positive weight
