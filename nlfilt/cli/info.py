"""``nlfilt info``: versions and the device that ``--device auto`` picks."""

from __future__ import annotations

import platform

import click
import numpy

from nlfilt import __version__
from nlfilt.backend import cupy_version, get_backend, gpu_status
from nlfilt.jit import compiled_status


@click.command("info", short_help="Versions, the GPU, and what --device auto picks.")
def info_command() -> None:
    """Show nlfilt, Python, NumPy, numba and CuPy versions and which device 'auto' uses."""
    usable, reason = gpu_status()
    lines = [
        f"nlfilt {__version__}",
        f"Python {platform.python_version()} ({platform.machine()})",
        f"NumPy {numpy.__version__}",
        f"numba {compiled_status()}",
        f"CuPy {cupy_version()}",
    ]
    if usable:
        backend = get_backend("gpu")
        device = backend.xp.cuda.Device()
        name = backend.xp.cuda.runtime.getDeviceProperties(device.id)["name"]
        name = name.decode() if isinstance(name, bytes) else name
        lines.append(f"GPU: usable, device {device.id}: {name}")
        lines.append("device auto: gpu (a CUDA device is usable)")
    else:
        lines.append(f"GPU: not usable ({reason})")
        lines.append(f"device auto: cpu ({get_backend('cpu').workers} threads), because no GPU is usable")
    click.echo("\n".join(lines))
