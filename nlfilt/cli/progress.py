"""Progress on stderr: the library's ``progress(done, total)`` callback as a bar, and the batch's count.

The library counts its work in products with the affinity ``K`` (see
:func:`nlfilt.denoise`), or in steps (:func:`nlfilt.denoise_collaborative`);
the bar shows them with the percentage, the time spent and the time left.  It
appears only once a call has run for ``BAR_DELAY`` seconds, so quick files
show none.  On a terminal it is a tqdm bar; when stderr is a file or a pipe
(a log), it is a plain line every ``PLAIN_INTERVAL`` seconds instead, with
no carriage returns or cursor codes.  :class:`Deadline` stops a call that
runs over its time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

#: Seconds a call runs before its bar appears.
BAR_DELAY = 2.0
#: Seconds between two plain progress lines (stderr not a terminal).
PLAIN_INTERVAL = 30.0

_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} {unit} [{elapsed}<{remaining}]"


def _now() -> float:
    """The clock progress and deadlines are measured with (seconds)."""
    return time.monotonic()


def _clock(seconds: float) -> str:
    """'1:05' (minutes and seconds) or '2:03:10'."""
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class PlainBar:
    """The part of tqdm's interface nlfilt uses (``n``, ``total``, ``update``, ``close``), written as a
    plain line to stderr at most every ``interval`` seconds, the first after ``delay`` seconds."""

    def __init__(self, total: float, desc: str, unit: str, delay: float = 0.0,
                 interval: float | None = None) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.interval = PLAIN_INTERVAL if interval is None else interval
        self.n = 0.0
        self.started = _now()
        self.next_line = self.started + max(delay, self.interval)

    def update(self, count: float = 1) -> None:
        self.n += count
        now = _now()
        if now >= self.next_line:
            self.next_line = now + self.interval
            elapsed = now - self.started
            left = f", about {_clock(elapsed * (self.total - self.n) / self.n)} left" if self.n > 0 else ""
            print(f"{self.desc}: {100 * self.n / max(self.total, 1e-12):.0f}% ({self.n:g} of {self.total:g} "
                  f"{self.unit}), {_clock(elapsed)} elapsed{left}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def on_terminal() -> bool:
    """Whether stderr is a terminal (where a bar may redraw itself)."""
    return sys.stderr.isatty()


def make_bar(total: float, desc: str, unit: str, *, delay: float = 0.0, leave: bool = True,
             disable: bool = False, bar_format: str | None = None) -> Any:
    """A tqdm bar on stderr when it is a terminal, else a :class:`PlainBar` (None when ``disable``)."""
    if disable:
        return None
    if on_terminal():
        return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr, dynamic_ncols=True,
                    delay=delay, bar_format=bar_format)
    return PlainBar(total, desc, unit, delay=delay)


class ProductBar:
    """A bar over the products with ``K`` of one library call; call it as the progress callback.

    The bar appears once ``delay`` seconds (default ``BAR_DELAY``) have
    passed since the bar was made; the library may change ``total`` as it
    learns how much work is left, and the bar follows.  ``close()`` removes
    it (``leave=False``).
    """

    def __init__(self, name: str, delay: float | None = None, unit: str = "products with K") -> None:
        self.name = name
        self.unit = unit
        self.delay = BAR_DELAY if delay is None else delay
        self.started = _now()
        self.bar: Any = None

    def __call__(self, done: float, total: int) -> None:
        if self.bar is None:  # made at the first report, so that it starts with the right total
            delay = max(0.0, self.delay - (_now() - self.started))
            self.bar = make_bar(total, self.name, self.unit, delay=delay, leave=False, bar_format=_FORMAT)
        if total != self.bar.total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def product_bar(name: str, quiet: bool, unit: str = "products with K") -> ProductBar | None:
    """The progress callback for one file named ``name`` counting ``unit``, or None with ``--quiet``."""
    return None if quiet else ProductBar(name, unit=unit)


class OverTime(Exception):
    """A call stopped by its :class:`Deadline`."""


class Deadline:
    """A progress callback that raises :class:`OverTime` once ``seconds`` have passed since it was
    made (``limit`` says what they are, for the message), then passes the report on to ``progress``."""

    def __init__(self, seconds: float, limit: str, progress: Callable[[float, int], None] | None) -> None:
        self.seconds = seconds
        self.limit = limit
        self.progress = progress
        self.started = _now()

    def __call__(self, done: float, total: int) -> None:
        elapsed = _now() - self.started
        if elapsed > self.seconds:
            raise OverTime(f"stopped after {elapsed / 60:.1f} minutes, over {self.limit} (the estimate was "
                           f"low); raise --max-minutes, or 0 for no limit")
        if self.progress is not None:
            self.progress(done, total)
