"""Automatic stopping, Sinkhorn normalisation, Krylov trajectories and guided filtering."""

from __future__ import annotations

import functools

import imageio.v3 as iio
import numpy
import pytest

import nlfilt
from nlfilt.filters import SINKHORN_TOL, build_filter
from nlfilt.linalg import BlockLanczos
from nlfilt.resolve import GUIDE_H_PER_SIGMA, prepare
from nlfilt.stopping import KrylovTrajectory, auto_twicing, stop_rule

import reference
from conftest import to_host

RNG = numpy.random.default_rng(5)


def psnr(estimate, clean) -> float:
    return float(10 * numpy.log10(255**2 / numpy.mean((numpy.asarray(estimate, float) - clean) ** 2)))


def synthetic(size: int, seed: int) -> numpy.ndarray:
    """A clean test scene: ramps, a bright square, a disc and a stripe texture, 0..255."""
    rows, cols = numpy.mgrid[:size, :size] / size
    scene = 60 + 80 * rows + 40 * cols
    scene[(rows > 0.2) & (rows < 0.5) & (cols > 0.15) & (cols < 0.45)] += 70
    scene[(rows - 0.7) ** 2 + (cols - 0.65) ** 2 < 0.04] -= 50
    scene += 25 * (numpy.sin(2 * numpy.pi * (cols * 6 + seed)) > 0) * (rows > 0.8)
    return scene


def test_block_lanczos_bases_are_orthonormal_and_tridiagonalise():
    matrix = RNG.standard_normal((60, 60))
    matrix = matrix @ matrix.T
    start = RNG.standard_normal((60, 3))
    start[:, 2] = 0  # a zero column gets an empty basis
    lanczos = BlockLanczos(numpy, lambda block: matrix @ block, start)
    for _ in range(12):
        lanczos.step()
    for column in range(2):
        basis = lanczos.basis(column)
        assert numpy.allclose(basis @ basis.T, numpy.eye(12), atol=1e-10)
        assert numpy.allclose(basis @ matrix @ basis.T, lanczos.tridiagonal(column), atol=1e-8)
    assert lanczos.steps[2] == 0


def test_block_lanczos_stops_on_an_invariant_subspace():
    matrix = numpy.diag([1.0, 2.0, 3.0, 4.0])
    lanczos = BlockLanczos(numpy, lambda block: matrix @ block, numpy.array([[1.0], [1.0], [0.0], [0.0]]))
    for _ in range(4):
        lanczos.step()
    assert lanczos.done and lanczos.steps[0] == 2
    assert numpy.allclose(numpy.linalg.eigvalsh(lanczos.tridiagonal(0)), [1.0, 2.0])


TRAJECTORY_CASES = {
    "arccos": {"kernel": "arccos"},
    "ntk depth 2": {"kernel": "ntk", "depth": 2},
    "nlm sinkhorn": {"kernel": "nlm", "normalize": "sinkhorn", "h": 20.0, "sigma": 20.0},
    "nlm rows": {"kernel": "nlm", "h": 20.0, "sigma": 20.0},
}


@pytest.mark.parametrize("case", list(TRAJECTORY_CASES))
def test_krylov_trajectory_matches_plain_twicing_up_to_1000_steps(case):
    noisy = synthetic(24, 0) + RNG.normal(0, 20, (24, 24))
    options = dict(TRAJECTORY_CASES[case], patch=3, window=None, device="cpu", dtype=numpy.float64)
    backend, image, resolved = prepare(noisy, memory_budget=2**26, **{"h": None, "sigma": None,
                                                                        "depth": 1, **options})
    flat = image.reshape(-1, 1)
    fast = build_filter(backend, image, resolved, reuse=True)
    trajectory = KrylovTrajectory(fast, flat, max_iterations=1000)
    while trajectory.horizon < 1000:
        trajectory.step()
    applications = fast.applications
    weights = fast.dense()  # the same W (for arccos/ntk: K over the Ritz value the trajectory found)
    estimate = numpy.zeros_like(flat)
    worst = 0.0
    for step in range(1, 1001):
        estimate = estimate + weights @ (flat - estimate)
        error = numpy.linalg.norm(trajectory.estimate(step) - estimate) / numpy.linalg.norm(estimate)
        worst = max(worst, error)
        if step in (1, 10, 100, 1000):
            residual = numpy.sum((flat - estimate) ** 2) / flat.size
            assert trajectory.residual[step - 1] == pytest.approx(residual, rel=1e-3)
    assert worst <= 1e-3
    assert applications <= 100  # at most 10% of the 1000 products plain twicing takes


