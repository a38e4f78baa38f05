"""The collaborative filter: its transforms, matching, stages, API and command line."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy
import pytest
from click.testing import CliRunner

import nlfilt
from nlfilt import collaborative
from nlfilt.accelerate import accelerate
from nlfilt.backend import Backend, get_backend
from nlfilt.cli import main
from nlfilt.jit_groups import CompiledGroups

CPU = get_backend("cpu")
RNG = numpy.random.default_rng(21)
#: The noise level the implementations are compared at: no coefficient of the 8-bit test scenes then
#: lies exactly on the hard threshold (at 20, one does, and rounding decides it differently per
#: implementation).
SIGMA = 19.7


def psnr(estimate: numpy.ndarray, clean: numpy.ndarray) -> float:
    return float(10 * numpy.log10(255.0**2 / numpy.mean((numpy.clip(estimate, 0, 255) - clean) ** 2)))


def scene(height: int = 64, width: int = 72) -> numpy.ndarray:
    """A piecewise-smooth test image with edges and texture, values in [20, 235]."""
    rows, cols = numpy.mgrid[:height, :width]
    image = 120 + 60 * numpy.sin(cols / 5.0) * (rows > height // 3) + 50 * ((rows - cols) % 24 < 12)
    return numpy.clip(image, 20, 235).astype(numpy.float64)


def engines(shape, step=4, patch=8, workers=2):
    """The array code and the compiled implementation for images of ``shape``."""
    twin = collaborative.ArrayGroups(Backend("cpu", numpy, workers=workers), shape, patch=patch, step=step)
    return {"array": twin, "compiled": CompiledGroups(twin)}


def keys_by_brute_force(levels, row, col, patch, radius):
    """Every candidate of the reference at (row, col): {(row, col): key}, the key computed directly."""
    height, width = levels.shape
    side = 2 * radius + 1
    reference = levels[row:row + patch, col:col + patch].astype(numpy.int64)
    keys = {}
    for index, (dy, dx) in enumerate(collaborative.search_offsets(radius)):
        r, c = row + dy, col + dx
        if 0 <= r <= height - patch and 0 <= c <= width - patch:
            distance = int(((levels[r:r + patch, c:c + patch] - reference) ** 2).sum())
            keys[(r, c)] = -1 if (dy, dx) == (0, 0) else distance * side * side + index
    return keys


def brute_force_key_matrix(levels, rows, cols, patch, radius):
    """(references, offsets) keys by :func:`keys_by_brute_force`, INVALID_KEY for candidates outside."""
    offsets = collaborative.search_offsets(radius)
    matrix = numpy.full((rows.size * cols.size, len(offsets)), collaborative.INVALID_KEY, numpy.int64)
    for reference, (row, col) in enumerate((row, col) for row in rows for col in cols):
        keys = keys_by_brute_force(levels, row, col, patch, radius)
        for index, (dy, dx) in enumerate(offsets):
            matrix[reference, index] = keys.get((row + dy, col + dx), collaborative.INVALID_KEY)
    return matrix


def clipped_flat_scene(height=48, width=52, seed=0):
    """A noisy scene rounded and clipped to 8 bits, with saturated flat areas (many equal distances)."""
    image = scene(height, width) + numpy.random.default_rng(seed).normal(0, 30, (height, width))
    image[:, : width // 3] = 255.0
    image[-12:, :] = 0.0
    return numpy.clip(numpy.rint(image), 0, 255)


@pytest.mark.filterwarnings("ignore:Level value")  # PyWavelets: a full decomposition reaches the edges
def test_the_wavelet_matrices_are_those_of_pywavelets_periodic_decomposition():
    pywt = pytest.importorskip("pywt")
    for name, filters in (("bior1.5", collaborative.BIOR15), ("haar", collaborative.HAAR)):
        for size in (2, 8, 32):
            levels = size.bit_length() - 1
            columns = [numpy.concatenate(pywt.wavedec(unit, name, mode="periodization", level=levels))
                       for unit in numpy.eye(size)]
            expected = numpy.array(columns).T
            expected /= numpy.linalg.norm(expected, axis=1, keepdims=True)
            numpy.testing.assert_allclose(collaborative.wavelet_matrix(size, filters), expected, atol=1e-12)
    with pytest.raises(ValueError, match="power-of-two size, not 12"):
        collaborative.wavelet_matrix(12, collaborative.HAAR)


def test_the_biorthogonal_wavelet_matrix_has_pywavelets_values_without_pywavelets():
    """Rows of the 8-point matrix as PyWavelets gives them (wavedec, 'bior1.5', mode 'periodization',
    level 3, each row scaled to unit norm), so that a run without PyWavelets checks them too."""
    matrix = collaborative.wavelet_matrix(8, collaborative.BIOR15)
    a, b = 0.219417649252501, 0.449283757993216
    numpy.testing.assert_allclose(matrix[0], numpy.full(8, 8**-0.5), atol=1e-12)
    numpy.testing.assert_allclose(matrix[1], [a, b, b, a, -a, -b, -b, -a], atol=1e-12)
    numpy.testing.assert_allclose(matrix[4], [2**-0.5, -(2**-0.5), 0, 0, 0, 0, 0, 0], atol=1e-12)


def test_the_dct_haar_and_opponent_transforms_are_orthonormal():
    for size in (4, 8, 16):
        haar = collaborative.wavelet_matrix(size, collaborative.HAAR)
        for matrix in (collaborative.dct_matrix(size), haar):
            numpy.testing.assert_allclose(matrix @ matrix.T, numpy.eye(size), atol=1e-12)
    numpy.testing.assert_allclose(collaborative.OPPONENT @ collaborative.OPPONENT.T, numpy.eye(3), atol=1e-12)


@pytest.mark.parametrize("hard", [True, False])
@pytest.mark.parametrize("group", [16, 12])
def test_each_stage_transform_keeps_the_noise_level_and_the_mean_and_inverts(hard, group):
    transforms = collaborative._Transforms(numpy, 8, group, numpy.dtype(numpy.float64), hard=hard)
    forward = numpy.stack([transforms.forward(unit.reshape(1, group, 64), 1).ravel()
                           for unit in numpy.eye(group * 64)], axis=1)  # (coefficients, values)
    # unit-norm basis vectors: white noise of deviation sigma has deviation sigma in every coefficient
    numpy.testing.assert_allclose(numpy.linalg.norm(forward, axis=1), 1, atol=1e-12)
    numpy.testing.assert_allclose(forward[0], (group * 64) ** -0.5, atol=1e-12)  # the first: the mean
    orthonormal = not hard  # the biorthogonal wavelet is not orthogonal
    assert numpy.allclose(forward @ forward.T, numpy.eye(group * 64), atol=1e-10) == orthonormal
    groups = RNG.normal(size=(5, group, 64))
    numpy.testing.assert_allclose(transforms.inverse(transforms.forward(groups, 5)), groups, atol=1e-10)


def test_the_hard_stage_uses_the_biorthogonal_wavelet_on_patches_and_haar_along_the_group():
    forward_patch, inverse_patch, forward_group, inverse_group = collaborative.transform_matrices(8, 16, True)
    numpy.testing.assert_allclose(forward_patch, collaborative.wavelet_matrix(8, collaborative.BIOR15))
    numpy.testing.assert_allclose(forward_group, collaborative.wavelet_matrix(16, collaborative.HAAR))
    numpy.testing.assert_allclose(inverse_patch @ forward_patch, numpy.eye(8), atol=1e-12)
    wiener = collaborative.transform_matrices(8, 12, False)
    numpy.testing.assert_allclose(wiener[0], collaborative.dct_matrix(8))
    numpy.testing.assert_allclose(wiener[2], collaborative.dct_matrix(12))  # not a power of two: the DCT


def levels_of(image, sigma=10.0):
    """The matching levels of a gray image (its copy quantised, as the filter does)."""
    return collaborative.quantise(numpy, numpy.array(image, dtype=numpy.float64), sigma)


def test_the_guide_is_quantised_in_steps_of_the_noise_on_a_grid_anchored_at_zero():
    values = numpy.array([[2.0, 3.1], [-4.0, 6.49]])
    levels = levels_of(values, sigma=16.0)  # one level per unit
    numpy.testing.assert_array_equal(levels, [[2, 3], [-4, 6]])
    assert levels.dtype == numpy.int32
    numpy.testing.assert_array_equal(levels_of(values[1:], sigma=16.0), levels[1:])  # a crop: the same levels
    huge = levels_of(numpy.array([[1e9, -5e8]]), sigma=1.0)  # beyond MAX_LEVEL levels: coarser steps
    numpy.testing.assert_array_equal(huge, [[collaborative.MAX_LEVEL, -collaborative.MAX_LEVEL // 2]])


@pytest.mark.parametrize("name", ["array", "compiled"])
def test_groups_are_the_reference_then_candidates_by_distance_then_offset_index(name):
    """Against keys computed one by one: the reference first, the others in increasing key, so equal
    distances (the flat, clipped areas) are ranked by offset index."""
    levels = levels_of(clipped_flat_scene())
    height, width = levels.shape
    engine = engines((height, width, 1), step=3)[name]
    members = engine.match(levels, radius=5, group=12)
    references = [(row, col) for row in engine.twin.rows for col in engine.twin.cols] if name == "compiled" \
        else [(row, col) for row in engine.rows for col in engine.cols]
    assert members.shape == (len(references), 12) and members.dtype == numpy.int32
    for index, (row, col) in enumerate(references):
        keys = keys_by_brute_force(levels, row, col, 8, 5)
        expected = sorted(keys, key=keys.get)[:12]
        got = [divmod(int(member), width) for member in members[index]]
        assert got == expected, (row, col)


def test_the_choice_does_not_depend_on_the_selection_routine():
    """Keys are unique, so a stable full sort, argpartition (any tie order) and the compiled insertion
    lists pick the same members in the same order on a clipped image with flat areas."""
    levels = levels_of(clipped_flat_scene(seed=4))
    twin = engines(levels.shape + (1,))["array"]
    keys = brute_force_key_matrix(levels, twin.rows, twin.cols, 8, 6)
    by_sort = numpy.argsort(keys, axis=1, kind="stable")[:, :10]
    by_partition = numpy.argpartition(keys, 9, axis=1)[:, :10]
    by_partition = numpy.take_along_axis(by_partition, numpy.argsort(
        numpy.take_along_axis(keys, by_partition, axis=1), axis=1), axis=1)
    numpy.testing.assert_array_equal(by_sort, by_partition)
    offsets = collaborative.search_offsets(6)
    tops = numpy.add.outer(twin.rows * levels.shape[1], twin.cols).ravel()
    expected = tops[:, None] + (offsets[:, 0] * levels.shape[1] + offsets[:, 1])[by_sort]
    for engine in engines(levels.shape + (1,)).values():
        numpy.testing.assert_array_equal(engine.match(levels, radius=6, group=10), expected)


def test_matching_in_bands_and_blocks_gives_the_same_groups(monkeypatch):
    from nlfilt import backend

    image = RNG.normal(100, 20, size=(70, 60))
    levels = levels_of(image)
    whole = engines((70, 60, 1))["array"].match(levels, radius=6, group=16)
    # one reference row per band with every row offset, with 8 row offsets per block, one per block
    for size in (20 * 13 * 60 * 13 * 9, 20 * 13 * 60 * 9 * 8, 1):
        monkeypatch.setattr(backend, "CPU_BATCH_BYTES", size)
        twin = engines((70, 60, 1))["array"]
        assert twin._batch(13, 60) == (1, max(1, min(13, size // (20 * 13 * 60 * 9))))
        numpy.testing.assert_array_equal(twin.match(levels, radius=6, group=16), whole)


def test_a_reference_with_few_candidates_repeats_its_members_in_order():
    levels = levels_of(RNG.normal(size=(9, 10)), sigma=0.1)  # 2 x 3 patch positions
    for engine in engines((9, 10, 1), step=1).values():
        members = engine.match(levels, radius=4, group=8)
        assert members.shape == (6, 8)
        numpy.testing.assert_array_equal(members[:, 6:], members[:, :2])
        assert all(len(set(row[:6].tolist())) == 6 for row in members)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_the_compiled_stages_match_the_array_code_within_float32_rounding(channels):
    image = numpy.stack([clipped_flat_scene(40, 45, seed) for seed in range(channels)], axis=2)
    image = image.astype(numpy.float32)
    implementations = engines(image.shape, step=3)
    levels = levels_of(collaborative.guide(numpy, image, channels == 3))
    members = implementations["array"].match(levels, radius=5, group=8)
    pilots = [engine.filter(image, None, members, SIGMA, threshold=2.7)
              for engine in implementations.values()]
    numpy.testing.assert_allclose(pilots[0], pilots[1], rtol=2e-6, atol=2e-4)
    finals = [engine.filter(image, pilots[0], members, SIGMA, threshold=2.7)
              for engine in implementations.values()]
    numpy.testing.assert_allclose(finals[0], finals[1], rtol=2e-6, atol=2e-4)
    assert pilots[1].dtype == finals[1].dtype == numpy.float32


def test_the_compiled_filter_does_not_read_its_scratch_before_writing_it(monkeypatch):
    from nlfilt import jit_groups

    image = clipped_flat_scene(40, 45).astype(numpy.float32)[:, :, None]
    engine = engines(image.shape)["compiled"]
    members = engine.match(levels_of(image[:, :, 0]), radius=5, group=8)
    clean = [engine.filter(image, pilot, members, SIGMA, threshold=2.7) for pilot in (None, image)]
    monkeypatch.setattr(jit_groups, "_scratch", lambda shape, dtype: numpy.full(shape, numpy.nan, dtype))
    for pilot, expected in zip((None, image), clean, strict=True):
        numpy.testing.assert_array_equal(engine.filter(image, pilot, members, SIGMA, threshold=2.7), expected)


def test_the_compiled_result_does_not_depend_on_the_thread_count():
    noisy = (scene(80, 90) + numpy.random.default_rng(8).normal(0, 20, (80, 90)))[:, :, None]
    results = []
    for workers in (1, 2, 3):
        backend = Backend("cpu", numpy, workers=workers)
        groups = accelerate(backend, collaborative.ArrayGroups(backend, noisy.shape, patch=8, step=4))
        results.append(collaborative.collaborative_filter(groups, noisy.astype(numpy.float32), 20.0))
    numpy.testing.assert_array_equal(results[0], results[1])
    numpy.testing.assert_array_equal(results[0], results[2])


@pytest.mark.parametrize("name", ["array", "compiled"])
def test_keeping_every_coefficient_gives_back_the_image(name):
    """Threshold 0: the groups pass unchanged, so the weighted aggregation must return the input."""
    image = RNG.normal(100, 20, size=(37, 45, 2))
    engine = engines(image.shape, step=3)[name]
    members = engine.match(levels_of(image.sum(axis=2)), radius=4, group=8)
    out = engine.filter(image, None, members, 10.0, threshold=0.0)
    numpy.testing.assert_allclose(out, image, rtol=1e-10)


@pytest.mark.parametrize("name", ["array", "compiled"])
def test_a_noise_free_pilot_with_little_noise_gives_back_the_image(name):
    """Wiener gains P^2 / (P^2 + sigma^2) tend to 1 as sigma does: the second stage then returns the image."""
    image = scene()[:, :, None]
    engine = engines(image.shape)[name]
    members = engine.match(levels_of(image[:, :, 0]), radius=4, group=8)
    out = engine.filter(image, image, members, 1e-4, threshold=2.7)
    numpy.testing.assert_allclose(out, image, rtol=1e-6)


@pytest.mark.parametrize("name", ["array", "compiled"])
def test_an_all_zero_pilot_gives_a_finite_result(name):
    image = numpy.zeros((24, 24, 1), numpy.float32)
    image[8:16, 8:16] = 1.0
    engine = engines(image.shape)[name]
    members = engine.match(levels_of(image[:, :, 0]), radius=4, group=8)
    out = engine.filter(image, numpy.zeros_like(image), members, 5.0, threshold=2.7)
    assert numpy.isfinite(out).all()


def bayes_by_the_patch_covariance(image, pilot, members, sigma, window):
    """The empirical-Bayes estimate written directly: per group, ``m + C (C + sigma^2 I)^-1 (y - m)`` with
    the pilot's patches' mean ``m`` and covariance ``C`` (patch x patch), the patches added back with the
    window's weights and divided by them."""
    height, width, channels = image.shape
    patch = window.shape[0]
    offsets = (numpy.arange(patch)[:, None] * width + numpy.arange(patch)).ravel()
    numerator = numpy.zeros((channels, height * width))
    denominator = numpy.zeros(height * width)
    for origins in members:
        index = origins[:, None] + offsets
        for channel in range(channels):
            noisy = image[:, :, channel].ravel()[index]
            guide = pilot[:, :, channel].ravel()[index]
            mean = guide.mean(axis=0)
            covariance = (guide - mean).T @ (guide - mean) / len(origins)
            shrink = covariance @ numpy.linalg.inv(covariance + sigma**2 * numpy.eye(patch * patch))
            estimate = mean + (noisy - mean) @ shrink.T
            numpy.add.at(numerator[channel], index, estimate * window.ravel())
        numpy.add.at(denominator, index, numpy.broadcast_to(window.ravel(), index.shape))
    return (numerator / denominator).T.reshape(height, width, channels)


