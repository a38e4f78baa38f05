"""SIGINT and SIGTERM as one exception, so that a batch stops the same way for both."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class Interrupted(BaseException):
    """Raised in the main thread by SIGINT (Ctrl-C) or SIGTERM; ``exit_status`` is 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class SignalGate:
    """SIGINT and SIGTERM, received at any moment, acted on at safe points only.

    The handler only records the signal; :meth:`check` raises
    :class:`Interrupted` for it.  A batch checks between files and, through
    :meth:`watch`, at every progress report of the library (after each tile,
    window offset, step or band of rows), so a long filter still stops within
    moments.  Raising from the handler itself would cut the main thread
    wherever it is: in the middle of an import, it left a module lock held
    that an output writer thread then waited for forever.
    """

    def __init__(self) -> None:
        self.received: int | None = None

    def handler(self, signum: int, frame: Any) -> None:
        self.received = signum

    def check(self) -> None:
        """Raise :class:`Interrupted` for a signal received so far."""
        if self.received is not None:
            raise Interrupted(self.received)

    def watch(self, progress: Callable[[float, int], None] | None) -> Callable[[float, int], None]:
        """A progress callback that checks for a signal, then passes the report on to ``progress``."""
        def report(done: float, total: int) -> None:
            self.check()
            if progress is not None:
                progress(done, total)
        return report


@contextmanager
def signals_interrupt() -> Iterator[SignalGate]:
    """Route SIGINT and SIGTERM to a :class:`SignalGate` within the block (main thread only; elsewhere
    the gate never sees a signal)."""
    gate = SignalGate()
    if threading.current_thread() is not threading.main_thread():
        yield gate
        return
    previous = {signum: signal.signal(signum, gate.handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield gate
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
