"""Host threads for independent array work: NumPy (and numba's nogil kernels) release the GIL, so threads
share the elementwise work of an operator, the tiles of a product or the bands of a kernel."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nlfilt.backend import Backend

#: Partial sums a reduction over many items (window offsets, groups of patches) is split into, whatever
#: the thread count (at most this many threads share one reduction).
PARTIALS = 4


class Workers:
    """Host threads for independent array work (NumPy releases the GIL in large operations).

    A context manager; ``map(function, items)`` runs serially when the backend
    has a single worker (always on the GPU).
    """

    def __init__(self, backend: Backend) -> None:
        self.count = max(1, backend.workers)
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> Workers:
        if self.count > 1:
            self._pool = ThreadPoolExecutor(max_workers=self.count - 1)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def map(self, function: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        """``[function(item) for item in items]``, the first in the calling thread, the others on the pool.

        So the work of the first item (the first of :meth:`shares`) may report
        progress: it runs in the caller's thread, one call after another.
        """
        if self._pool is None or len(items) < 2:
            return [function(item) for item in items]
        others = [self._pool.submit(function, item) for item in items[1:]]
        first = function(items[0])
        return [first] + [future.result() for future in others]

    def shares(self, count: int) -> list[range]:
        """``range(count)`` dealt out round-robin, one share per worker."""
        return [range(start, count, self.count) for start in range(min(self.count, count))]

    def map_partials(self, function: Callable[[range], Any], count: int) -> list[Any]:
        """``function(share)`` for ``range(count)`` dealt round-robin into :data:`PARTIALS` shares, the
        shares dealt out to the workers; the results in share order.

        For reductions: summing the results in that order gives the same
        rounding whatever the number of threads, so results do not depend on
        the machine's cores (nor on ``NLFILT_THREADS``).  The first share runs
        in the calling thread.
        """
        shares = [range(start, count, PARTIALS) for start in range(min(PARTIALS, count))]
        groups = [range(start, len(shares), self.count) for start in range(min(self.count, len(shares)))]
        results: list[Any] = [None] * len(shares)
        for pairs in self.map(lambda group: [(index, function(shares[index])) for index in group], groups):
            for index, result in pairs:
                results[index] = result
        return results
