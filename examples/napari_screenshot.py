"""Take the README's napari screenshot: the sample, the nlfilt widget docked, the denoised layer beside it.

Usage (needs nlfilt[napari] and a display; on a machine without one, a virtual screen, Xvfb, with the X
libraries Qt's xcb platform loads: on Debian, apt-get install xvfb libxcb-cursor0 libxcb-icccm4 libxcb-image0
libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1
libxkbcommon-x11-0):
    xvfb-run -a -s "-screen 0 1600x1000x24" python examples/napari_screenshot.py docs/napari.png
"""

from __future__ import annotations

import sys
import time

import napari
from qtpy.QtWidgets import QApplication

from nlfilt.napari_plugin.widget import DenoiseWidget


def main(target: str) -> None:
    viewer = napari.Viewer(title="napari + nlfilt")
    viewer.window.resize(1500, 820)
    viewer.open_sample("nlfilt", "noisy")
    widget = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(widget, name="nlfilt: Denoise", area="right")
    widget.run()
    started = time.perf_counter()
    while widget.worker is not None and time.perf_counter() - started < 300:
        QApplication.processEvents()
        time.sleep(0.02)
    viewer.layers.selection.active = viewer.layers[-1]
    viewer.grid.enabled = True
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.screenshot(target, canvas_only=False)
    print(f"wrote {target}: {widget.status.value}")
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "napari.png")
