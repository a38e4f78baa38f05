"""Count the array operations a piece of array code makes: on CuPy each is a kernel launch (or a copy).

:func:`counting_backend` gives a CPU backend whose ``xp`` is NumPy seen
through a counter: every ufunc call (element-wise operations, reductions,
matrix products), every NumPy function given an array (``cumsum``,
``argpartition``, ``take_along_axis``, ``where``, ...), every array-creating
call of ``xp`` (``zeros``, ``arange``, ``asarray`` of host data: a memset, a
fill or a transfer on a GPU), every index with arrays (a gather), every
assignment into an array (a scatter or a copy), and ``astype`` / ``copy``
count one each.  Views (slices, reshapes, transposes, ``as_strided``) are
free on a GPU too and are not counted.  The array code runs unchanged, so
the count is the launches that code makes on CuPy, give or take the few
that CuPy fuses or splits.  For the tests and benchmarks/collaborative_speed.py.
"""

from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import Any

import numpy

from nlfilt.backend import GPU_BATCH_BYTES, Backend

#: ``xp`` functions that create an array from sizes or host data (a launch or a transfer on a GPU).
_CREATING = ("zeros", "ones", "full", "arange", "asarray", "array", "zeros_like", "ones_like", "full_like")
#: ``xp`` functions that create an array without writing it (no launch).
_FREE = ("empty", "empty_like")


class Counter:
    """The count of array operations (``operations``) made through a counting backend."""

    def __init__(self) -> None:
        self.operations = 0


class _Counted(numpy.ndarray):
    """A NumPy array whose operations add to ``counter``."""

    counter: Counter | None = None

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        _add(1)
        if "out" in kwargs:
            kwargs["out"] = tuple(_plain(value) for value in kwargs["out"])
        return _wrap(getattr(ufunc, method)(*map(_plain, inputs), **kwargs))

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        _add(1)
        return _wrap(func(*_plain_all(args), **{key: _plain_all(value) for key, value in kwargs.items()}))

    def __getitem__(self, key: Any) -> Any:
        if _gathers(key):
            _add(1)
        return _wrap(numpy.ndarray.__getitem__(self.view(numpy.ndarray), _plain_all(key)))

    def __setitem__(self, key: Any, value: Any) -> None:
        _add(1)
        numpy.ndarray.__setitem__(self.view(numpy.ndarray), _plain_all(key), _plain(value))

    def astype(self, *args: Any, **kwargs: Any) -> Any:
        _add(1)
        return _wrap(self.view(numpy.ndarray).astype(*args, **kwargs))

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        _add(1)
        return _wrap(self.view(numpy.ndarray).copy(*args, **kwargs))


_ACTIVE: list[Counter] = []


def _add(count: int) -> None:
    if _ACTIVE:
        _ACTIVE[-1].operations += count


def _plain(value: Any) -> Any:
    return value.view(numpy.ndarray) if isinstance(value, _Counted) else value


def _plain_all(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_plain_all(item) for item in value)
    if isinstance(value, list):
        return [_plain_all(item) for item in value]
    return _plain(value)


def _wrap(value: Any) -> Any:
    if isinstance(value, numpy.ndarray) and not isinstance(value, _Counted):
        return value.view(_Counted)
    if isinstance(value, tuple):
        return tuple(_wrap(item) for item in value)
    return value


def _gathers(key: Any) -> bool:
    """Whether indexing with ``key`` reads through index arrays (a gather), not a view."""
    items = key if isinstance(key, tuple) else (key,)
    return any(isinstance(item, (numpy.ndarray, list)) for item in items)


def _counting_module() -> ModuleType:
    """NumPy with the array-creating functions counted and every array they return counted."""
    def creating(name: str, counted: bool) -> Any:
        function = getattr(numpy, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if counted:
                _add(1)
            return _wrap(function(*_plain_all(args), **kwargs))
        return call

    def passing(name: str) -> Any:
        function = getattr(numpy, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return _wrap(function(*args, **kwargs))
        return call

    class Module(SimpleNamespace):
        def __getattr__(self, name: str) -> Any:
            value = getattr(numpy, name)
            return passing(name) if callable(value) and not isinstance(value, (type, numpy.ufunc)) else value

    names = {name: creating(name, True) for name in _CREATING}
    names.update({name: creating(name, False) for name in _FREE})
    strides = SimpleNamespace(as_strided=lambda array, *args, **kwargs: _wrap(
        numpy.lib.stride_tricks.as_strided(_plain(array), *args, **kwargs)))
    names["lib"] = SimpleNamespace(stride_tricks=strides)
    return Module(**names)


class _AsOnGpu(Backend):
    """A NumPy backend that batches the collaborative filter's array code as on a GPU, and adds with
    repeated indices in one operation, as ``cupyx.scatter_add`` does there."""

    @property
    def batch_bytes(self) -> int:
        return GPU_BATCH_BYTES

    def add_at(self, target: Any, index: Any, values: Any) -> None:
        _add(1)
        numpy.add.at(_plain(target), _plain(index), _plain(values))


class counting_backend:
    """A context manager giving a NumPy backend (``workers`` threads) that batches array work as the GPU
    backend does and counts its array operations.

    >>> import numpy
    >>> with counting_backend() as (backend, counter):
    ...     values = backend.xp.arange(6.0)
    ...     total = (values * 2).sum()
    >>> counter.operations
    3
    """

    def __init__(self, workers: int = 1) -> None:
        self.counter = Counter()
        self.backend = _AsOnGpu("cpu", _counting_module(), workers=workers)

    def __enter__(self) -> tuple[Backend, Counter]:
        _ACTIVE.append(self.counter)
        return self.backend, self.counter

    def __exit__(self, *exc_info: Any) -> None:
        _ACTIVE.remove(self.counter)
