"""3-D volumes (Z, H, W) with box patches and windows, against the dense reference."""

from __future__ import annotations

import numpy
import pytest

import nlfilt
from nlfilt.noise import estimate_sigma

import reference

RNG = numpy.random.default_rng(31)
VOLUME = RNG.random((4, 6, 5)) * 100


@pytest.mark.parametrize(("patch", "window"), [((3, 3, 3), (3, 5, 5)), ((1, 3, 3), None),
                                               ((3, 1, 3), (5, 3, 1))])
def test_volume_nlm_filter_matches_the_dense_reference(patch, window):
    options = {"kernel": "nlm", "patch": patch, "window": window, "h": 20.0, "sigma": 5.0}
    dense = reference.volume_affinity(VOLUME, **options)
    expected = dense / dense.sum(axis=1, keepdims=True)
    weights = nlfilt.filter_matrix(VOLUME, channel_axis=None, dtype=numpy.float64, device="cpu", **options)
    numpy.testing.assert_allclose(weights, expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("window", [(3, 3, 3), None])
@pytest.mark.parametrize(("kernel", "depth"), [("arccos", 1), ("ntk", 2)])
def test_volume_tangent_filters_match_the_dense_reference(kernel, depth, window):
    dense = reference.volume_affinity(VOLUME, kernel=kernel, patch=(3, 3, 3), window=window, depth=depth)
    expected = dense / numpy.linalg.eigvalsh(dense)[-1]
    weights = nlfilt.filter_matrix(VOLUME, kernel=kernel, depth=depth, patch=(3, 3, 3), window=window,
                                   channel_axis=None, dtype=numpy.float64, device="cpu")
    numpy.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-9)  # lambda_max by Lanczos


def test_volume_twicing_sinkhorn_auto_and_rows_agree_with_the_dense_filter():
    common = {"patch": (3, 3, 3), "window": (3, 5, 5), "h": 20.0, "sigma": 5.0, "channel_axis": None,
              "dtype": numpy.float64, "device": "cpu"}
    weights = nlfilt.filter_matrix(VOLUME, **common)
    flat = VOLUME.reshape(-1)
    estimate = weights @ flat
    estimate = estimate + weights @ (flat - estimate)
    numpy.testing.assert_allclose(nlfilt.denoise(VOLUME, iterations=2, **common).reshape(-1), estimate,
                                  rtol=1e-10)
    numpy.testing.assert_allclose(nlfilt.filter_row(VOLUME, (2, 3, 1), **common), weights[2 * 30 + 3 * 5 + 1]
                                  .reshape(VOLUME.shape), rtol=1e-10)
    path = nlfilt.twicing_trajectory(VOLUME, 6, **common)
    numpy.testing.assert_allclose(path.estimate(4), nlfilt.denoise(VOLUME, iterations=4, **common), rtol=1e-6)
    sinkhorn = nlfilt.denoise(VOLUME, normalize="sinkhorn", **common)
    auto = nlfilt.denoise(VOLUME, iterations="auto", **common)
    assert sinkhorn.shape == auto.shape == VOLUME.shape


def test_volume_with_channels_and_the_noise_estimate():
    clean = numpy.tile(numpy.linspace(0, 200, 96), (5, 96, 1))
    noisy = clean + numpy.random.default_rng(3).normal(0, 10, clean.shape)
    volume_sigma = estimate_sigma(numpy, noisy[..., None])
    assert volume_sigma == float(numpy.median([estimate_sigma(numpy, plane[..., None]) for plane in noisy]))
    assert volume_sigma == pytest.approx(10, rel=0.1)
    colour = numpy.stack([noisy, noisy[::-1]], axis=-1)
    result = nlfilt.denoise(colour[:, :16, :16], channel_axis=-1, patch=(1, 3, 3), window=(3, 5, 5),
                            device="cpu")
    assert result.shape == (5, 16, 16, 2)


@pytest.mark.parametrize(("patch", "message"), [((3, 3), "three"), ((3, 4, 3), "odd"),
                                                ((7, 3, 3), "at most")])
def test_volume_patch_errors_name_the_parameter(patch, message):
    with pytest.raises(ValueError, match=message):
        nlfilt.denoise(VOLUME, channel_axis=None, patch=patch, device="cpu")