@pytest.mark.parametrize("options", [{"kernel": "ntk", "depth": 2}, {"kernel": "nlm", "window": 5}],
                         ids=["ntk global", "nlm windowed"])
def test_public_trajectory_matches_denoise(options):
    noisy = numpy.random.default_rng(4).random((20, 20, 2)) * 255
    path = nlfilt.twicing_trajectory(noisy, 40, device="cpu", dtype=numpy.float64, **options)
    assert path.iterations == 40 and len(path.residual) == 40
    for step in (1, 7, 40):
        plain = nlfilt.denoise(noisy, iterations=step, device="cpu", dtype=numpy.float64, **options)
        # ntk: denoise finds lambda_max by its own Lanczos run (bound 1e-3), the trajectory by its Ritz value
        tol = 1e-4 if options["kernel"] == "nlm" else 1e-3
        assert path.estimate(step).shape == noisy.shape
        assert numpy.abs(path.estimate(step) - plain).max() <= tol * numpy.abs(plain).max()


def test_sinkhorn_filter_is_symmetric_and_doubly_stochastic():
    noisy = synthetic(20, 1) + RNG.normal(0, 15, (20, 20))
    for window in (None, 7):
        options = {"kernel": "nlm", "patch": 3, "window": window, "h": 15.0, "sigma": 15.0}
        weights = nlfilt.filter_matrix(noisy, normalize="sinkhorn", dtype=numpy.float64, device="cpu",
                                       **options)
        assert numpy.allclose(weights, weights.T, atol=1e-12)
        assert numpy.abs(weights.sum(axis=1) - 1).max() <= SINKHORN_TOL
        # W = D K D with the reference K: the scaling is recovered from the diagonal
        affinity = reference.affinity(noisy, **options)
        scaling = numpy.sqrt(numpy.diag(weights) / numpy.diag(affinity))
        assert numpy.allclose(weights, scaling[:, None] * affinity * scaling[None, :], rtol=1e-9)
        row = nlfilt.filter_row(noisy, (4, 5), normalize="sinkhorn", dtype=numpy.float64, device="cpu",
                                **options)
        assert numpy.allclose(row.reshape(-1), weights[4 * 20 + 5], rtol=1e-9)
        single = nlfilt.denoise(noisy, normalize="sinkhorn", dtype=numpy.float64, device="cpu", **options)
        assert numpy.allclose(single.reshape(-1), weights @ noisy.reshape(-1), rtol=1e-9)


def _oracle(noisy, clean, sigma, options, steps):
    """SURE's choice against the oracle for the same filter.

    Returns (chosen t, oracle t, PSNR gap in dB, info.risk, true MSE per
    pixel over the steps info.risk covers).  The oracle trajectory is plain
    twicing in the windowed mode and a Krylov trajectory (checked against
    plain twicing above) in the global mode.
    """
    auto, info = nlfilt.denoise(noisy, iterations="auto", sigma=sigma, return_info=True, device="cpu",
                                dtype=numpy.float64, **options)
    backend, image, resolved = prepare(noisy, sigma=sigma, device="cpu", dtype=numpy.float64,
                                       memory_budget=2**26, iterations="auto",
                                       **{"h": None, "depth": 1, **options})
    filter_ = build_filter(backend, image, resolved, reuse=True)
    flat = image.reshape(-1, image.shape[2])
    if options["window"] is None:
        trajectory = KrylovTrajectory(filter_, flat, max_iterations=steps)
        while trajectory.horizon < steps:
            trajectory.step()
        estimates = (trajectory.estimate(step) for step in range(1, steps + 1))
    else:
        estimates = twicing_steps(filter_, flat, steps)
    errors = numpy.array([numpy.mean((estimate.reshape(clean.shape) - clean) ** 2) for estimate in estimates])
    scores = 10 * numpy.log10(255**2 / errors)
    chosen = info.iterations
    assert psnr(auto, clean) == pytest.approx(scores[chosen - 1], abs=1e-4)
    oracle = int(numpy.argmax(scores)) + 1
    return chosen, oracle, scores[oracle - 1] - scores[chosen - 1], info.risk, errors[: len(info.risk)]


