"""One plan per image: the options reach every path unchanged; methods and stopping rules are registries."""

from __future__ import annotations

import json
import pickle

import imageio.v3 as iio
import numpy
import pytest
from click.testing import CliRunner

import nlfilt
from nlfilt import stopping
from nlfilt.cli import main
from nlfilt.cli.denoise import Job, cluster_job
from nlfilt.cli.options import RunOptions
from nlfilt.cost import expected_applications
from nlfilt.methods import FilterMethod, Method, Plan, make_plan, method_names, register_method
from nlfilt.methods import base as methods_base
from nlfilt.resolve import resolve_options
from nlfilt.stopping import StopRule, register_stop_rule, stop_rule_names

RNG = numpy.random.default_rng(31)

#: Filter options that every path takes (windowed NLM with row sums and a fixed step count), none at its
#: default: the option, its command-line words, and the value the final nlfilt.denoise call must get.
LOCAL = [("patch", ["--patch", "3"], 3), ("window", ["--window", "7"], 7),
         ("window_shape", ["--window-shape", "tent"], "tent"), ("h", ["--h", "12.5"], 12.5),
         ("iterations", ["--iterations", "2"], 2), ("memory_budget", ["--memory-budget", "64M"], 64 * 2**20),
         ("sigma", ["--sigma", "9"], 9.0)]
#: Options only the paths with the whole image take (no chunk can), in the combinations they go in.
WHOLE = [[("normalize", ["--normalize", "sinkhorn"], "sinkhorn")],
         [("guide", ["--guide", "pilot"], "pilot")],
         [("iterations", ["--iterations", "auto"], "auto"),
          ("stop", ["--stop", "discrepancy"], "discrepancy"),
          ("max_iterations", ["--max-iterations", "5"], 5)]]


