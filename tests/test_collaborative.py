"""The collaborative Wiener filter: its transforms, matching, stages, API and command line."""

from __future__ import annotations

import imageio.v3 as iio
import numpy
import pytest
from click.testing import CliRunner

import nlfilt
from nlfilt import collaborative
from nlfilt.backend import get_backend
from nlfilt.cli import main

from conftest import DATA_DIR

CPU = get_backend("cpu")
RNG = numpy.random.default_rng(21)


def psnr(estimate: numpy.ndarray, clean: numpy.ndarray) -> float:
    return float(10 * numpy.log10(255.0**2 / numpy.mean((numpy.clip(estimate, 0, 255) - clean) ** 2)))


def scene(height: int = 64, width: int = 72) -> numpy.ndarray:
    """A piecewise-smooth test image with edges and texture, values in [20, 235]."""
    rows, cols = numpy.mgrid[:height, :width]
    image = 120 + 60 * numpy.sin(cols / 5.0) * (rows > height // 3) + 50 * ((rows - cols) % 24 < 12)
    return numpy.clip(image, 20, 235).astype(numpy.float64)


def test_the_transforms_are_orthonormal_and_invert_each_other():
    for size in (4, 8, 16):
        matrix = collaborative.dct_matrix(size)
        numpy.testing.assert_allclose(matrix @ matrix.T, numpy.eye(size), atol=1e-12)
    spatial = numpy.kron(collaborative.dct_matrix(8), collaborative.dct_matrix(8))
    along = collaborative.dct_matrix(16)
    groups = RNG.normal(size=(5, 16, 64))
    coefficients = collaborative._transform(groups, 5, 16, spatial.T, along)
    assert numpy.isclose((coefficients**2).sum(), (groups**2).sum())  # Parseval: orthonormal in 3-D
    restored = collaborative._inverse(coefficients, 16, spatial, along)
    numpy.testing.assert_allclose(restored, groups, atol=1e-10)
    numpy.testing.assert_allclose(collaborative.OPPONENT @ collaborative.OPPONENT.T, numpy.eye(3), atol=1e-12)


def test_every_reference_patch_heads_its_own_group_of_nearest_patches():
    image = RNG.normal(size=(40, 50))
    image[:, :20] = 7.0  # a flat area: many patches at distance 0, ties
    rows, cols = collaborative._match(CPU, image, patch=8, step=4, radius=5, group=8)
    grid_rows, grid_cols = collaborative._grid(40, 8, 4), collaborative._grid(50, 8, 4)
    references = [(row, col) for row in grid_rows for col in grid_cols]
    assert rows.shape == cols.shape == (len(references), 8)
    for index, (row, col) in enumerate(references):
        members = set(zip(rows[index].tolist(), cols[index].tolist(), strict=True))
        assert (row, col) in members and len(members) == 8
        assert all(abs(r - row) <= 5 and abs(c - col) <= 5 for r, c in members)
        assert all(0 <= r <= 32 and 0 <= c <= 42 for r, c in members)
    # the chosen ones are the nearest: no candidate outside the group is closer than the farthest member
    row, col = references[-1]
    reference = image[row:row + 8, col:col + 8]

    def distance(r, c):
        return float(((image[r:r + 8, c:c + 8] - reference) ** 2).sum())

    chosen = [distance(r, c) for r, c in zip(rows[-1], cols[-1], strict=True)]
    others = [distance(r, c) for r in range(max(0, row - 5), min(32, row + 5) + 1)
              for c in range(max(0, col - 5), min(42, col + 5) + 1)
              if (r, c) not in set(zip(rows[-1].tolist(), cols[-1].tolist(), strict=True))]
    assert max(chosen) <= min(others) + 1e-9


def test_matching_in_bands_gives_the_same_groups(monkeypatch):
    image = RNG.normal(100, 20, size=(70, 60))
    whole = collaborative._match(CPU, image, patch=8, step=4, radius=6, group=16)
    monkeypatch.setattr(collaborative, "MATCH_BYTES", 1)  # one reference row per band
    banded = collaborative._match(CPU, image, patch=8, step=4, radius=6, group=16)
    for first, second in zip(whole, banded, strict=True):
        numpy.testing.assert_array_equal(numpy.sort(first, axis=1), numpy.sort(second, axis=1))


def test_keeping_every_coefficient_gives_back_the_image():
    """Threshold 0: the groups pass unchanged, so the weighted aggregation must return the input."""
    image = RNG.normal(100, 20, size=(37, 45, 2))
    rows, cols = collaborative._match(CPU, image.mean(axis=2), patch=8, step=3, radius=4, group=8)
    out = collaborative._filter_groups(CPU, image, None, rows, cols, 10.0, patch=8, group=8,
                                       threshold=0.0)
    numpy.testing.assert_allclose(out, image, rtol=1e-10)


def test_a_noise_free_pilot_with_little_noise_gives_back_the_image():
    """Wiener gains P^2 / (P^2 + sigma^2) tend to 1 as sigma does: the second stage then returns the image."""
    image = scene()[:, :, None]
    rows, cols = collaborative._match(CPU, image[:, :, 0], patch=8, step=4, radius=4, group=8)
    out = collaborative._filter_groups(CPU, image, image, rows, cols, 1e-4, patch=8, group=8,
                                       threshold=2.7)
    numpy.testing.assert_allclose(out, image, rtol=1e-6)


@pytest.fixture(scope="module")
def set5():
    folder = DATA_DIR / "set5"
    if not folder.is_dir():
        pytest.skip(f"benchmark images not found at {folder}")
    return folder


def test_on_whole_set12_images_it_beats_nlm_by_a_db_and_is_within_half_a_db_of_bm3d(set12):
    """Three 256 x 256 Set12 images at sigma 25 (sigma estimated), against nlfilt's NLM and, when the bm3d
    package is installed, BM3D on the same noisy images; benchmarks/quality.py measures the whole set at
    every sigma."""
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
    assert not gaps or numpy.mean(gaps) < 0.5, gaps


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


def test_the_command_line_refuses_filter_options_and_tiny_images_with_the_remedy(tmp_path):
    iio.imwrite(tmp_path / "a.png", scene(48, 56).astype(numpy.uint8))
    iio.imwrite(tmp_path / "tiny.png", scene(6, 56).astype(numpy.uint8))
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"),
                                       "--kernel", "arccos", "--iterations", "3"])
    assert result.exit_code == 2
    assert "--kernel, --iterations configure --method filter" in result.output
    tiny = CliRunner().invoke(main, ["denoise", str(tmp_path / "tiny.png"), "-o", str(tmp_path / "t.png")])
    assert tiny.exit_code == 1 and "smaller than the 8x8 patches" in tiny.output
    assert "--method filter" in tiny.output
    costly = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "c.png"),
                                       "--device", "cpu", "--max-minutes", "0.0001"])
    assert costly.exit_code == 1 and "--method collaborative would take" in costly.output


