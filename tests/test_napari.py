"""The napari plugin without Qt: planning a layer, refusals, the filtering (eager and lazy), the shipped
sample, the manifest.  The widget in a real viewer: test_napari_widget.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy
import pytest

import nlfilt
from nlfilt.cli import options
from nlfilt.napari_plugin import work
from nlfilt.napari_plugin.work import Cancelled, LayerRefused, Request, denoise_layer, plan_layer
from nlfilt.sample import noisy_sample, scene

ROOT = Path(__file__).resolve().parents[1]


def noisy(shape: tuple[int, ...], seed: int = 0, sigma: float = 20.0) -> numpy.ndarray:
    """A uint8 image of ``shape``: smooth ramps plus clipped noise."""
    rng = numpy.random.default_rng(seed)
    ramp = numpy.add.outer(numpy.linspace(40, 200, shape[-2]), numpy.linspace(0, 30, shape[-1]))
    clean = numpy.broadcast_to(ramp, shape[:-2] + ramp.shape)
    return numpy.clip(numpy.rint(clean + sigma * rng.standard_normal(shape)), 0, 255).astype(numpy.uint8)


def collaborative(image: numpy.ndarray, **options) -> numpy.ndarray:
    """The library's default method on ``image`` in float32, rounded back to its integer dtype."""
    result = nlfilt.denoise_collaborative(image.astype(numpy.float32), device="cpu", **options)
    return numpy.clip(numpy.rint(result), 0, 255).astype(image.dtype)


# ---------------------------------------------------------------- the sample

def test_sample_is_the_quick_starts_sample():
    assert numpy.array_equal(scene(), iio.imread(ROOT / "examples" / "sample_clean.png"))
    assert numpy.array_equal(noisy_sample(), iio.imread(ROOT / "examples" / "sample.png"))


# ---------------------------------------------------------------- the work, without Qt

def test_a_plane_is_the_library_call():
    image = noisy((48, 40))
    job = plan_layer(image, rgb=False, request=Request(device="cpu"))
    result, sigma = denoise_layer(job)
    assert result.dtype == numpy.uint8
    numpy.testing.assert_array_equal(result, collaborative(image))
    _, info = nlfilt.denoise_collaborative(image.astype(numpy.float32), device="cpu", return_info=True)
    assert sigma == pytest.approx(info.sigma)


def test_given_sigma_and_the_filter_method():
    image = noisy((40, 40))
    result, sigma = denoise_layer(plan_layer(image, rgb=False, request=Request(method="filter", sigma=20.0)))
    expected = nlfilt.denoise(image.astype(numpy.float32), sigma=20.0, device="cpu")
    numpy.testing.assert_array_equal(result, numpy.clip(numpy.rint(expected), 0, 255).astype(numpy.uint8))
    assert sigma == 20.0


def test_frames_series_and_volume_of_a_stack():
    stack = noisy((3, 32, 32))
    frames, _ = denoise_layer(plan_layer(stack, rgb=False, request=Request(stack="frames")))
    numpy.testing.assert_array_equal(frames, numpy.stack([collaborative(plane) for plane in stack]))
    series, _ = denoise_layer(plan_layer(stack, rgb=False, request=Request(stack="series")))
    numpy.testing.assert_array_equal(series, collaborative(stack, stack="series", channel_axis=None))
    job = plan_layer(stack, rgb=False, request=Request(stack="volume"), scale=(3.0, 1.0, 1.0))
    assert job.plan.spacing == (3.0, 1.0, 1.0)  # the layer's scale is the voxel spacing
    volume, _ = denoise_layer(job)
    numpy.testing.assert_array_equal(volume, collaborative(stack, stack="volume", spacing=(3.0, 1.0, 1.0),
                                                                channel_axis=None))
    assert not numpy.array_equal(series, frames) and not numpy.array_equal(volume, series)


def test_auto_is_series_for_a_time_or_depth_axis():
    stack = noisy((3, 32, 32))
    labelled = plan_layer(stack, rgb=False, request=Request(), axis_labels=("t", "y", "x"))
    plain = plan_layer(stack, rgb=False, request=Request(), axis_labels=("-3", "-2", "-1"))
    assert (labelled.plan.stack, labelled.unit_axes) == ("series", 3)
    assert (plain.plan.stack, plain.unit_axes) == (None, 2)


def test_a_volume_per_time_point():
    hyperstack = noisy((2, 3, 24, 24))
    job = plan_layer(hyperstack, rgb=False, request=Request(stack="volume"))
    assert (job.units, job.unit_axes) == (2, 3)
    result, _ = denoise_layer(job)
    for point in range(2):
        expected = collaborative(hyperstack[point], stack="volume", channel_axis=None)
        numpy.testing.assert_array_equal(result[point], expected)