def twicing_steps(filter_, flat, steps):
    estimate = numpy.zeros_like(flat)
    for _ in range(steps):
        estimate = estimate + filter_.apply(flat - estimate)
        yield estimate


def texture(size: int, seed: int) -> numpy.ndarray:
    """A smooth periodic texture, 0..255, that an over-smoothing filter blurs: twicing must restore it
    over several steps, so the best step is well above 1 for every filter below."""
    rows, cols = numpy.mgrid[:size, :size].astype(float)
    waves = numpy.sin(2 * numpy.pi * cols / (9 + seed)) * numpy.cos(2 * numpy.pi * rows / (13 - seed))
    return 128 + 50 * waves + 30 * numpy.sin(2 * numpy.pi * (rows + cols) / 17)


#: Modes of automatic stopping: options, steps the oracle looks at, seeds, and the bound on the mean
#: PSNR gap to the oracle (measured mean gap in the comment: the bound is about 1.5-2x it).  NLM's
#: large h over-smooths on purpose, so that its best step is above 1.
STOPPING_MODES = {
    "nlm windowed": ({"kernel": "nlm", "window": 11, "patch": 5, "h": 75.0}, 20, 6, 0.03),  # 0.013 dB
    "nlm windowed sinkhorn": ({"kernel": "nlm", "window": 11, "patch": 5, "h": 75.0, "normalize": "sinkhorn"},
                              20, 6, 0.03),  # 0.016 dB
    "nlm global": ({"kernel": "nlm", "window": None, "patch": 5, "h": 50.0}, 40, 6, 0.08),  # 0.046 dB
    "arccos global": ({"kernel": "arccos", "window": None, "patch": 3}, 200, 6, 0.04),  # 0.023 dB
    "ntk global": ({"kernel": "ntk", "window": None, "patch": 3}, 200, 4, 0.04),
}


@functools.cache
def stopping_runs(mode: str) -> list[tuple]:
    """:func:`_oracle` on 40x40 textures with noise of sigma 25, one per seed (computed once per mode)."""
    options, steps, seeds, _ = STOPPING_MODES[mode]
    runs = []
    for seed in range(seeds):
        clean = texture(40, seed)
        noisy = clean + numpy.random.default_rng(seed).normal(0, 25, clean.shape)
        runs.append(_oracle(noisy, clean, 25.0, options, steps))
    return runs


@pytest.mark.parametrize("mode", list(STOPPING_MODES))
def test_sure_stops_near_the_best_step(mode):
    runs = stopping_runs(mode)
    chosen = [run[0] for run in runs]
    oracle = [run[1] for run in runs]
    gaps = [run[2] for run in runs]
    assert min(oracle) >= 3, oracle  # scenes on which stopping at t = 1 (or 2) is wrong
    assert numpy.mean(gaps) <= STOPPING_MODES[mode][3], gaps
    if mode.startswith("nlm"):  # a sharp optimum: the step itself must be close
        assert all(abs(a - b) <= 2 for a, b in zip(chosen, oracle, strict=True)), (chosen, oracle)
    else:  # a flat optimum (within 0.1 dB over tens of steps): the loss is what counts
        assert max(gaps) <= 0.15, gaps


@pytest.mark.parametrize("mode", list(STOPPING_MODES))
def test_sure_risk_tracks_the_true_error_on_average(mode):
    ratios = [run[3][:3] / run[4][:3] for run in stopping_runs(mode)]  # t = 1, 2, 3
    assert abs(numpy.mean(ratios) - 1) <= 0.1, numpy.mean(ratios, axis=0)