@pytest.mark.parametrize("name", ["array", "compiled"])
def test_the_bayes_estimate_is_the_patch_covariance_formula(name):
    """The n x n solve of the implementations against the patch-sized one, on a noisy two-channel scene
    with its pilot; groups of 8 and 16 (short groups repeat members, so some covariances are singular)."""
    clean = numpy.stack([scene(30, 34), scene(30, 34)[::-1]], axis=2)
    noisy = clean + numpy.random.default_rng(4).normal(0, 15, clean.shape)
    for group in (8, 16):
        engine = engines(noisy.shape, step=3)[name]
        members = numpy.asarray(engine.match(levels_of(noisy.sum(axis=2)), radius=4, group=group))
        pilot = engine.filter(noisy, None, members, 15.0, threshold=2.7)
        expected = bayes_by_the_patch_covariance(noisy, pilot, members, 15.0, collaborative.kaiser_window(8))
        found = engine.bayes(noisy, pilot, members, 15.0)
        numpy.testing.assert_allclose(found, expected, rtol=1e-9, atol=1e-8)


@pytest.mark.parametrize("name", ["array", "compiled"])
def test_the_bayes_estimate_with_little_noise_gives_back_the_image(name):
    image = scene()[:, :, None]
    engine = engines(image.shape)[name]
    members = engine.match(levels_of(image[:, :, 0]), radius=4, group=8)
    out = engine.bayes(image, image, members, 1e-3)
    numpy.testing.assert_allclose(out, image, rtol=1e-6)