def test_a_time_series_gains_a_decibel_from_its_temporal_window(set12):
    """Eight frames of one Set12 image shifted by a few pixels, noise 25: the 3-D filter with a window
    over all frames beats filtering frame by frame by at least 1 dB."""
    import imageio.v3 as iio

    image = iio.imread(set12 / "05.png").astype(numpy.float64)[100:196, 100:196]
    shifts = [(0, 0), (1, 2), (-2, 1), (3, -1), (-1, -3), (2, 3), (-3, -2), (1, -2)]
    clean = numpy.stack([numpy.roll(image, shift, axis=(0, 1)) for shift in shifts])
    noisy = clean + numpy.random.default_rng(0).normal(0, 25, clean.shape)
    frames = numpy.stack([nlfilt.denoise(frame, sigma=25.0, device="cpu") for frame in noisy])
    volume = nlfilt.denoise(noisy, channel_axis=None, patch=(1, 5, 5), window=(15, 11, 11), sigma=25.0,
                            device="cpu")

    def psnr(estimate):
        return 10 * numpy.log10(255**2 / numpy.mean((estimate - clean) ** 2))

    assert psnr(volume) >= psnr(frames) + 1.0, (psnr(volume), psnr(frames))


def test_the_collaborative_filter_takes_a_volume_as_a_series_of_slices_of_at_least_8x8():
    with pytest.raises(ValueError, match="at least 8x8 pixels; got 6x5"):
        nlfilt.denoise_collaborative(VOLUME, channel_axis=None, device="cpu")
    slices = numpy.repeat(VOLUME, 2, axis=1).repeat(2, axis=2)
    assert nlfilt.denoise_collaborative(slices, channel_axis=None, device="cpu").shape == slices.shape


# ---------------------------------------------------------------- the collaborative filter of cubes


def ellipsoids(depth: int = 24, size: int = 72, seed: int = 0) -> numpy.ndarray:
    """A clean (Z, H, W) volume in 8-bit levels: ellipsoids of random extent and level over a background,
    with a smooth 3-D texture."""
    rng = numpy.random.default_rng(seed)
    z, y, x = numpy.mgrid[0:depth, 0:size, 0:size].astype(float)
    volume = numpy.full((depth, size, size), 60.0)
    for _ in range(25):
        centre = rng.uniform(0, (depth, size, size))
        axes = (rng.uniform(4, 12), rng.uniform(5, 20), rng.uniform(5, 20))
        inside = sum(((axis - middle) / extent) ** 2 for axis, middle, extent in zip((z, y, x), centre, axes,
                                                                                    strict=True)) <= 1
        volume[inside] = rng.uniform(20, 230)
    for _ in range(4):
        volume += 8 * numpy.sin(rng.uniform(0.05, 0.3) * z + rng.uniform(0.05, 0.4) * y
                                + rng.uniform(0.05, 0.4) * x + rng.uniform(0, 6))
    return numpy.clip(volume, 0, 255)


def psnr(estimate, clean):
    return 10 * numpy.log10(255**2 / numpy.mean((numpy.clip(estimate, 0, 255) - clean) ** 2))


@pytest.mark.parametrize(("shape", "cube", "radius", "group"), [
    ((9, 20, 17, 1), (4, 4, 4), (2, 3, 3), 8),
    ((4, 6, 7, 1), (4, 4, 4), (2, 2, 2), 16),   # fewer candidates than members: repeated in order
    ((12, 30, 30, 1), (2, 4, 4), (1, 5, 5), 16),  # anisotropic cubes
    ((1, 12, 12, 1), (1, 4, 4), (1, 2, 2), 4),  # one slice
])
def test_the_compiled_cube_matching_is_its_array_twin(shape, cube, radius, group):
    from nlfilt.backend import get_backend
    from nlfilt.jit_groups import CompiledCubes
    from nlfilt.volume import CubeGroups

    levels = numpy.random.default_rng(shape[0]).integers(0, 6, size=shape[:3]).astype(numpy.int32)
    twin = CubeGroups(get_backend("cpu"), shape, cube=cube, step=tuple(min(3, side) for side in cube))
    expected = twin.match(levels, radius=radius, group=group)
    numpy.testing.assert_array_equal(CompiledCubes(twin).match(levels, radius=radius, group=group), expected)
    numpy.testing.assert_array_equal(expected[:, 0], twin.origins())  # the reference heads its group
    depth, height, width = shape[:3]
    corner = numpy.stack(numpy.unravel_index(expected, (depth, height, width)), axis=-1)
    assert (corner >= 0).all() and (corner <= numpy.array(shape[:3]) - numpy.array(cube)).all()
    reference = numpy.stack(numpy.unravel_index(expected[:, :1], (depth, height, width)), axis=-1)
    assert (numpy.abs(corner - reference) <= numpy.array(radius)).all()