@pytest.mark.gpu
@pytest.mark.parametrize("channels", [0, 3])
def test_the_gpu_gives_the_numpy_result(gpu, channels):
    """CuPy runs the same array code; float32 near-ties may swap group members, so the final PSNRs are
    compared (float64: the same groups, so the same image)."""
    clean = scene(64, 72) if not channels else numpy.stack([scene(64, 72)] * 3, axis=2) * [1.0, 0.8, 0.6]
    noisy = clean + numpy.random.default_rng(5).normal(0, 20, clean.shape)
    expected = nlfilt.denoise_collaborative(noisy, sigma=20.0, device="cpu", dtype=numpy.float64)
    exact = nlfilt.denoise_collaborative(noisy, sigma=20.0, device=gpu, dtype=numpy.float64)
    numpy.testing.assert_allclose(exact, expected, rtol=1e-9, atol=1e-9)
    fast = nlfilt.denoise_collaborative(noisy, sigma=20.0, device=gpu)
    assert abs(psnr(fast, clean) - psnr(expected, clean)) < 0.01


def test_the_command_line_bar_counts_the_four_steps(tmp_path, monkeypatch):
    from nlfilt.cli import progress

    monkeypatch.setattr(progress, "BAR_DELAY", 0.0)
    iio.imwrite(tmp_path / "a.png", scene(48, 56).astype(numpy.uint8))
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"),
                                       "--device", "cpu", "--sigma", "10"])
    assert result.exit_code == 0, result.output
    assert "/4 steps" in result.stderr and "products with K" not in result.stderr