def test_the_compiled_bayes_estimate_is_float32_in_and_out_and_reads_no_stale_scratch(monkeypatch):
    from nlfilt import jit_groups

    image = clipped_flat_scene(40, 45).astype(numpy.float32)[:, :, None]
    implementations = engines(image.shape, step=3)
    members = implementations["array"].match(levels_of(image[:, :, 0]), radius=5, group=16)
    pilot = implementations["array"].filter(image, None, members, SIGMA, threshold=2.7)
    expected = implementations["array"].bayes(image, pilot, members, SIGMA)
    monkeypatch.setattr(jit_groups, "_scratch", lambda shape, dtype: numpy.full(shape, numpy.nan, dtype))
    found = implementations["compiled"].bayes(image, pilot, members, SIGMA)
    assert found.dtype == expected.dtype == numpy.float32
    numpy.testing.assert_allclose(found, expected, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_the_second_stage_is_the_mean_of_the_wiener_and_bayes_estimates(channels):
    """In every channel, except the colour channels (1 and 2) of an opponent-space image: the Wiener
    estimate alone there."""
    image = numpy.stack([clipped_flat_scene(40, 45, seed) for seed in range(channels)], axis=2)
    groups = engines(image.shape, step=3)["compiled"]
    members = groups.match(levels_of(collaborative.guide(numpy, image, False)), radius=5, group=8)
    pilot = collaborative.filter_by_channel(numpy, groups, image, None, members, SIGMA, 2.7)
    found = collaborative.filter_by_channel(numpy, groups, image, pilot, members, SIGMA, 2.7)
    for channel in range(channels):
        plane, guide = image[..., channel:channel + 1], pilot[..., channel:channel + 1]
        wiener = groups.filter(plane, guide, members, SIGMA, threshold=2.7)
        bayes = groups.bayes(plane, guide, members, SIGMA)
        expected = wiener if channels == 3 and channel > 0 else (wiener + bayes) / 2
        numpy.testing.assert_allclose(found[..., channel:channel + 1], expected, rtol=1e-12)
    assert collaborative.BAYES_SHARE == 0.5


def test_the_low_signal_to_noise_second_stage_takes_the_bayes_estimate_in_every_channel():
    """``bayes_everywhere``: the mean of the two estimates in the colour channels too."""
    channels = 3
    image = numpy.stack([clipped_flat_scene(40, 45, seed) for seed in range(channels)], axis=2)
    groups = engines(image.shape, step=3)["compiled"]
    members = groups.match(levels_of(collaborative.guide(numpy, image, False)), radius=5, group=16)
    pilot = collaborative.filter_by_channel(numpy, groups, image, None, members, SIGMA, 2.7)
    found = collaborative.filter_by_channel(numpy, groups, image, pilot, members, SIGMA, 2.7,
                                            bayes_everywhere=True)
    for channel in range(channels):
        plane, guide = image[..., channel:channel + 1], pilot[..., channel:channel + 1]
        wiener = groups.filter(plane, guide, members, SIGMA, threshold=2.7)
        bayes = groups.bayes(plane, guide, members, SIGMA)
        numpy.testing.assert_allclose(found[..., channel:channel + 1], (wiener + bayes) / 2, rtol=1e-12)


@pytest.fixture
def matched_sizes(monkeypatch):
    """The group sizes the array code's matching is asked for, in order (the list fills as it runs)."""
    sizes = []
    original = collaborative.ArrayGroups.match

    def spy(self, levels, *, radius, group):
        sizes.append(group)
        return original(self, levels, radius=radius, group=group)

    monkeypatch.setattr(collaborative.ArrayGroups, "match", spy)
    return sizes


def test_low_signal_to_noise_is_noise_against_the_pilots_contrast(refinements):
    """The coarse scale refines the pilot once sigma reaches LOW_SNR times the pilot's contrast (spread of
    the 1st to 99th percentiles), whatever the image's units."""
    ramp = numpy.linspace(0, 1, 101)
    spread = collaborative.contrast(numpy, numpy.stack([ramp, 2 * ramp, 5 * ramp], axis=1))
    assert spread == pytest.approx(1.96)  # the median of 0.98, 1.96 and 4.9
    clean = scene()[:, :, None].astype(numpy.float32)
    span = collaborative.contrast(numpy, clean)
    for scale in (1.0, 1 / 255):  # 8-bit units, and the same image in [0, 1]
        for sigma in (0.1, 0.17, 0.19, 0.3):
            groups = collaborative.ArrayGroups(CPU, clean.shape, patch=8, step=4)
            noisy = clean + sigma * span * numpy.random.default_rng(0).standard_normal(clean.shape)
            image = (scale * noisy).astype(numpy.float32)
            refinements.clear()
            collaborative.collaborative_filter(groups, image, scale * sigma * span)
            low = collaborative.low_signal_to_noise(groups, image, scale * sigma * span)
            assert low == (sigma > collaborative.LOW_SNR) and len(refinements) == low, (scale, sigma)
    noisy = clean[:, :, 0] + 0.3 * span * numpy.random.default_rng(0).standard_normal(clean.shape[:2])
    for given in (False, True):
        refinements.clear()
        nlfilt.denoise_collaborative(noisy, sigma=0.3 * span, low_snr=given, device="cpu")
        assert len(refinements) == given
    with pytest.raises(ValueError, match="low_snr must be None, True or False"):
        nlfilt.denoise_collaborative(noisy, low_snr="auto")


def test_the_low_signal_to_noise_stage_gains_at_high_noise(set12, set5, monkeypatch):
    """At sigma 50 (estimated), against the usual filter (LOW_SNR infinite: no coarse scale, the usual
    second stage): four Set12 images and a Set5 one (measured: -0.04, +0.14, -0.02 and +0.19 dB gray,
    +0.11 dB colour; on all of Set12 +0.10 dB, of Set5 +0.12 dB)."""
    gains = []
    cases = [(set12 / name, index) for index, name in enumerate(("01.png", "02.png", "05.png", "09.png"))]
    for path, seed in [*cases, (set5 / "woman.png", 2)]:
        clean = iio.imread(path).astype(numpy.float64)
        clean = clean[..., :3] if clean.ndim == 3 else clean
        noisy = clean + numpy.random.default_rng(seed).normal(0, 50, clean.shape)
        profile = psnr(nlfilt.denoise_collaborative(noisy, device="cpu"), clean)
        monkeypatch.setattr(collaborative, "LOW_SNR", numpy.inf)
        gains.append(profile - psnr(nlfilt.denoise_collaborative(noisy, device="cpu"), clean))
        monkeypatch.undo()
    assert min(gains) > -0.06 and numpy.mean(gains) > 0.05, gains


def test_add_at_sums_repeated_indices_into_the_span_it_touches():
    target = numpy.arange(20, dtype=numpy.float32)
    index = numpy.array([7, 3, 7, 12, 3, 3], dtype=numpy.int32)
    values = numpy.arange(1, 7, dtype=numpy.float32)
    expected = target.copy()
    numpy.add.at(expected, index, values)
    CPU.add_at(target, index, values)
    numpy.testing.assert_array_equal(target, expected)


def test_on_whole_set12_images_it_beats_nlm_by_a_db_and_bm3d(set12):
    """Three 256 x 256 Set12 images at sigma 25 (sigma estimated), against nlfilt's NLM and, when the bm3d
    package is installed, BM3D on the same noisy images (measured: 0.03-0.04 dB better on each);
    benchmarks/quality.py measures the whole set at every sigma."""
    gains, gaps = [], []
    for index, name in enumerate(("01.png", "02.png", "05.png")):
        clean = iio.imread(set12 / name).astype(numpy.float64)
        noisy = clean + numpy.random.default_rng(index).normal(0, 25, clean.shape)
        ours = psnr(nlfilt.denoise_collaborative(noisy, device="cpu"), clean)
        gains.append(ours - psnr(nlfilt.denoise(noisy, device="cpu"), clean))
        try:
            import bm3d
        except ImportError:
            continue
        gaps.append(psnr(255 * bm3d.bm3d(noisy / 255, 25 / 255), clean) - ours)
    assert numpy.mean(gains) > 0.8 and min(gains) > 0.5, gains
    assert not gaps or numpy.mean(gaps) < 0, gaps


def test_the_mean_with_the_bayes_estimate_beats_the_wiener_estimate_alone(set12, monkeypatch):
    """The second stage's two estimates averaged against the Wiener estimate alone (BAYES_SHARE 0), the
    same three images (measured: +0.09 to +0.12 dB)."""
    gains = []
    for index, name in enumerate(("01.png", "02.png", "05.png")):
        clean = iio.imread(set12 / name).astype(numpy.float64)
        noisy = clean + numpy.random.default_rng(index).normal(0, 25, clean.shape)
        both = psnr(nlfilt.denoise_collaborative(noisy, sigma=25.0, device="cpu"), clean)
        monkeypatch.setattr(collaborative, "BAYES_SHARE", 0.0)
        gains.append(both - psnr(nlfilt.denoise_collaborative(noisy, sigma=25.0, device="cpu"), clean))
        monkeypatch.undo()
    assert min(gains) > 0.05, gains


def test_bm3d_transforms_and_settings_beat_the_all_dct_faster_settings(set12, monkeypatch):
    """The biorthogonal wavelet and Haar transforms with BM3D's step, radius and group sizes against the
    settings used before (the DCT in both stages, step 4, radii 12 and 9, groups of 16): the same three
    images as above, sigma 25."""
    from nlfilt import jit_groups

    def denoise(noisy, step, radius, group):
        image = noisy.astype(numpy.float32)[:, :, None]
        groups = accelerate(CPU, collaborative.ArrayGroups(CPU, image.shape, patch=8, step=step))
        return collaborative.collaborative_filter(groups, image, 25.0, radius=radius, group=group)[:, :, 0]

    gains = []
    for index, name in enumerate(("01.png", "02.png", "05.png")):
        clean = iio.imread(set12 / name).astype(numpy.float64)
        noisy = clean + numpy.random.default_rng(index).normal(0, 25, clean.shape)
        ours = psnr(denoise(noisy, collaborative.STEP, collaborative.RADIUS, collaborative.GROUP), clean)
        with monkeypatch.context() as patched:
            def all_dct(patch, group, hard):
                return tuple(matrix for size in (patch, group)
                             for matrix in (collaborative.dct_matrix(size), collaborative.dct_matrix(size).T))
            for module in (collaborative, jit_groups):
                patched.setattr(module, "transform_matrices", all_dct)
            before = psnr(denoise(noisy, 4, (12, 9), (16, 16)), clean)
        gains.append(ours - before)
    assert numpy.mean(gains) > 0.15 and min(gains) > 0, gains


@pytest.mark.parametrize("name", ["array", "compiled"])
def test_each_colour_channel_is_weighted_on_its_own(name):
    """A gray picture in RGB has zero chroma: its luminance must come out as the gray filter's, which
    it does not when the chroma channels' groups (all coefficients zero but the mean) share the weights."""
    noisy = scene() + numpy.random.default_rng(3).normal(0, SIGMA, (64, 72))
    shape = (64, 72, 3)
    groups = engines(shape)[name]
    rgb = numpy.repeat(noisy[:, :, None], 3, axis=2).astype(numpy.float32)
    colour = collaborative.collaborative_filter(groups, rgb, SIGMA, group=(16, 16))
    gray_groups = engines((64, 72, 1))[name]
    # luminance: sqrt(3) times the picture and its noise, so the gray filter at SIGMA / sqrt(3)
    gray = collaborative.collaborative_filter(gray_groups, noisy[:, :, None].astype(numpy.float32),
                                              SIGMA / 3**0.5, group=(16, 16))
    for channel in range(3):
        numpy.testing.assert_allclose(colour[:, :, channel], gray[:, :, 0], atol=2e-3)


def test_colour_images_get_the_colour_groups_and_gray_ones_the_gray_groups(matched_sizes):
    sizes = matched_sizes
    for channels in (1, 3):
        image = numpy.repeat(scene()[:, :, None], channels, axis=2).astype(numpy.float32)
        groups = collaborative.ArrayGroups(CPU, image.shape, patch=8, step=4)
        collaborative.collaborative_filter(groups, image, 10.0)
    assert sizes == [*collaborative.GROUP, *collaborative.COLOUR_GROUP]
    assert collaborative.COLOUR_GROUP[1] == 32


def test_colour_in_the_opponent_space_beats_channel_by_channel(set5):
    clean = iio.imread(set5 / "baby.png").astype(numpy.float64)[200:328, 200:328]
    noisy = clean + numpy.random.default_rng(1).normal(0, 25, clean.shape)
    together = nlfilt.denoise_collaborative(noisy, sigma=25.0, device="cpu")
    apart = numpy.stack([nlfilt.denoise_collaborative(noisy[:, :, c], sigma=25.0, device="cpu")
                         for c in range(3)], axis=2)
    assert together.shape == clean.shape
    assert psnr(together, clean) > psnr(apart, clean) + 0.3, (psnr(together, clean), psnr(apart, clean))


def test_the_api_validates_and_keeps_numpy_in_numpy_out():
    noisy = scene(32, 40) + numpy.random.default_rng(2).normal(0, 10, (32, 40))
    out, info = nlfilt.denoise_collaborative(noisy, device="cpu", dtype=numpy.float64, return_info=True)
    assert type(out) is numpy.ndarray and out.dtype == numpy.float64 and out.shape == noisy.shape
    assert 7 < info.sigma < 13 and info.iterations == 1 and info.applications == 0
    numpy.testing.assert_array_equal(nlfilt.denoise_collaborative(noisy, sigma=0, device="cpu"),
                                     noisy.astype(numpy.float32))
    seen = []
    nlfilt.denoise_collaborative(noisy, device="cpu", progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1.0, 4), (2.0, 4), (3.0, 4), (4.0, 4)]
    for bad, message in [({"sigma": -1}, "sigma"), ({"device": "tpu"}, "device"), ({"dtype": int}, "dtype")]:
        with pytest.raises(ValueError, match=message):
            nlfilt.denoise_collaborative(noisy, **bad)
    with pytest.raises(ValueError, match="at least 8x8"):
        nlfilt.denoise_collaborative(noisy[:7], device="cpu")


