"""The napari dock widget: denoise the selected image layer into a new layer, in a worker thread."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, ProgressBar, PushButton
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import notification_manager, show_error, show_info
from qtpy.QtCore import QObject, Signal

from nlfilt.backend import DEVICES
from nlfilt.cli.denoise import FILE_ERRORS, error_message, gpu_failure
from nlfilt.methods import method, method_names
from nlfilt.napari_plugin.work import (
    STACK_MODES,
    Cancelled,
    LayerJob,
    LayerRefused,
    Request,
    denoise_layer,
    plan_layer,
)

if TYPE_CHECKING:
    import napari

#: Steps of the progress bar.
BAR_STEPS = 1000
#: Decimals of the sigma field (a float image's noise may be 0.001).
SIGMA_DECIMALS = 6


class _Relay(QObject):
    """Carries the worker thread's progress reports to the widget (a queued Qt signal)."""

    progressed = Signal(float, int)


class DenoiseWidget(Container):
    """Denoise an image layer as ``nlfilt denoise`` denoises a file, and add the result as a new layer.

    The settings are those of the command line of the same names: the
    method (each with its default options), sigma (estimated per image,
    or given in the layer's pixel units), the device, how a stack is
    filtered (frames, series, volume, or auto), and the time limit.  The
    layer is checked as the command line checks a file (sizes, time,
    memory) before any work; the work runs in a worker thread with a
    progress bar and a Cancel button (cancelling takes effect at the
    filter's next progress report).  The new layer, "<name> denoised", keeps
    the source's dtype, scale, translation, rotation, shear, affine, units,
    axis labels, contrast limits, gamma, colormap and blending; a
    dask-backed stack is filtered lazily, a unit at a time as napari shows
    it.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        self.viewer = napari_viewer
        self.image = ComboBox(label="image", choices=self._image_layers, nullable=True,
                              tooltip="The image layer to denoise (follows the selected layer).")
        summaries = "\n".join(f"{name}: {method(name).summary}" for name in method_names())
        self.method = ComboBox(label="method", choices=method_names(), value=method_names()[0],
                               tooltip=f"{summaries}\n(each with its default options)")
        self.estimate = CheckBox(text="estimate sigma", value=True,
                                 tooltip="Estimate the noise level of each image (plane, volume or series).")
        self.sigma = FloatSpinBox(label="sigma", value=0.0, min=0.0, max=1e12, step=0.1, enabled=False,
                                  tooltip="Noise standard deviation in the layer's pixel units.")
        self.sigma.native.setDecimals(SIGMA_DECIMALS)
        self.device = ComboBox(label="device", choices=DEVICES, value="auto",
                               tooltip="auto: the GPU when one is usable, else the CPU.")
        self.stack = ComboBox(label="stack", choices=STACK_MODES, value="auto",
                              tooltip="How a stack is filtered: each plane on its own (frames), planes in "
                                      "order with groups across neighbours (series), or one volume (volume); "
                                      "auto: series when the axis before the rows is labelled t or z.")
        self.max_minutes = FloatSpinBox(label="max minutes", value=10.0, min=0.0, max=1e6, step=1.0,
                                        tooltip="Refuse a layer estimated to take longer (0: no limit).")
        self.run_button = PushButton(text="Denoise")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.bar = ProgressBar(min=0, max=BAR_STEPS, value=0, visible=False, label="progress")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)  # long messages wrap instead of widening the dock
        super().__init__(widgets=[self.image, self.method, self.estimate, self.sigma, self.device,
                                  self.stack, self.max_minutes, self.run_button, self.cancel_button, self.bar,
                                  self.status])
        self._cancel = threading.Event()
        self._relay = _Relay()
        self._relay.progressed.connect(self._show_progress)
        self.worker: Any = None
        self.estimate.changed.connect(lambda value: setattr(self.sigma, "enabled", not value))
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed,
                      napari_viewer.layers.events.moved):
            event.connect(self._refresh)
        napari_viewer.layers.selection.events.active.connect(self._follow_selection)
        self._refresh()
        self._follow_selection()

    def _image_layers(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _refresh(self, _event: Any = None) -> None:
        self.image.reset_choices()

    def _follow_selection(self, _event: Any = None) -> None:
        active = self.viewer.layers.selection.active
        if isinstance(active, Image):
            self.image.value = active

    def request(self) -> Request:
        """The settings as a :class:`nlfilt.napari_plugin.work.Request`."""
        return Request(method=self.method.value,
                       sigma=None if self.estimate.value else float(self.sigma.value),
                       device=self.device.value, stack=self.stack.value,
                       max_minutes=float(self.max_minutes.value))

    def run(self, _value: Any = None) -> None:
        """Check the chosen layer and the settings, then denoise it in a worker thread (a message instead,
        when refused)."""
        if self.worker is not None:
            return
        layer = self.image.value
        if layer is None:
            return self._refuse("no image layer to denoise: open or select one")
        if layer.multiscale:
            return self._refuse(f"{layer.name} is a multiscale layer; nlfilt denoises one scale: add its "
                                "full-resolution level (layer.data[0]) as a layer of its own")
        try:
            job = plan_layer(layer.data, rgb=layer.rgb, request=self.request(), scale=tuple(layer.scale),
                             axis_labels=tuple(getattr(layer, "axis_labels", ()) or ()) or None)
        except LayerRefused as exc:
            return self._refuse(f"{layer.name}: {exc}")
        self._start(layer, job)

    def cancel(self, _value: Any = None) -> None:
        """Ask the running filter to stop at its next progress report."""
        if self.worker is not None:
            self._cancel.set()
            self.status.value = "cancelling..."

    def _start(self, layer: Image, job: LayerJob) -> None:
        self._cancel.clear()
        self.status.value = f"denoising {layer.name}: {job.describe()}"
        self.bar.value = 0
        self.bar.visible = not job.lazy
        self.run_button.enabled = False
        self.cancel_button.enabled = not job.lazy
        self.worker = create_worker(denoise_layer, job, self._relay.progressed.emit, self._cancel.is_set,
                                    _start_thread=False, _ignore_errors=True)
        self.worker.returned.connect(lambda returned: self._add_result(layer, job, *returned))
        self.worker.errored.connect(lambda exc: self._failed(layer, exc))
        self.worker.finished.connect(self._finished)
        self.worker.start()

    def _show_progress(self, done: float, total: int) -> None:
        self.bar.value = round(BAR_STEPS * min(1.0, done / max(total, 1)))

    def _add_result(self, layer: Image, job: LayerJob, result: Any, sigma: float | None) -> None:
        added = self.viewer.add_image(result, name=f"{layer.name} denoised",
                                      **result_properties(layer, job, sigma))
        self.image.value = layer  # the next run takes the same source, not the new layer napari selects
        noise = "" if sigma is None else f", sigma {sigma:.4g}" + (" (estimated)" if job.plan.sigma is None
                                                                   else "")
        self.status.value = f"added {added.name}: {job.describe()}{noise}"

    def _failed(self, layer: Image, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self.status.value = f"cancelled: {layer.name} was not denoised"
            show_info(self.status.value)
            return
        message = gpu_failure(exc)  # as the command line reports a file's failure
        if message is None and isinstance(exc, FILE_ERRORS):
            message = error_message(exc)
        if message is None:  # a bug: napari shows it with its traceback
            self.status.value = f"failed: {type(exc).__name__}: {exc}"
            notification_manager.receive_error(type(exc), exc, exc.__traceback__)
            return
        self._refuse(f"{layer.name}: {message}")

    def _finished(self) -> None:
        self.worker = None
        self.bar.visible = False
        self.run_button.enabled = True
        self.cancel_button.enabled = False

    def _refuse(self, message: str) -> None:
        self.status.value = message
        show_error(message)


def result_properties(layer: Image, job: LayerJob, sigma: float | None) -> dict[str, Any]:
    """The new layer's properties: the source's placement, units, axis labels and display, and what
    nlfilt did (the plan, and the noise level ``sigma`` used) in its metadata."""
    properties: dict[str, Any] = {
        "rgb": layer.rgb, "scale": layer.scale, "translate": layer.translate, "rotate": layer.rotate,
        "shear": layer.shear, "affine": layer.affine, "contrast_limits": layer.contrast_limits,
        "gamma": layer.gamma, "blending": layer.blending,
        "metadata": {**layer.metadata, "nlfilt": {**job.plan.options, "method": job.plan.method,
                                                  "sigma": sigma, "device": job.plan.device,
                                                  "stack": job.plan.stack, "source": layer.name}},
    }
    for name in ("units", "axis_labels"):
        if hasattr(layer, name):
            properties[name] = getattr(layer, name)
    if not layer.rgb:
        properties["colormap"] = layer.colormap
    return properties