def test_sure_waits_out_a_local_rise_before_taking_the_minimum():
    # risk = residual - sigma^2 + 2 sigma^2 div / count; with div = 0 the risk is residual - 1
    risk = numpy.array([5, 4, 3, 3.1, 2.5, 2, 1.9, 2.2, 2.5, 2.8, 3.0, 3.2, 3.4]) + 1.0
    divergence = numpy.zeros_like(risk)
    picks = [stop_rule("sure").choose(risk[:steps], divergence[:steps], 1.0, 1, final=False)
             for steps in range(1, len(risk) + 1)]
    first = next(index for index, pick in enumerate(picks) if pick is not None)
    assert picks[first] == 7 and first + 1 == 10  # t = 7, decided once SURE rose for 3 steps past it
    assert stop_rule("sure").choose(risk[:5], divergence[:5], 1.0, 1, final=True) == 5


def test_sure_on_natural_crops(set12):
    gaps = []
    for index, name in enumerate(("01.png", "05.png", "08.png")):
        clean = iio.imread(set12 / name).astype(float)[64:112, 64:112]
        noisy = clean + numpy.random.default_rng(index).normal(0, 25, clean.shape)
        gaps.append(_oracle(noisy, clean, 25.0, {"kernel": "nlm", "window": 11, "patch": 5}, 12)[2])
        gaps.append(_oracle(noisy, clean, 25.0, {"kernel": "arccos", "window": None, "patch": 3}, 300)[2])
    assert numpy.mean(gaps) <= 0.02, gaps  # measured 0.000 (nlm) and 0.002 dB (arccos) on average


@pytest.mark.parametrize("options", [
    {"window": 11, "h": 10.0}, {"window": None, "h": 60.0}, {"kernel": "arccos"},
], ids=["nlm windowed", "nlm global", "arccos global"])
def test_discrepancy_stops_at_the_first_step_below_the_noise_level(options):
    clean = synthetic(32, 2)
    noisy = clean + numpy.random.default_rng(0).normal(0, 20, clean.shape)
    _, info = nlfilt.denoise(noisy, iterations="auto", stop="discrepancy", sigma=20.0, return_info=True,
                             device="cpu", **options)
    residual = info.residual
    assert info.stop == "discrepancy" and info.risk is None
    assert len(residual) > info.iterations or options.get("window") == 11  # the global curves run past t
    assert residual[info.iterations - 1] <= 1.0 * 20.0**2  # DISCREPANCY_FACTOR = 1, as documented
    assert info.iterations == 1 or residual[info.iterations - 2] > 1.0 * 20.0**2


def test_auto_report_and_progress():
    noisy = synthetic(32, 0) + numpy.random.default_rng(1).normal(0, 20, (32, 32))
    calls = []
    estimate, info = nlfilt.denoise(noisy, iterations="auto", return_info=True, device="cpu",
                                    progress=lambda done, total: calls.append((done, total)))
    assert estimate.shape == noisy.shape and info.iterations >= 1
    assert info.stop == "sure" and info.sigma == pytest.approx(20, rel=0.2)
    assert len(info.risk) == len(info.residual) >= info.iterations
    assert int(numpy.argmin(info.risk)) + 1 == info.iterations
    assert calls and calls[-1] == (info.applications, info.applications)  # products with K
    fixed = nlfilt.denoise(noisy, iterations=info.iterations, device="cpu")
    assert numpy.allclose(estimate, fixed, atol=1e-3)


def test_noise_free_image_takes_one_step():
    flat = numpy.full((16, 16), 7.0)
    estimate, info = nlfilt.denoise(flat, kernel="arccos", iterations="auto", sigma=0.0, return_info=True,
                                    device="cpu")
    assert info.iterations == 1 and numpy.allclose(estimate, flat, rtol=1e-4)


def test_guided_filter_is_the_pilot_filter_applied_to_the_noisy_image():
    clean = synthetic(24, 1)
    noisy = clean + numpy.random.default_rng(2).normal(0, 20, clean.shape)
    options = {"kernel": "nlm", "patch": 3, "window": 7, "h": 16.0, "sigma": 20.0}
    guided, info = nlfilt.denoise(noisy, guide="pilot", iterations=2, return_info=True, device="cpu",
                                  dtype=numpy.float64, **options)
    pilot = reference.twicing(noisy, 2, **options)
    weights = reference.filter_matrix(pilot, **dict(options, h=GUIDE_H_PER_SIGMA * 20.0, sigma=0.0, patch=3))
    expected = numpy.zeros(noisy.size)
    for _ in range(2):
        expected = expected + weights @ (noisy.reshape(-1) - expected)
    assert info.pilot_iterations == 2 and info.iterations == 2
    assert numpy.allclose(to_host(guided).reshape(-1), expected, rtol=1e-9, atol=1e-9)