def test_the_bayes_estimate_of_cubes_is_the_cube_covariance_formula():
    """Per group of cubes, the pilot's mean ``m`` and covariance ``C`` (voxels x voxels), each noisy cube
    ``y`` replaced by ``m + C (C + sigma^2 I)^-1 (y - m)``, added back with the cube's Kaiser weights."""
    from nlfilt.backend import get_backend
    from nlfilt.collaborative import kaiser_window, quantise
    from nlfilt.volume import CubeGroups

    shape, cube, sigma = (6, 14, 13, 1), (2, 4, 4), 20.0
    rng = numpy.random.default_rng(2)
    clean = 100 + 60 * (numpy.indices(shape[:3]).sum(axis=0) % 7 > 3)
    noisy = (clean + rng.normal(0, sigma, shape[:3]))[..., None]
    pilot = (clean + rng.normal(0, 5, shape[:3]))[..., None]
    twin = CubeGroups(get_backend("cpu"), shape, cube=cube, step=(1, 3, 3))
    members = twin.match(quantise(numpy, pilot[..., 0].copy(), sigma), radius=(1, 3, 3), group=8)
    index = members[:, :, None] + twin.within()
    weights = kaiser_window(cube).ravel()
    numerator, denominator = numpy.zeros(noisy.size), numpy.zeros(noisy.size)
    for rows in index:
        guide, values = pilot.ravel()[rows], noisy.ravel()[rows]
        mean = guide.mean(axis=0)
        covariance = (guide - mean).T @ (guide - mean) / len(rows)
        shrink = covariance @ numpy.linalg.inv(covariance + sigma**2 * numpy.eye(len(weights)))
        numpy.add.at(numerator, rows, (mean + (values - mean) @ shrink.T) * weights)
        numpy.add.at(denominator, rows, numpy.broadcast_to(weights, rows.shape))
    expected = (numerator / denominator).reshape(shape)
    numpy.testing.assert_allclose(twin.bayes(noisy, pilot, members, sigma), expected, rtol=1e-9, atol=1e-8)


def test_cubes_beat_the_slices_as_a_series_and_one_by_one_on_a_volume():
    clean = ellipsoids()
    noise = 25 * numpy.random.default_rng(1).standard_normal(clean.shape)
    noisy = numpy.clip(numpy.round(clean + noise), 0, 255)
    cubes = nlfilt.denoise_collaborative(noisy, sigma=25.0, channel_axis=None, stack="volume", device="cpu")
    series = nlfilt.denoise_collaborative(noisy, sigma=25.0, channel_axis=None, device="cpu")
    slices = numpy.stack([nlfilt.denoise_collaborative(plane, sigma=25.0, device="cpu") for plane in noisy])
    assert psnr(cubes, clean) > psnr(series, clean) + 0.1
    assert psnr(cubes, clean) > psnr(slices, clean) + 1


def test_a_volume_too_large_for_int32_voxel_indices_is_refused():
    from nlfilt.backend import get_backend
    from nlfilt.volume import CubeGroups

    with pytest.raises(ValueError, match="over the 2\\^31 the cube filter indexes"):
        CubeGroups(get_backend("cpu"), (1024, 2048, 1024, 1), cube=(4, 4, 4))