def noisy(height: int = 40, width: int = 44, dtype=numpy.uint8) -> numpy.ndarray:
    rows, cols = numpy.mgrid[:height, :width]
    clean = 120 + 50 * numpy.sin(cols / 4.0) * (rows > height // 3)
    values = numpy.clip(clean + RNG.normal(0, 15, clean.shape), 0, 255)
    return values.astype(dtype)


@pytest.fixture
def calls(monkeypatch):
    """Every call of nlfilt.denoise (the library's and the filter method's), by its keyword arguments."""
    seen = []
    real = nlfilt.denoise

    def spy(image, **kwargs):
        seen.append(kwargs)
        return real(image, **kwargs)

    monkeypatch.setattr(nlfilt, "denoise", spy)
    monkeypatch.setattr("nlfilt.methods.filter_method.denoise", spy)
    return seen


def words(options) -> list[str]:
    return [word for _, flags, _ in options for word in flags]


def reached(call: dict, options) -> None:
    for name, _, value in options:
        assert call[name] == value, (name, call[name], value)


def test_every_option_reaches_every_path(tmp_path, calls):
    """The one-process batch, a streamed TIFF, a cluster task (its options pickled to the worker) and
    nlfilt.dask: the final nlfilt.denoise call gets every option (--window-shape was dropped by the
    streamed path once)."""
    iio.imwrite(tmp_path / "a.tif", noisy())
    arguments = ["denoise", str(tmp_path / "a.tif"), "--method", "filter", "--device", "cpu", "--quiet",
                 *words(LOCAL)]
    for extra in ([], ["--chunk", "256"]):  # in memory, then streamed in chunks
        calls.clear()
        result = CliRunner().invoke(main, [*arguments, "-o", str(tmp_path / f"out{len(extra)}.tif"), *extra])
        assert result.exit_code == 0, result.output
        assert calls and all(reached(call, LOCAL) is None for call in calls)
    calls.clear()
    run = RunOptions.from_params({"method": "filter", "device": "cpu", **{"patch": 3, "window": 7,
                                  "window_shape": "tent", "h": 12.5, "iterations": 2,
                                  "memory_budget": 64 * 2**20, "sigma": 9.0}})
    entry = cluster_job(Job(tmp_path / "a.tif", tmp_path / "cluster.tif"), pickle.loads(pickle.dumps(run)),
                        False, 0.0)
    assert entry["status"] == "denoised", entry
    reached(calls[-1], LOCAL)
    import dask.array as da

    from nlfilt import dask as nlfilt_dask

    calls.clear()
    options = {name: value for name, _, value in LOCAL}
    nlfilt_dask.denoise(da.from_array(noisy().astype(numpy.float32), chunks=24), device="cpu",
                        **options).compute()
    assert calls and all(reached(call, LOCAL) is None for call in calls)


@pytest.mark.parametrize("chosen", WHOLE, ids=[options[0][0] for options in WHOLE])
def test_whole_image_options_reach_the_batch_and_are_refused_in_chunks(tmp_path, calls, chosen):
    iio.imwrite(tmp_path / "a.tif", noisy())
    arguments = ["denoise", str(tmp_path / "a.tif"), "--method", "filter", "--device", "cpu", "--quiet",
                 *words(chosen)]
    result = CliRunner().invoke(main, [*arguments, "-o", str(tmp_path / "whole.tif")])
    assert result.exit_code == 0, result.output
    reached(calls[0], chosen)
    streamed = CliRunner().invoke(main, [*arguments, "--chunk", "256", "-o", str(tmp_path / "chunks.tif")])
    assert streamed.exit_code == 1 and "no chunk" in streamed.output, streamed.output
    assert not (tmp_path / "chunks.tif").exists()


def test_pixels_of_more_than_32_bits_are_filtered_in_float64(tmp_path, calls):
    iio.imwrite(tmp_path / "wide.tif", noisy().astype(numpy.float64))
    iio.imwrite(tmp_path / "narrow.tif", noisy().astype(numpy.float32))
    for name, dtype in (("wide", "float64"), ("narrow", "float32")):
        result = CliRunner().invoke(main, ["denoise", str(tmp_path / f"{name}.tif"), "-o",
                                           str(tmp_path / f"out-{name}.tif"), "--method", "filter",
                                           "--device", "cpu", "--quiet"])
        assert result.exit_code == 0, result.output
        assert numpy.dtype(calls[-1]["dtype"]) == numpy.dtype(dtype)


def test_a_plan_is_built_once_per_image_and_is_immutable_and_picklable(tmp_path, monkeypatch):
    built = []
    real = methods_base.make_plan

    def counting(*args, **kwargs):
        built.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr("nlfilt.cli.options.make_plan", counting)
    for index in range(3):
        iio.imwrite(tmp_path / f"{index}.png", noisy())
    result = CliRunner().invoke(main, ["denoise", str(tmp_path), "-o", str(tmp_path / "out"), "--quiet",
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert built == ["collaborative"] * 3
    plan = make_plan("filter", {"window": 7}, (40, 44, 1), device="cpu")
    assert pickle.loads(pickle.dumps(plan)) == plan
    with pytest.raises(AttributeError):
        plan.sigma = 3.0  # frozen
    assert plan["window"] == 7 and plan.with_settings(window=9)["window"] == 9 and plan["window"] == 7


def test_filter_settings_resolve_the_defaults_once_from_the_image_shape():
    plan = make_plan("filter", {}, (40, 44, 3), device="cpu")
    resolved = resolve_options((40, 44, 3), kernel="nlm", patch=None, window="auto", h=None, sigma=None,
                               depth=1, memory_budget=nlfilt.DEFAULT_MEMORY_BUDGET)
    assert (plan["patch"], plan["window"], plan["normalize"]) == (resolved.patch, resolved.window, "rows")
    assert FilterMethod.filter_options(plan) == resolved
    with pytest.raises(ValueError, match="smaller than the default patch"):
        make_plan("filter", {}, (3, 40, 1), device="cpu")
    assert make_plan("collaborative", {}, (4, 40, 44, 1), device="cpu").method == "collaborative"  # a series
    with pytest.raises(ValueError, match="smaller than the 8x8 patches"):
        make_plan("collaborative", {}, (4, 6, 44, 1), device="cpu")  # one frame's size is checked


class Identity(Method):
    """A method for the tests: gives the image back."""

    name = "identity"
    summary = "the image as it is"
    options = {"scale": 1.0}
    gpu = False

    def seconds(self, shape, plan):
        return 0.0

    def working_bytes(self, shape, plan):
        return 0

    def denoise(self, image, plan, progress):
        info = nlfilt.DenoiseInfo(iterations=1, pilot_iterations=None, sigma=plan.sigma or 0.0, h=None,
                                  stop=None, risk=None, residual=None, applications=0)
        return image * plan["scale"], info


def test_a_registered_method_is_offered_checked_and_run_by_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setattr(methods_base, "_METHODS", dict(methods_base._METHODS))
    register_method(Identity)
    assert "identity" in method_names()
    pixels = noisy()
    iio.imwrite(tmp_path / "a.png", pixels)
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"),
                                       "--method", "identity", "--quiet", "--report",
                                       str(tmp_path / "r.jsonl")])
    assert result.exit_code == 0, result.output
    numpy.testing.assert_array_equal(iio.imread(tmp_path / "o.png"), pixels)
    header = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    assert header["options"]["method"] == "identity" and header["options"]["scale"] == 1.0
    assert "kernel" not in header["options"]
    refused = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "p.png"),
                                        "--method", "identity", "--kernel", "arccos"])
    assert refused.exit_code == 2
    assert "--kernel configures --method filter, not --method identity" in " ".join(refused.output.split())
    with pytest.raises(ValueError, match="--method identity works on 2-D images, not stacks"):
        make_plan("identity", {}, (4, 40, 44, 1), device="cpu")  # a method without stack modes
    on_gpu = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "p.png"),
                                       "--method", "identity", "--device", "gpu"])
    assert on_gpu.exit_code == 2 and "--method identity runs on the CPU only" in on_gpu.output
    assert header["options"]["device"] == "cpu"  # 'auto' means the CPU for a method without a GPU path