def test_the_command_line_uses_it_by_default(tmp_path):
    noisy = numpy.clip(scene(48, 56) + numpy.random.default_rng(3).normal(0, 20, (48, 56)), 0, 255)
    iio.imwrite(tmp_path / "a.png", noisy.astype(numpy.uint8))
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "out.png"),
                                       "--quiet", "--device", "cpu", "--report", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 0, result.output
    expected = nlfilt.denoise_collaborative(noisy.astype(numpy.uint8).astype(numpy.float32), device="cpu")
    numpy.testing.assert_array_equal(iio.imread(tmp_path / "out.png"),
                                     numpy.clip(numpy.rint(expected), 0, 255).astype(numpy.uint8))
    assert '"sigma": ' in (tmp_path / "r.jsonl").read_text()


@pytest.mark.parametrize("option", [["--kernel", "arccos"], ["--window", "7"], ["--iterations", "auto"],
                                    ["--patch", "3"], ["--h", "20"], ["--guide", "pilot"],
                                    ["--memory-budget", "512M"], ["--window-shape", "tent"]])
def test_a_filter_option_without_method_selects_the_filter(tmp_path, option):
    iio.imwrite(tmp_path / "a.png", scene(24, 28).astype(numpy.uint8))
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"),
                                       "--quiet", "--device", "cpu", *option, "--report",
                                       str(tmp_path / "r.jsonl")])
    assert result.exit_code == 0, result.output
    header = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    name = option[0].removeprefix("--").replace("-", "_")
    assert header["options"]["method"] == "filter"
    assert header["options"][name] != nlfilt.methods.method("filter").options[name]  # and it took the value