def test_anisotropic_voxels_get_shorter_cubes_and_search():
    from nlfilt.volume import CUBE, RADIUS, cube_shape

    assert cube_shape(None) == (CUBE, RADIUS) and cube_shape((1.0, 1.0, 1.0)) == (CUBE, RADIUS)
    assert cube_shape((0.5, 1.0, 1.0)) == (CUBE, RADIUS)  # closer slices: isotropic cubes
    assert cube_shape((3.0, 1.0, 1.0)) == ((2, 4, 4), (2, 5, 5))  # no shallower than 2
    assert cube_shape((2.0, 0.9, 1.1)) == ((2, 4, 4), (2, 5, 5))
    assert cube_shape((10.0, 1.0, 1.0)) == ((2, 4, 4), (1, 5, 5))
    assert cube_shape(None, slices=3) == ((3, 4, 4), RADIUS)  # no deeper than the volume
    assert cube_shape((3.0, 1.0, 1.0), slices=1) == ((1, 4, 4), (2, 5, 5))
    with pytest.raises(ValueError, match="spacing must be three positive numbers"):
        cube_shape((0.0, 1.0, 1.0))


def test_a_volume_of_cubes_takes_colour_and_refuses_what_does_not_fit():
    rng = numpy.random.default_rng(2)
    colour = rng.random((5, 16, 18, 3)) * 255
    out = nlfilt.denoise_collaborative(colour, sigma=20.0, channel_axis=-1, stack="volume", device="cpu")
    assert out.shape == colour.shape and out.dtype == numpy.float32
    gray = rng.random((5, 16, 18)) * 255
    assert nlfilt.denoise_collaborative(gray, sigma=0.0, channel_axis=None, stack="volume",
                                        device="cpu").shape == gray.shape
    for arguments, message in [({"stack": "cube"}, "stack must be 'series' or 'volume'"),
                               ({"spacing": (1, 1, 1)}, "spacing is for a stack filtered as one volume"),
                               ({"stack": "volume", "spacing": (1, -1, 1)}, "spacing must be three")]:
        with pytest.raises(ValueError, match=message):
            nlfilt.denoise_collaborative(gray, sigma=20.0, channel_axis=None, device="cpu", **arguments)
    thin = nlfilt.denoise_collaborative(gray[:2], sigma=20.0, channel_axis=None, stack="volume", device="cpu")
    assert thin.shape == (2, 16, 18) and numpy.isfinite(thin).all()  # cubes no deeper than the volume
    with pytest.raises(ValueError, match="smaller than the 2x4x4 cubes"):
        nlfilt.denoise_collaborative(gray[:2, :3], sigma=20.0, channel_axis=None, stack="volume",
                                     device="cpu")


def test_stack_volume_on_the_command_line_takes_the_voxel_spacing_from_the_file(tmp_path):
    import tifffile

    from clitools import report_entries, run

    clean = ellipsoids(depth=8, size=32)
    noisy = numpy.clip(numpy.round(clean + 20 * numpy.random.default_rng(3).standard_normal(clean.shape)),
                       0, 255).astype(numpy.uint8)
    source = tmp_path / "cells.tif"
    tifffile.imwrite(source, noisy, imagej=True, resolution=(1.0, 1.0),
                     metadata={"axes": "ZYX", "spacing": 3.0})
    result = run("denoise", source, "-o", tmp_path / "out.tif", "--stack", "volume", "--sigma", "20",
                 "--report", tmp_path / "r.jsonl")
    assert result.exit_code == 0, result.output
    assert report_entries((tmp_path / "r.jsonl").read_text())[0]["stack"] == "volume"
    expected = nlfilt.denoise_collaborative(noisy.astype(numpy.float32), sigma=20.0, channel_axis=None,
                                            stack="volume", spacing=(3.0, 1.0, 1.0), device="cpu")
    assert numpy.isfinite(expected).all() and psnr(expected, clean) > psnr(noisy, clean) + 5
    from nlfilt.images import cast_like

    numpy.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"),
                                     cast_like(expected, numpy.dtype(numpy.uint8)))
    isotropic = nlfilt.denoise_collaborative(noisy.astype(numpy.float32), sigma=20.0, channel_axis=None,
                                             stack="volume", device="cpu")
    assert not numpy.array_equal(cast_like(isotropic, numpy.dtype(numpy.uint8)),
                                 tifffile.imread(tmp_path / "out.tif"))
