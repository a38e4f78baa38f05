"""The napari widget in a real viewer: Qt offscreen, napari's OpenGL canvas on an X display (a virtual
one, Xvfb, that these tests start when none is set, ending with them), napari's viewer fixture."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import time

import numpy
import pytest
from test_napari import collaborative, noisy

from nlfilt.sample import noisy_sample


@pytest.fixture(scope="session", autouse=True)
def display():
    """An X display for napari's OpenGL canvas: the one set, else a virtual one (Xvfb) started for these
    tests and ending with them; Qt itself runs offscreen.  Skips without napari, pytest-qt or a display
    (fails instead when NLFILT_REQUIRE_NAPARI=1, as in CI)."""
    required = os.environ.get("NLFILT_REQUIRE_NAPARI") == "1"

    def missing(reason: str) -> None:
        (pytest.fail if required else pytest.skip)(f"napari widget tests: {reason}")

    for module in ("napari", "pytestqt"):
        try:
            __import__(module)
        except ImportError:
            missing(f"{module} is not installed (pip install 'nlfilt[test]')")
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        missing("no X display and no Xvfb to start one (apt-get install xvfb)")
    read, write = os.pipe()
    # the server ends when this process does (a parent-death signal): stopping it at the fixture's end
    # would break the connection Qt keeps until exit, and Xlib then exits the process with status 1
    command = [xvfb, "-displayfd", str(write), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"]
    server = subprocess.Popen(command, pass_fds=(write,), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    os.close(write)
    with os.fdopen(read) as stream:
        number = stream.readline().strip()
    if not number:
        server.kill()
        missing("Xvfb did not start")
    os.environ["DISPLAY"] = f":{number}"
    yield os.environ["DISPLAY"]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux's prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def run_widget(widget, qtbot, timeout: float = 120.0) -> None:
    """Press Denoise and wait until the worker is done."""
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=int(1000 * timeout))


def test_widget_adds_the_denoised_layer_with_the_sources_properties(viewer, qtbot):
    image = noisy((48, 64))
    source = viewer.add_image(image, name="cells", scale=(0.5, 0.25), translate=(10.0, -4.0),
                              contrast_limits=(20, 230), colormap="magma", gamma=0.8)
    _, widget = viewer.window.add_plugin_dock_widget("nlfilt", "Denoise")  # as Plugins > Denoise does
    assert type(widget).__name__ == "DenoiseWidget"
    assert widget.image.value is source
    run_widget(widget, qtbot)
    result = viewer.layers["cells denoised"]
    numpy.testing.assert_array_equal(result.data, collaborative(image))
    assert result.data.dtype == numpy.uint8
    numpy.testing.assert_array_equal(result.scale, source.scale)
    numpy.testing.assert_array_equal(result.translate, source.translate)
    assert tuple(result.contrast_limits) == (20, 230) and result.gamma == pytest.approx(0.8)
    assert result.colormap.name == "magma"
    assert result.metadata["nlfilt"]["method"] == "collaborative"
    assert result.metadata["nlfilt"]["sigma"] > 0
    assert widget.image.value is source  # the next run takes the same source
    assert "added cells denoised" in widget.status.value and "(estimated)" in widget.status.value


def test_widget_on_a_stack_frames_and_series(viewer, qtbot):
    from nlfilt.napari_plugin.widget import DenoiseWidget

    stack = noisy((3, 32, 40))
    viewer.add_image(stack, name="stack")
    widget = DenoiseWidget(viewer)
    widget.stack.value = "frames"
    run_widget(widget, qtbot)
    numpy.testing.assert_array_equal(viewer.layers["stack denoised"].data,
                                     numpy.stack([collaborative(plane) for plane in stack]))
    widget.stack.value = "series"
    widget.estimate.value = False
    widget.sigma.value = 20.0
    run_widget(widget, qtbot)
    assert [layer.name for layer in viewer.layers] == ["stack", "stack denoised", "stack denoised [1]"]
    numpy.testing.assert_array_equal(viewer.layers["stack denoised [1]"].data,
                                     collaborative(stack, stack="series", sigma=20.0, channel_axis=None))


def test_widget_refuses_with_a_message_and_adds_nothing(viewer, qtbot):
    from napari.utils.notifications import notification_manager

    from nlfilt.napari_plugin.widget import DenoiseWidget

    viewer.add_image(numpy.zeros((6, 6), numpy.uint8), name="tiny")
    widget = DenoiseWidget(viewer)
    shown = []
    notification_manager.notification_ready.connect(shown.append)
    try:
        widget.run()
    finally:
        notification_manager.notification_ready.disconnect(shown.append)
    assert widget.worker is None and len(viewer.layers) == 1
    assert "tiny: the image is 6x6, smaller than the 8x8 patches" in widget.status.value
    assert any("smaller than the 8x8 patches" in str(note.message) for note in shown)


def test_widget_cancel_leaves_no_layer(viewer, qtbot):
    from nlfilt.napari_plugin.widget import DenoiseWidget

    viewer.add_image(noisy((40, 64, 64)), name="long")
    widget = DenoiseWidget(viewer)
    widget.stack.value = "frames"
    widget.run()
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert len(viewer.layers) == 1 and widget.status.value.startswith("cancelled")
    assert widget.run_button.enabled


def test_widget_on_a_dask_layer_is_lazy(viewer, qtbot):
    da = pytest.importorskip("dask.array")
    from nlfilt.napari_plugin.widget import DenoiseWidget

    stack = noisy((4, 32, 32))
    viewer.add_image(da.from_array(stack, chunks=(1, 32, 32)), name="lazy")
    widget = DenoiseWidget(viewer)
    widget.stack.value = "frames"
    started = time.perf_counter()
    run_widget(widget, qtbot)
    result = viewer.layers["lazy denoised"].data
    assert isinstance(result, da.Array), f"{type(result)} after {time.perf_counter() - started:.1f} s"
    numpy.testing.assert_array_equal(numpy.asarray(result[3]), collaborative(stack[3]))


def test_sample_data_opens_in_the_viewer(viewer):
    viewer.open_sample("nlfilt", "noisy")
    names = [layer.name for layer in viewer.layers]
    assert names == ["nlfilt sample (clean)", "nlfilt sample (noisy, sigma 25)"]
    numpy.testing.assert_array_equal(viewer.layers[1].data, noisy_sample())