def test_the_command_line_refuses_filter_options_and_tiny_images_with_the_remedy(tmp_path):
    iio.imwrite(tmp_path / "a.png", scene(48, 56).astype(numpy.uint8))
    iio.imwrite(tmp_path / "tiny.png", scene(6, 56).astype(numpy.uint8))
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"),
                                       "--method", "collaborative", "--kernel", "arccos", "--iterations", "3",
                                       "--overwrite", "--max-minutes", "5"])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "--kernel, --iterations configure --method filter, not --method collaborative" in message
    assert "--overwrite" not in message and "--max-minutes" not in message  # only the options that conflict
    tiny = CliRunner().invoke(main, ["denoise", str(tmp_path / "tiny.png"), "-o", str(tmp_path / "t.png")])
    assert tiny.exit_code == 1 and "smaller than the 8x8 patches" in tiny.output
    assert "--method filter" in tiny.output
    costly = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "c.png"),
                                       "--device", "cpu", "--max-minutes", "0.0001"])
    assert costly.exit_code == 1 and "--method collaborative would take" in costly.output


@pytest.mark.gpu
@pytest.mark.parametrize("alternatives", ["", "nlfilt_bm"], ids=["array code", "cuda kernels"])
@pytest.mark.parametrize("channels", [0, 3])
def test_the_gpu_gives_the_cpu_result(gpu, channels, alternatives, monkeypatch):
    """The same groups on both (exact integer keys), so float64 gives the same image; float32 differs by
    rounding (and, rarely, a pilot value rounded across a matching level moves a near tie)."""
    monkeypatch.setenv("NLFILT_CUDA_ALTERNATIVES", alternatives)
    clean = scene(64, 72) if not channels else numpy.stack([scene(64, 72)] * 3, axis=2) * [1.0, 0.8, 0.6]
    noisy = numpy.clip(numpy.rint(clean + numpy.random.default_rng(5).normal(0, 20, clean.shape)), 0, 255)
    expected = nlfilt.denoise_collaborative(noisy, sigma=20.0, device="cpu", dtype=numpy.float64)
    exact = nlfilt.denoise_collaborative(noisy, sigma=20.0, device=gpu, dtype=numpy.float64)
    numpy.testing.assert_allclose(exact, expected, rtol=1e-9, atol=1e-9)
    fast = nlfilt.denoise_collaborative(noisy, sigma=20.0, device=gpu)
    reference = nlfilt.denoise_collaborative(noisy, sigma=20.0, device="cpu")
    assert numpy.mean(numpy.abs(fast - reference) > 1e-3) < 0.005
    assert abs(psnr(fast, clean) - psnr(reference, clean)) < 0.01


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [numpy.float64, numpy.float32])
@pytest.mark.parametrize(("channels", "group"), [(1, 8), (3, 16), (2, 24)])  # all within shared memory
def test_the_cuda_kernels_give_the_array_codes_groups_and_stages(gpu, dtype, channels, group):
    """nlfilt_bm_match's members equal the twin's; nlfilt_bm_filter's stages equal its within rounding; the
    empirical-Bayes estimate (the twin's array code on CuPy) equals it on NumPy."""
    import cupy

    from nlfilt.cuda.groups import CudaGroups

    image = numpy.stack([clipped_flat_scene(40, 45, seed) for seed in range(channels)], axis=2).astype(dtype)
    twin = engines(image.shape, step=3)["array"]
    kernels = CudaGroups(collaborative.ArrayGroups(get_backend("gpu"), image.shape, patch=8, step=3))
    levels = levels_of(collaborative.guide(numpy, image, channels == 3))
    members = twin.match(levels, radius=6, group=group)
    found = kernels.match(cupy.asarray(levels), radius=6, group=group)
    numpy.testing.assert_array_equal(found.get(), members)
    tolerance = {"rtol": 1e-10, "atol": 1e-9} if dtype == numpy.float64 else {"rtol": 2e-5, "atol": 2e-3}
    pilot = twin.filter(image, None, members, SIGMA, threshold=2.7)
    on_gpu = kernels.filter(cupy.asarray(image), None, cupy.asarray(members), SIGMA, threshold=2.7).get()
    numpy.testing.assert_allclose(on_gpu, pilot, **tolerance)
    final = twin.filter(image, pilot, members, SIGMA, threshold=2.7)
    on_gpu = kernels.filter(cupy.asarray(image), cupy.asarray(pilot), cupy.asarray(members), 20.0,
                            threshold=2.7).get()
    numpy.testing.assert_allclose(on_gpu, final, **tolerance)
    bayes = twin.bayes(image, pilot, members, SIGMA)  # float64 solves on both: CuPy's batched solve
    on_gpu = kernels.bayes(cupy.asarray(image), cupy.asarray(pilot), cupy.asarray(members), SIGMA).get()
    numpy.testing.assert_allclose(on_gpu, bayes, **tolerance)