def test_the_report_of_a_collaborative_run_lists_only_its_own_options(tmp_path):
    iio.imwrite(tmp_path / "a.png", noisy())
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"),
                                       "--quiet", "--device", "cpu", "--report", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 0, result.output
    header, entry = (json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines())
    assert header["options"]["method"] == "collaborative"
    assert not {"kernel", "window", "iterations", "patch"} & set(header["options"])
    assert not {"iterations", "pilot_iterations"} & set(entry) and entry["sigma"] > 0


class FirstStep(StopRule):
    """A rule for the tests: always the first step, no twin."""

    name = "first"
    summary = "the first step"

    def choose(self, residual, divergence, sigma, count, final):
        return 1


def test_a_registered_stopping_rule_is_used_and_costed_by_its_twin(tmp_path, monkeypatch):
    monkeypatch.setattr(stopping, "_STOP_RULES", dict(stopping._STOP_RULES))
    register_stop_rule(FirstStep)
    assert stop_rule_names()[-1] == "first"
    image = noisy().astype(numpy.float32)
    _, info = nlfilt.denoise(image, iterations="auto", stop="first", device="cpu", return_info=True)
    assert info.iterations == 1 and info.risk is None
    options = make_plan("filter", {}, image.shape + (1,), device="cpu")
    plan = FilterMethod.filter_options(options)
    no_twin = expected_applications(plan, "auto", False, stop="first")
    assert expected_applications(plan, "auto", False, stop="sure") == 2 * no_twin
    assert expected_applications(plan, "auto", False, stop="discrepancy") == no_twin
    iio.imwrite(tmp_path / "a.png", noisy())
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"),
                                       "--method", "filter", "--iterations", "auto", "--stop", "first",
                                       "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output


def test_plans_are_the_same_in_every_process(tmp_path):
    """A RunOptions sent to a dask worker gives the worker's images the plans the client would."""
    run = RunOptions.from_params({"method": "filter", "window_shape": "tent", "device": "cpu"})
    copy = pickle.loads(pickle.dumps(run))
    assert copy == run
    assert copy.plan((40, 44, 1), numpy.uint8, "cpu") == run.plan((40, 44, 1), numpy.uint8, "cpu")
    assert isinstance(run.plan((40, 44, 1), numpy.uint16, "cpu"), Plan)
