"""Progress reports: products with K from every mode, the meter's bookkeeping, and the command-line bar."""

from __future__ import annotations

import imageio.v3 as iio
import numpy
import pytest
from click.testing import CliRunner

import nlfilt
from nlfilt.cli import main
from nlfilt.cli import progress as cli_progress
from nlfilt.filters import ProgressMeter, build_filter
from nlfilt.resolve import prepare

RNG = numpy.random.default_rng(11)


def scene(size: int, channels: int = 0) -> numpy.ndarray:
    """A noisy test scene (0..255 plus noise of sigma 20): ramps, a bright square, stripes."""
    rows, cols = numpy.mgrid[:size, :size] / size
    clean = 60 + 100 * cols + 40 * rows
    clean[(rows > 0.25) & (rows < 0.5) & (cols > 0.25) & (cols < 0.5)] = 220
    clean += 60 * (numpy.sin(2 * numpy.pi * cols * 8) > 0) * (rows > 0.75)
    if channels:
        clean = numpy.stack([clean * (0.8 + 0.1 * c) for c in range(channels)], axis=2)
    return clean + RNG.normal(0, 20, clean.shape)


def record(**call):
    """Run denoise with a recording callback; return (calls, info)."""
    calls = []
    _, info = nlfilt.denoise(device="cpu", return_info=True,
                             progress=lambda done, total: calls.append((done, total)), **call)
    return calls, info


def check_reports(calls, applications):
    """The contract of the progress callback, for a call that made ``applications`` products with K."""
    assert calls, "progress was never called"
    dones = [done for done, _ in calls]
    assert all(later >= earlier for earlier, later in zip(dones, dones[1:], strict=False)), "done went back"
    assert all(isinstance(total, int) and total > 0 and 0 <= done <= total for done, total in calls)
    assert calls[-1] == (applications, applications)
    finished = [done for done in dones if float(done).is_integer()]
    assert finished[: applications] == list(range(1, applications + 1))  # every product is reported


MODES = {
    "window t1": {"patch": 3, "window": 7},
    "window t3 rgb": {"patch": 3, "window": 7, "iterations": 3, "channels": 3},
    "window auto": {"patch": 3, "window": 7, "iterations": "auto"},
    "window sinkhorn": {"patch": 3, "window": 7, "normalize": "sinkhorn"},
    "window pilot auto": {"patch": 3, "window": 7, "iterations": "auto", "guide": "pilot"},
    "window arccos": {"kernel": "arccos", "window": 7},
    "global nlm t2": {"window": None, "iterations": 2},
    "global arccos": {"kernel": "arccos"},
    "global ntk auto": {"kernel": "ntk", "depth": 2, "iterations": "auto"},
    "global arccos pilot auto": {"kernel": "arccos", "iterations": "auto", "guide": "pilot"},
}


@pytest.mark.parametrize("mode", MODES)
def test_progress_counts_products_with_k_in_every_mode(mode):
    call = dict(MODES[mode])
    channels = call.pop("channels", 0)
    calls, info = record(image=scene(32, channels), **call)
    check_reports(calls, info.applications)


def test_windowed_products_report_their_offsets(monkeypatch):
    monkeypatch.setattr("nlfilt.jit.load_numba", lambda: None)  # the array code
    calls, _ = record(image=scene(32), patch=3, window=9)  # 41 offsets, one product
    parts = [done for done, _ in calls if not float(done).is_integer()]
    assert len(parts) >= 10 and all(0 < part < 1 for part in parts)


def test_compiled_windowed_products_report_their_bands(monkeypatch):
    monkeypatch.setattr("nlfilt.jit.BAND_ROWS", 1)  # bands of one row (the window's radius)
    calls, _ = record(image=scene(32), patch=3, window=3)  # 32 bands, one product
    parts = [done for done, _ in calls if not float(done).is_integer()]
    assert len(parts) >= 10 and all(0 < part < 1 for part in parts)