def test_the_command_line_bar_counts_the_four_steps(tmp_path, monkeypatch):
    from nlfilt.cli import progress

    monkeypatch.setattr(progress, "BAR_DELAY", 0.0)
    monkeypatch.setattr(progress, "on_terminal", lambda: True)  # a tqdm bar, as on a terminal
    iio.imwrite(tmp_path / "a.png", scene(48, 56).astype(numpy.uint8))
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"),
                                       "--device", "cpu", "--sigma", "10"])
    assert result.exit_code == 0, result.output
    assert "/4 steps" in result.stderr and "products with K" not in result.stderr


def test_the_command_line_refuses_what_the_memory_cannot_hold_with_the_remedy(tmp_path, monkeypatch):
    """From the header, before decoding: over half the machine's memory on the CPU, over the free memory
    on the GPU, each with remedies that are real options."""
    iio.imwrite(tmp_path / "a.png", scene(48, 56).astype(numpy.uint8))
    denoise_options = {name for param in main.commands["denoise"].params for name in param.opts}
    monkeypatch.setattr("nlfilt.cli.options.physical_memory", lambda: 2**16)  # a 64 KiB machine
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"),
                                       "--device", "cpu"])
    assert result.exit_code == 1 and "GiB of working memory" in result.output, result.output
    assert "--chunk" in result.output and "--chunk" in denoise_options
    assert not (tmp_path / "o.png").exists()
    monkeypatch.setattr("nlfilt.cli.denoise.get_backend", lambda device: Backend("gpu", numpy))
    monkeypatch.setattr("nlfilt.cli.options.gpu_free_bytes", lambda: 2**20)
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png")])
    assert result.exit_code == 1 and "GiB of GPU memory" in result.output and "--device cpu" in result.output
    monkeypatch.setattr("nlfilt.cli.options.gpu_free_bytes", lambda: 2**40)
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"),
                                       "--max-minutes", "1e-9"])
    assert result.exit_code == 1 and "on the GPU (an estimate" in result.output
    assert "--device gpu" not in result.output and "--max-minutes" in result.output