def test_rgba_keeps_alpha_and_uint16_and_float64_keep_their_dtype():
    rgb = numpy.stack([noisy((32, 32), seed) for seed in range(3)], axis=-1)
    alpha = numpy.arange(32 * 32, dtype=numpy.uint8).reshape(32, 32)
    rgba = numpy.concatenate([rgb, alpha[..., None]], axis=-1)
    result, _ = denoise_layer(plan_layer(rgba, rgb=True, request=Request()))
    numpy.testing.assert_array_equal(result[..., 3], alpha)
    numpy.testing.assert_array_equal(result[..., :3], collaborative(rgb))
    deep = noisy((32, 32)).astype(numpy.uint16) * 257
    result, _ = denoise_layer(plan_layer(deep, rgb=False, request=Request()))
    assert result.dtype == numpy.uint16 and result.max() > 255
    real = noisy((32, 32)) / 255.0
    job = plan_layer(real, rgb=False, request=Request())
    result, _ = denoise_layer(job)
    assert job.plan.dtype == "float64" and result.dtype == numpy.float64


def test_progress_reaches_the_end_and_cancel_stops():
    stack = noisy((3, 24, 24))
    job = plan_layer(stack, rgb=False, request=Request(stack="frames"))
    reports = []
    denoise_layer(job, progress=lambda done, total: reports.append((done, total)))
    assert reports[-1] == (3.0, 3) and all(b[0] >= a[0] for a, b in zip(reports, reports[1:], strict=False))
    asked = []

    def cancelled() -> bool:
        asked.append(True)
        return len(asked) > 2

    with pytest.raises(Cancelled):
        denoise_layer(job, cancelled=cancelled)


def test_dask_layers_are_lazy_and_equal_the_eager_result(monkeypatch):
    da = pytest.importorskip("dask.array")
    stack = noisy((4, 32, 32))
    job = plan_layer(da.from_array(stack, chunks=(2, 16, 16)), rgb=False, request=Request(stack="frames"))
    assert job.lazy
    result, sigma = denoise_layer(job)
    assert isinstance(result, da.Array) and sigma is None
    eager, _ = denoise_layer(plan_layer(stack, rgb=False, request=Request(stack="frames")))
    numpy.testing.assert_array_equal(result[2].compute(), eager[2])
    numpy.testing.assert_array_equal(result.compute(), eager)
    plane = noisy((192, 192))  # one large plane: chunk by chunk with a halo, as nlfilt.dask does
    assert not plan_layer(da.from_array(plane, chunks=96), rgb=False, request=Request()).lazy
    monkeypatch.setattr(work, "LAZY_PLANE_PIXELS", 100 * 100)
    job = plan_layer(da.from_array(plane, chunks=96), rgb=False, request=Request(sigma=20.0))
    lazy, _ = denoise_layer(job)
    assert job.lazy and lazy.dtype == numpy.uint8
    assert numpy.abs(lazy.compute().astype(int) - collaborative(plane, sigma=20.0).astype(int)).max() <= 1
    monkeypatch.setattr(options, "physical_memory", lambda: 2**30)  # a 1 GiB machine
    side = 40_000  # a 3 GB plane: filtered at once it would not fit, chunk by chunk it does
    at_once = numpy.broadcast_to(numpy.zeros((), numpy.uint16), (side, side))  # no memory behind it
    with pytest.raises(LayerRefused, match="working memory"):
        plan_layer(at_once, rgb=False, request=Request(max_minutes=0))
    assert plan_layer(da.zeros((side, side), dtype=numpy.uint16, chunks=4096), rgb=False,
                      request=Request(max_minutes=0)).lazy
    series = plan_layer(da.from_array(stack), rgb=False, request=Request(stack="series"))
    assert not series.lazy  # one series needs all its frames: filtered at once


@pytest.mark.parametrize(("data", "rgb", "request_", "words"), [
    (numpy.zeros((5, 5), numpy.uint8), False, Request(), "smaller than the 8x8 patches"),
    (numpy.zeros((2048, 2048), numpy.uint8), False, Request(max_minutes=0.01), "over --max-minutes 0.01"),
    (numpy.zeros((3, 32, 32), numpy.uint8), False, Request(method="filter", stack="series"),
     "--stack series needs --method collaborative"),
    (numpy.zeros((32, 32), bool), False, Request(), "bool"),
    (numpy.zeros((32, 32), complex), False, Request(), "complex128"),
    (numpy.zeros(32, numpy.uint8), False, Request(), "1 spatial axis"),
    (numpy.zeros((32, 32, 2), numpy.uint8), True, Request(), "3 or 4 channels"),
    (numpy.zeros((32, 32), numpy.uint8), False, Request(sigma=-1.0), "sigma"),
    (numpy.zeros((32, 32), numpy.uint8), False, Request(method="bm3d"), "method must be one of"),
])
def test_refusals_name_the_problem(data, rgb, request_, words):
    with pytest.raises(LayerRefused, match=None) as caught:
        plan_layer(data, rgb=rgb, request=request_)
    assert words in str(caught.value)


def test_an_unusable_gpu_is_refused_with_the_reason():
    if nlfilt.backend.gpu_status()[0]:
        pytest.skip("a GPU is usable here")
    with pytest.raises(LayerRefused, match="--device gpu: no GPU is usable"):
        plan_layer(noisy((32, 32)), rgb=False, request=Request(device="gpu"))


# ---------------------------------------------------------------- the manifest

def test_npe2_validates_the_manifest():
    pytest.importorskip("npe2")
    npe2 = shutil.which("npe2", path=str(Path(sys.executable).parent)) or shutil.which("npe2")
    if npe2 is None:
        pytest.skip("the npe2 command is not installed")
    done = subprocess.run([npe2, "validate", "nlfilt"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid" in done.stdout + done.stderr