def test_global_products_report_their_tiles():
    image = scene(64)
    backend, array, options = prepare(image, kernel="arccos", patch=None, window=None, h=None, sigma=None,
                                      depth=1, device="cpu", dtype=numpy.float32,
                                      memory_budget=nlfilt.DEFAULT_MEMORY_BUDGET)
    rows, size = build_filter(backend, array, options, reuse=True).affinity.tile_rows, 64 * 64
    tiles = -(-size // rows)
    assert tiles > 1
    calls, info = record(image=image, kernel="arccos")
    parts = [done for done, _ in calls if not float(done).is_integer()]
    assert len(parts) == info.applications * (tiles - 1)  # every tile but the last (the product's end)
    pairs = sum(min(rows, size - start) * (size - start) for start in range(0, size, rows))
    assert parts[0] == pytest.approx(rows * size / pairs)  # the share of the pairs in the first tile


def test_progress_does_not_change_the_result():
    image = scene(32)
    for call in ({"window": 7, "iterations": "auto"}, {"kernel": "arccos", "iterations": 2}):
        plain = nlfilt.denoise(image, device="cpu", **call)
        reported = nlfilt.denoise(image, device="cpu", progress=lambda done, total: None, **call)
        numpy.testing.assert_array_equal(plain, reported)


def test_trajectory_and_filter_row_report_progress():
    image = scene(32)
    calls = []
    trajectory = nlfilt.twicing_trajectory(image, 50, kernel="arccos", device="cpu",
                                           progress=lambda done, total: calls.append((done, total)))
    check_reports(calls, trajectory.applications)
    calls.clear()
    nlfilt.filter_row(image, (5, 6), kernel="arccos", device="cpu",
                      progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1] >= 1  # lambda_max
    calls.clear()
    nlfilt.filter_row(image, (5, 6), window=7, device="cpu", progress=lambda done, total: calls.append(1))
    assert calls == []  # NLM's row of W takes no product with K


@pytest.mark.parametrize("function", [nlfilt.twicing_trajectory, nlfilt.filter_row])
def test_progress_must_be_callable(function):
    arguments = (scene(16), (1, 1)) if function is nlfilt.filter_row else (scene(16),)
    with pytest.raises(ValueError, match="progress"):
        function(*arguments, device="cpu", progress=3)


def test_meter_raises_an_exceeded_total_and_snaps_it_at_the_end():
    calls = []
    meter = ProgressMeter(lambda done, total: calls.append((done, total)), [2, 3])
    assert meter.total == 5
    for _ in range(4):  # the first stage takes twice its estimate
        meter.start()
        meter.part(0.5)
        meter.end()
    assert meter.total >= meter.done == 4
    meter.next_stage()
    assert meter.total == 4 + 3
    meter.expect(1)
    assert meter.total == 5
    for _ in range(3):
        meter.start()
        meter.end()
    assert meter.total >= 7
    meter.finish()
    assert calls[-1] == (7, 7)
    dones = [done for done, _ in calls]
    assert dones == sorted(dones) and all(done <= total for done, total in calls)


def test_meter_reports_nothing_without_products():
    calls = []
    ProgressMeter(lambda done, total: calls.append(done), [0]).finish()
    assert calls == []


@pytest.fixture()
def terminal(monkeypatch):
    """stderr taken for a terminal: tqdm bars."""
    monkeypatch.setattr(cli_progress, "on_terminal", lambda: True)


@pytest.fixture()
def log_file(monkeypatch):
    """stderr not a terminal (a log file), with a plain progress line at every report."""
    monkeypatch.setattr(cli_progress, "on_terminal", lambda: False)
    monkeypatch.setattr(cli_progress, "PLAIN_INTERVAL", 0.0)


def test_bar_follows_the_total_and_closes(capsys, terminal):
    bar = cli_progress.ProductBar("x.png", delay=0)
    bar(0.5, 4)
    bar(2.0, 4)
    bar(3.5, 6)  # the library raised its total
    assert bar.bar.total == 6 and bar.bar.n == pytest.approx(3.5)
    bar.close()
    err = capsys.readouterr().err
    assert "x.png" in err and "products with K" in err


def write_png(path, channels=0):
    image = numpy.clip(scene(48, channels), 0, 255).astype(numpy.uint8)
    iio.imwrite(path, image)
    return path


def test_without_a_terminal_progress_is_plain_lines_at_intervals(capsys, monkeypatch):
    monkeypatch.setattr(cli_progress, "on_terminal", lambda: False)
    clock = [100.0]
    monkeypatch.setattr(cli_progress, "_now", lambda: clock[0])
    bar = cli_progress.ProductBar("x.png", delay=2)
    for done in range(1, 11):
        clock[0] += 10  # a report every 10 s: a line every PLAIN_INTERVAL (30 s)
        bar(float(done), 10)
    bar.close()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 3 and "\r" not in err and "\x1b" not in err
    assert lines[0] == "x.png: 40% (4 of 10 products with K), 0:30 elapsed, about 0:45 left"


@pytest.mark.parametrize("quiet", [False, True])
@pytest.mark.usefixtures("terminal")
def test_cli_shows_a_bar_for_a_slow_single_file_unless_quiet(tmp_path, monkeypatch, quiet):
    monkeypatch.setattr(cli_progress, "BAR_DELAY", 0.0)  # every file is "slow"
    source = write_png(tmp_path / "in.png")
    args = ["denoise", str(source), "-o", str(tmp_path / "out.png"), "--method", "filter", "--kernel",
            "arccos"]  # one-shot
    result = CliRunner().invoke(main, args + (["--quiet"] if quiet else []), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    shown = "products with K" in result.stderr
    assert shown is not quiet
    if shown:
        assert "in.png" in result.stderr and "<" in result.stderr  # the name and the time left


def test_cli_shows_no_bar_for_a_quick_file(tmp_path):
    source = write_png(tmp_path / "in.png")
    result = CliRunner().invoke(main, ["denoise", str(source), "-o", str(tmp_path / "out.png")],
                                catch_exceptions=False)
    assert result.exit_code == 0 and "products with K" not in result.stderr


def test_a_batch_logged_to_a_file_gets_plain_lines_without_carriage_returns(tmp_path, monkeypatch, log_file):
    monkeypatch.setattr(cli_progress, "BAR_DELAY", 0.0)
    for name in ("a.png", "b.png"):
        write_png(tmp_path / name)
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o",
                                       str(tmp_path / "out"), "--method", "filter", "--kernel", "arccos"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    assert "a.png: 100% (" in result.stderr and "products with K), " in result.stderr
    assert "images: 100% (2 of 2 image), " in result.stderr


def test_a_run_the_estimate_let_through_is_stopped_at_twice_max_minutes(tmp_path, monkeypatch):
    from nlfilt.methods.filter_method import FilterMethod

    monkeypatch.setattr(FilterMethod, "seconds", lambda self, shape, plan: 0.0)  # an estimate far too low
    clock = [0.0]

    def ticking() -> float:
        clock[0] += 40.0  # forty seconds pass at every look at the clock
        return clock[0]

    monkeypatch.setattr(cli_progress, "_now", ticking)
    source = write_png(tmp_path / "in.png")
    result = CliRunner().invoke(main, ["denoise", str(source), "-o", str(tmp_path / "out.png"), "--method",
                                       "filter", "--kernel", "arccos", "--max-minutes", "0.5", "--quiet"],
                                catch_exceptions=False)
    assert result.exit_code == 1
    assert "over twice --max-minutes 0.5" in result.stderr and not (tmp_path / "out.png").exists()


@pytest.mark.usefixtures("terminal")
def test_filter_map_shows_a_bar(tmp_path, monkeypatch):
    monkeypatch.setattr(cli_progress, "BAR_DELAY", 0.0)
    source = write_png(tmp_path / "in.png")
    args = ["filter-map", str(source), "--pixel", "5", "6", "-o", str(tmp_path / "map.png"),
            "--kernel", "arccos"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0 and "products with K" in result.stderr
