"""Progress bars on stderr: the library's ``progress(done, total)`` callback as a tqdm bar.

The library counts its work in products with the affinity ``K`` (see
:func:`nlfilt.denoise`), or in steps (:func:`nlfilt.denoise_collaborative`);
the bar shows them with the percentage, the time spent and tqdm's estimate of
the time left.  It appears only once a call has
run for ``BAR_DELAY`` seconds, so quick files show none.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

#: Seconds a call runs before its bar appears.
BAR_DELAY = 2.0

_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} {unit} [{elapsed}<{remaining}]"


class ProductBar:
    """A tqdm bar over the products with ``K`` of one library call; call it as the progress callback.

    The bar appears once ``delay`` seconds (default ``BAR_DELAY``) have
    passed since the bar was made; the library may change ``total`` as it
    learns how much work is left, and the bar follows.  ``close()`` removes
    it (``leave=False``).
    """

    def __init__(self, name: str, delay: float | None = None, unit: str = "products with K") -> None:
        self.name = name
        self.unit = unit
        self.delay = BAR_DELAY if delay is None else delay
        self.started = time.monotonic()
        self.bar: tqdm | None = None

    def __call__(self, done: float, total: int) -> None:
        if self.bar is None:  # made at the first report, so that it starts with the right total
            delay = max(0.0, self.delay - (time.monotonic() - self.started))
            self.bar = tqdm(total=total, desc=self.name, unit=self.unit, leave=False, file=sys.stderr,
                            dynamic_ncols=True, delay=delay, bar_format=_FORMAT)
        if total != self.bar.total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def product_bar(name: str, quiet: bool, unit: str = "products with K") -> ProductBar | None:
    """The progress callback for one file named ``name`` counting ``unit``, or None with ``--quiet``."""
    return None if quiet else ProductBar(name, unit=unit)