def test_guided_auto_runs_two_passes_with_their_own_stopping():
    clean = synthetic(48, 0)
    noisy = clean + numpy.random.default_rng(3).normal(0, 25, clean.shape)
    guided, info = nlfilt.denoise(noisy, guide="pilot", iterations="auto", sigma=25.0, return_info=True,
                                  device="cpu")
    assert info.pilot_iterations >= 1 and info.iterations >= 1
    assert psnr(guided, clean) > psnr(noisy, clean) + 5


@pytest.mark.parametrize("options", [
    {"kernel": "nlm"},
    {"kernel": "nlm", "normalize": "sinkhorn", "window": None},
    {"kernel": "arccos"},
], ids=["nlm windowed", "nlm sinkhorn global", "arccos global"])
@pytest.mark.gpu
def test_automatic_stopping_agrees_across_backends(options, gpu):
    clean = synthetic(32, 2)
    noisy = clean + numpy.random.default_rng(6).normal(0, 20, clean.shape)
    expected, expected_info = nlfilt.denoise(noisy, iterations="auto", sigma=20.0, return_info=True,
                                             device="cpu", dtype=numpy.float64, **options)
    actual, info = nlfilt.denoise(noisy, iterations="auto", sigma=20.0, return_info=True, device=gpu,
                                  dtype=numpy.float64, **options)
    assert info.iterations == expected_info.iterations
    assert numpy.allclose(to_host(actual), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("krylov", [False, True], ids=["stepping", "krylov"])
@pytest.mark.parametrize("max_iterations", [1, 5])
def test_sure_without_a_twin_is_a_clear_error(krylov, max_iterations):
    noisy = synthetic(16, 0) + numpy.random.default_rng(0).normal(0, 10, (16, 16))
    backend, image, resolved = prepare(noisy, kernel="nlm", patch=3, window=5, h=None, sigma=10.0, depth=1,
                                       device="cpu", dtype=numpy.float64, memory_budget=2**24,
                                       iterations="auto")
    filter_ = build_filter(backend, image, resolved, reuse=True)
    with pytest.raises(ValueError, match="twin"):
        auto_twicing(filter_, image.reshape(-1, 1), sigma=10.0, rule="sure", twin=None,
                     max_iterations=max_iterations, krylov=krylov)
    with pytest.raises(ValueError, match="rule"):
        auto_twicing(filter_, image.reshape(-1, 1), sigma=10.0, rule="oracle", max_iterations=max_iterations)


def test_the_lanczos_bases_of_automatic_stopping_fit_the_memory_budget(monkeypatch):
    clean = texture(24, 1)
    noisy = clean + numpy.random.default_rng(1).normal(0, 25, clean.shape)
    backend, image, resolved = prepare(noisy, kernel="nlm", patch=3, window=None, h=60.0, sigma=25.0, depth=1,
                                       device="cpu", dtype=numpy.float64, memory_budget=2**24,
                                       iterations="auto")
    flat = image.reshape(-1, 1)
    step_bytes = flat.size * 8
    filter_ = build_filter(backend, image, resolved, reuse=True)
    trajectory = KrylovTrajectory(filter_, flat, max_iterations=1000, basis_budget=12 * step_bytes)
    while not trajectory.exhausted:
        trajectory.step()
    assert len(trajectory.lanczos.alphas) == 12 and trajectory.max_steps == 12
    # denoise hands each of its two runs half of memory_budget
    import nlfilt.stopping as stopping

    budgets = []
    original = stopping.KrylovTrajectory.__init__

    def recording(self, *args, **kwargs):
        budgets.append(kwargs.get("basis_budget"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(stopping.KrylovTrajectory, "__init__", recording)
    nlfilt.denoise(noisy, kernel="arccos", iterations="auto", sigma=25.0, device="cpu",
                   memory_budget=3_000_000)
    assert budgets == [1_500_000, 1_500_000]