def test_the_cost_model_is_linear_in_the_pixels():
    from nlfilt.cost import estimate_collaborative_bytes, estimate_collaborative_seconds

    for device in ("cpu", "gpu"):
        small = estimate_collaborative_seconds((1024, 1024), device)
        large = estimate_collaborative_seconds((4096, 4096), device)
        assert 15 < large / small <= 16
        gray, colour = (estimate_collaborative_seconds(shape, device) for shape in ((64, 64), (64, 64, 3)))
        assert colour > gray
    assert estimate_collaborative_bytes((4096, 4096)) == 16 * estimate_collaborative_bytes((1024, 1024))


def test_the_array_code_makes_a_few_hundred_operations_per_stage_as_batched_on_a_gpu():
    """The CuPy path's launches, counted on NumPy (nlfilt.launches): a 512 x 512 image under the
    defaults in a few hundred operations per stage (the second's empirical-Bayes estimate included),
    fewer than half its search offsets (not one batch of operations per offset)."""
    from nlfilt.launches import counting_backend

    image = numpy.random.default_rng(3).normal(100, 25, (512, 512, 1)).astype(numpy.float32)
    counts = []
    with counting_backend() as (backend, counter):
        groups = collaborative.ArrayGroups(backend, image.shape, patch=8, step=collaborative.STEP)
        work, pilot = backend.asarray(image), None
        for radius, group in zip(collaborative.RADIUS, collaborative.GROUP, strict=True):
            start = counter.operations
            guide = collaborative.guide(backend.xp, work if pilot is None else pilot, False)
            levels = collaborative.quantise(backend.xp, guide, 25.0)
            members = groups.match(levels, radius=radius, group=group)
            estimate = groups.filter(work, pilot, members, 25.0, threshold=2.7)
            if pilot is not None:
                groups.bayes(work, pilot, members, 25.0)
            pilot = estimate
            counts.append((counter.operations - start, (2 * radius + 1) ** 2))
    assert all(50 < count < offsets / 2 for count, offsets in counts), counts
