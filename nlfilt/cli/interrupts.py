"""SIGINT and SIGTERM as one exception, so that a batch stops the same way for both."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
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
    """Where SIGINT and SIGTERM may interrupt: only inside :meth:`interruptible` blocks.

    A signal that arrives inside such a block raises :class:`Interrupted` at
    once (a long filter stops promptly); one that arrives elsewhere, in the
    middle of bookkeeping that must not be cut in two, is kept and raised by
    the next :meth:`check` or on entering the next :meth:`interruptible` block.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._armed = False

    def handler(self, signum: int, frame: Any) -> None:
        self.received = signum
        if self._armed:
            self._armed = False
            raise Interrupted(signum)

    def check(self) -> None:
        """Raise :class:`Interrupted` for a signal received so far."""
        if self.received is not None:
            raise Interrupted(self.received)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Within the block, a signal raises :class:`Interrupted` at once."""
        self.check()
        self._armed = True
        try:
            yield
        finally:
            self._armed = False


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
