"""Twicing that chooses its own number of steps, and whole twicing trajectories from Krylov bases.

Twicing with a filter ``W`` gives ``z_t = A_t y`` with ``A_t = I - (I - W)^t``.
Rules that pick ``t`` without the clean image are classes registered by name
(:func:`register_stop_rule`, :func:`stop_rule`); the built-in ones:

* ``'sure'``: Stein's unbiased risk estimate of the mean squared error::

      SURE(t) = |y - z_t|^2 - N C sigma^2 + 2 sigma^2 div_t

  (N pixels, C channels), where ``div_t`` is the divergence (the trace of
  the Jacobian) of ``y -> z_t``.  For a ``W`` that did not depend on ``y``
  it would be ``C tr(A_t)``, which Hutchinson's method estimates with random
  probes pushed through the same steps.  But every filter here is built from
  ``y`` itself, and ignoring that is far off (it chooses far too many
  steps, for 'arccos' the largest ``t`` allowed).  So the probe ``b``
  (Rademacher) is pushed through a twin run on ``y + eps b``, filter
  rebuilt, and ``div_t = b . (z_t(y + eps b) - z_t(y)) / eps`` (Monte-Carlo
  SURE, Ramani, Blu and Unser 2008), with ``eps = EPSILON_PER_SIGMA sigma``.
  The step minimising SURE is taken once SURE has risen for
  ``max(PATIENCE, t / 4)`` steps past its minimum.
* ``'discrepancy'``: the first step whose mean squared residual
  ``|y - z_t|^2 / (N C)`` is at most ``DISCREPANCY_FACTOR * sigma^2``.

Two drivers produce the curves: :func:`auto_twicing` steps once per product
with ``K`` (cheap in the windowed mode), or uses a :class:`KrylovTrajectory`,
which gives ``z_t`` and both curves for every ``t`` up to hundreds from a few
dozen products with ``K``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy

from nlfilt.filters import Filter
from nlfilt.linalg import BlockLanczos

#: The discrepancy rule stops at the first t with |y - z_t|^2 / (N C) <= DISCREPANCY_FACTOR sigma^2
#: (chosen on Set12, benchmarks/results/quality.md).
DISCREPANCY_FACTOR = 1.0
#: Size of the finite-difference perturbation of the SURE twin run, per sigma.
EPSILON_PER_SIGMA = 0.1
#: SURE must have risen for this many steps (or a quarter of t, if more) past its minimum.
PATIENCE = 3
#: Default upper limit of the chosen number of steps.
DEFAULT_MAX_ITERATIONS = 1000
#: A Krylov trajectory is used for t up to where one more Lanczos step changes no z_t by more than
#: this, relative.
TRAJECTORY_TOL = 1e-5
#: Lanczos steps a Krylov trajectory may take, and the fewest a memory budget may leave it.
MAX_KRYLOV_STEPS = 400
MIN_KRYLOV_STEPS = 8


@dataclass
class StopReport:
    """What automatic stopping chose, and the curves it chose from.

    Attributes
    ----------
    iterations : int
        The chosen number of twicing steps ``t``.
    rule : str
        'sure', 'discrepancy', or 'fixed' (no choice made).
    risk : numpy.ndarray or None
        ``SURE(t) / (N C)`` for ``t = 1, 2, ...`` as far as computed ('sure' only).
    residual : numpy.ndarray
        ``|y - z_t|^2 / (N C)`` for the same steps.
    """

    iterations: int
    rule: str
    risk: numpy.ndarray | None
    residual: numpy.ndarray


def sure(residual: numpy.ndarray, divergence: numpy.ndarray, sigma: float, count: int) -> numpy.ndarray:
    """``SURE(t) / count`` from ``|y - z_t|^2 / count`` and ``div_t`` (arrays over t; count = N C)."""
    return residual - sigma**2 + 2 * sigma**2 * divergence / count


class StopRule:
    """A rule that picks the twicing step from the curves over ``t = 1, 2, ...``.

    A subclass sets :attr:`name`, :attr:`summary` (one line, for help texts)
    and :attr:`needs_twin` (whether it needs the divergence of ``y -> z_t``,
    from a twin run on perturbed data: a second filter, whose products with
    ``K`` the cost model counts), and implements :meth:`choose`.
    """

    name: str
    summary: str
    needs_twin: bool = False

    def choose(self, residual: numpy.ndarray, divergence: numpy.ndarray | None, sigma: float, count: int,
               final: bool) -> int | None:
        """The step picked from curves over ``t = 1 .. len(residual)``, or None while it needs more;
        ``final`` says no more steps will come (then the best so far)."""
        raise NotImplementedError

    def newest_is_best(self, residual: numpy.ndarray, divergence: numpy.ndarray | None, sigma: float,
                       count: int) -> bool:
        """Whether the newest step is the best so far (the stepping driver keeps its estimate)."""
        return True

    def risk(self, residual: numpy.ndarray, divergence: numpy.ndarray | None, sigma: float,
             count: int) -> numpy.ndarray | None:
        """The risk curve the rule minimises, per ``t`` (None when it has none)."""
        return None


_STOP_RULES: dict[str, StopRule] = {}


def register_stop_rule(cls: type[StopRule]) -> type[StopRule]:
    """Register a :class:`StopRule` subclass under its :attr:`~StopRule.name` (a class decorator)."""
    _STOP_RULES[cls.name] = cls()
    return cls


def stop_rule(name: str, parameter: str = "stop") -> StopRule:
    """The registered rule ``name``; ValueError naming ``parameter`` and the registered rules otherwise."""
    try:
        return _STOP_RULES[name]
    except (KeyError, TypeError):
        names = ", ".join(map(repr, stop_rule_names()))
        raise ValueError(f"{parameter} must be one of {names}; got {name!r}") from None


def stop_rule_names() -> tuple[str, ...]:
    """The registered rules, the default first."""
    return tuple(_STOP_RULES)


@register_stop_rule
class SureRule(StopRule):
    """Stein's unbiased risk estimate (the default): the minimum, once it has risen for
    ``max(PATIENCE, t / 4)`` steps past it."""

    name = "sure"
    summary = "Stein's unbiased risk estimate"
    needs_twin = True

    def choose(self, residual: numpy.ndarray, divergence: numpy.ndarray | None, sigma: float, count: int,
               final: bool) -> int | None:
        best = int(numpy.argmin(sure(residual, divergence, sigma, count))) + 1
        if final or len(residual) >= best + max(PATIENCE, math.ceil(best / 4)):
            return best
        return None

    def newest_is_best(self, residual: numpy.ndarray, divergence: numpy.ndarray | None, sigma: float,
                       count: int) -> bool:
        return bool(numpy.argmin(sure(residual, divergence, sigma, count)) == len(residual) - 1)

    def risk(self, residual: numpy.ndarray, divergence: numpy.ndarray | None, sigma: float,
             count: int) -> numpy.ndarray | None:
        return sure(residual, divergence, sigma, count)


@register_stop_rule
class DiscrepancyRule(StopRule):
    """The first step whose mean squared residual is at most ``DISCREPANCY_FACTOR sigma^2``."""

    name = "discrepancy"
    summary = "the first step whose mean squared residual is at most sigma^2"

    def choose(self, residual: numpy.ndarray, divergence: numpy.ndarray | None, sigma: float, count: int,
               final: bool) -> int | None:
        below = numpy.flatnonzero(residual <= DISCREPANCY_FACTOR * sigma**2)
        if below.size:
            return int(below[0]) + 1
        return len(residual) if final else None


#: The registered rules' names, the default first.
STOP_RULES = stop_rule_names()


def rademacher(xp: Any, shape: tuple[int, ...], dtype: Any, seed: int = 0) -> Any:
    """An array of random signs (+-1), reproducible from ``seed``."""
    signs = numpy.random.default_rng(seed).integers(0, 2, size=shape) * 2 - 1
    return xp.asarray(signs, dtype=dtype)


class KrylovTrajectory:
    """The twicing trajectory ``z_t`` for all ``t`` from Lanczos bases of a symmetric form of ``W``.

    ``W = diag(1/e) B diag(e) / s`` with ``B`` symmetric (see
    :meth:`nlfilt.filters.Filter.symmetric_form`), so
    ``z_t = diag(1/e) p_t(S) (e y)`` with ``S = B / s`` and
    ``p_t(x) = 1 - (1 - x)^t``.  After ``m`` Lanczos steps from ``u = e y``
    (per channel), ``p_t(S) u ~ |u| V p_t(T) e_1``: exact for ``t < m``, and
    close far beyond, since ``(1 - x)^t`` is approximated well by polynomials
    of degree about ``sqrt(t)`` and Lanczos adapts to the spectrum.

    :attr:`horizon` is the largest ``t`` up to which the last Lanczos step
    changed no ``z_t`` by more than ``tol`` (relative); :meth:`step` extends
    it.  :attr:`residual` holds ``|y - z_t|^2 / (N C)`` for ``t = 1 ..
    horizon``.

    Parameters
    ----------
    filter_ : Filter
        The filter; with ``'eigenvalue'`` normalisation and ``lambda_max``
        not yet known, the largest Ritz value is used (and stored in the
        filter; it converges within a few steps to far better than the
        1e-3 of the stand-alone estimate).
    image : array, shape (N, C)
        ``y`` on the filter's backend.
    max_iterations : int
        Largest ``t`` of interest.
    tol : float
        Accuracy that defines :attr:`horizon`.
    basis_budget : int, optional
        Bytes the Lanczos basis (N x C numbers per step) may occupy: the
        trajectory counts as exhausted once one more step would exceed it
        (at least ``MIN_KRYLOV_STEPS`` steps are always allowed).  None:
        only ``MAX_KRYLOV_STEPS`` limits it.
    """

    def __init__(self, filter_: Filter, image: Any, *, max_iterations: int = DEFAULT_MAX_ITERATIONS,
                 tol: float = TRAJECTORY_TOL, basis_budget: int | None = None) -> None:
        self.filter = filter_
        step_bytes = image.shape[0] * image.shape[1] * image.dtype.itemsize
        self.max_steps = MAX_KRYLOV_STEPS
        if basis_budget is not None:
            self.max_steps = min(MAX_KRYLOV_STEPS, max(MIN_KRYLOV_STEPS, basis_budget // step_bytes))
        self.xp = filter_.backend.xp
        self.size, self.channels = image.shape
        self.max_iterations = max_iterations
        self.tol = tol
        matvec, self.similarity, self.scale = filter_.symmetric_form(image.dtype)
        self._fixed_scale = self.scale is not None
        start = image * self.similarity if self.similarity is not None else image
        self.lanczos = BlockLanczos(self.xp, matvec, start)
        self.horizon = 0
        self.residual = numpy.zeros(0)
        self._kept: list[numpy.ndarray] = []  # per channel: coefficients of p_t(S) u, (m, T + 1)
        self._grams: list[numpy.ndarray] = []

    @property
    def exhausted(self) -> bool:
        """True when no more Lanczos steps can be taken."""
        return self.lanczos.done or len(self.lanczos.alphas) >= self.max_steps

    def step(self) -> None:
        """One more Lanczos step (one product with ``K``), then update the curves and the horizon."""
        self.lanczos.step()
        decompositions = [numpy.linalg.eigh(self.lanczos.tridiagonal(column))
                          for column in range(self.channels)]
        if not self._fixed_scale:
            self.scale = max((float(values.max()) for values, _ in decompositions if values.size),
                             default=0.0)
            self.filter.eigenvalue = self.scale
        scale = self.scale if self.scale and self.scale > 0 else math.inf
        steps = numpy.arange(self.max_iterations + 1)
        residual = numpy.zeros(steps.size)
        errors = numpy.zeros(steps.size)
        kept_all = []
        grams = []
        for column, (values, vectors) in enumerate(decompositions):
            norm = self.lanczos.norms[column]
            gram = self._gram(column)
            # coefficients of (I - S)^t u in the basis: |u| Q diag((1 - x)^t) Q^T e_1
            powers = numpy.power.outer(1 - values / scale, steps)
            remainder = norm * vectors @ (vectors[0][:, None] * powers)
            kept = -remainder
            kept[0] += norm
            residual += _weighted_squares(remainder, gram)
            if len(self._kept) == self.channels:
                change = kept.copy()
                change[: self._kept[column].shape[0]] -= self._kept[column]
                size = numpy.maximum(_weighted_squares(kept, gram), 1e-300)
                ratio = _weighted_squares(change, gram) / size
                errors = numpy.maximum(errors, numpy.sqrt(ratio))
            kept_all.append(kept)
            grams.append(gram)
        if self.lanczos.done:  # invariant Krylov spaces: the trajectory is exact
            self.horizon = self.max_iterations
        elif len(self._kept) == self.channels:
            bad = numpy.flatnonzero(errors[1:] > self.tol)
            self.horizon = int(bad[0]) if bad.size else self.max_iterations
        self._kept, self._grams = kept_all, grams
        self.residual = residual[1 : self.horizon + 1] / (self.size * self.channels)

    def _gram(self, column: int) -> numpy.ndarray:
        """``V^T diag(1/e^2) V`` for a channel's basis (the identity without a similarity).

        Extends the previous step's matrix by the rows and columns of the new
        basis vectors only, so each step costs O(m N), not O(m^2 N).
        """
        steps = int(self.lanczos.steps[column])
        if self.similarity is None:
            return numpy.eye(steps)
        previous = self._grams[column] if self._grams else numpy.zeros((0, 0))
        known = previous.shape[0]
        if known == steps:
            return previous
        basis = (self.lanczos.basis(column) / self.similarity[:, 0]).astype(self.xp.float64)
        new = self.filter.backend.to_host(basis @ basis[known:].T)  # (steps, steps - known)
        gram = numpy.empty((steps, steps))
        gram[:known, :known] = previous
        gram[:, known:] = new
        gram[known:, :] = new.T
        return gram

    def inner(self, vectors: Any) -> numpy.ndarray:
        """``vectors . z_t`` (summed over channels) for ``t = 1 .. horizon``; ``vectors`` is (N, C)."""
        total = numpy.zeros(self.horizon)
        for column in range(self.channels):
            weighted = vectors[:, column]
            if self.similarity is not None:
                weighted = weighted / self.similarity[:, 0]
            basis = self.lanczos.basis(column).astype(self.xp.float64)
            projection = self.filter.backend.to_host(basis @ weighted.astype(self.xp.float64))
            total += projection @ self._kept[column][:, 1 : self.horizon + 1]
        return total

    def estimate(self, t: int) -> Any:
        """Return ``z_t`` (N, C) on the backend, for ``0 <= t <= horizon``."""
        if not 0 <= t <= self.horizon:
            raise ValueError(f"t must be from 0 to the converged horizon {self.horizon}; got {t}")
        xp = self.xp
        columns = []
        for column in range(self.channels):
            basis = self.lanczos.basis(column)
            columns.append(xp.asarray(self._kept[column][:, t], dtype=basis.dtype) @ basis)
        out = xp.stack(columns, axis=1)
        if self.similarity is not None:
            out /= xp.where(self.similarity > 0, self.similarity, 1)
        return out


def _weighted_squares(coefficients: numpy.ndarray, gram: numpy.ndarray) -> numpy.ndarray:
    """``c_t^T G c_t`` for every column ``c_t`` of ``coefficients``."""
    return numpy.einsum("it,ij,jt->t", coefficients, gram, coefficients)


@dataclass
class Twin:
    """The SURE twin run: a filter built from the perturbed data, and the perturbation."""

    filter: Filter
    image: Any  # y + eps b, (N, C)
    probe: Any  # b, (N, C)
    epsilon: float


def auto_twicing(filter_: Filter, image: Any, *, sigma: float, rule: str = "sure",
                 twin: Twin | None = None, max_iterations: int = DEFAULT_MAX_ITERATIONS,
                 krylov: bool = False, basis_budget: int | None = None) -> tuple[Any, Any, StopReport]:
    """Twicing of ``image`` (N, C) with the number of steps chosen by ``rule``.

    Returns the estimate, the twin's estimate at the same step (None without
    a twin) and the report.  ``rule='sure'`` needs ``twin`` (see the module
    notes) unless ``sigma == 0``, when there is no noise to trade against and
    one step is taken.  ``krylov=True`` uses :class:`KrylovTrajectory` for both
    runs (few products with ``K`` for many steps; keeps the Lanczos bases,
    together within ``basis_budget`` bytes when given, which can shorten the
    horizon the choice is made over); otherwise one product per step and
    run, holding only the running
    estimates.  Progress is reported by the filters' meters, per product
    with ``K`` (see :class:`nlfilt.filters.ProgressMeter`).
    """
    count = image.size
    if sigma <= 0:
        max_iterations, twin, rule = 1, None, "discrepancy"
    chooser = stop_rule(rule, "rule")
    if chooser.needs_twin and twin is None:
        raise ValueError(f"rule={rule!r} needs a twin run on perturbed data (twin=Twin(...)), unless sigma "
                         "is 0")
    runs = [(filter_, image)] + ([] if twin is None else [(twin.filter, twin.image)])
    if krylov:
        share = None if basis_budget is None else basis_budget // len(runs)
        trajectories = [KrylovTrajectory(run_filter, data, max_iterations=max_iterations, basis_budget=share)
                        for run_filter, data in runs]
        while True:
            for trajectory in trajectories:
                trajectory.step()
            horizon = min(trajectory.horizon for trajectory in trajectories)
            final = horizon >= max_iterations or any(trajectory.exhausted for trajectory in trajectories)
            residual = trajectories[0].residual[:horizon]
            divergence = None
            if twin is not None:
                divergence = (trajectories[1].inner(twin.probe)[:horizon]
                              - trajectories[0].inner(twin.probe)[:horizon]) / twin.epsilon
            chosen = chooser.choose(residual, divergence, sigma, count, final) if horizon else None
            if chosen is not None or final:
                break
        chosen = chosen or 1
        estimates = [trajectory.estimate(chosen) for trajectory in trajectories]
    else:
        xp = filter_.backend.xp
        current = [run_filter.apply(data) for run_filter, data in runs]
        best = [estimate.copy() for estimate in current]
        residuals: list[float] = []
        divergences: list[float] = []
        chosen = None
        for step in range(1, max_iterations + 1):
            if step > 1:
                for (run_filter, data), estimate in zip(runs, current, strict=True):
                    estimate += run_filter.apply(data - estimate)
            residuals.append(float(xp.sum((image - current[0]) ** 2)) / count)
            if twin is not None:
                divergences.append(float(xp.sum(twin.probe * (current[1] - current[0]))) / twin.epsilon)
            residual = numpy.array(residuals)
            divergence = numpy.array(divergences) if twin is not None else None
            chosen = chooser.choose(residual, divergence, sigma, count, final=step == max_iterations)
            newest_best = chooser.newest_is_best(residual, divergence, sigma, count)
            if chosen == step or (chosen is None and newest_best):
                best = [estimate.copy() for estimate in current]
            if chosen is not None:
                break
        estimates = best
    risk = None if divergence is None else chooser.risk(residual, divergence, sigma, count)
    report = StopReport(iterations=int(chosen), rule=rule, risk=risk, residual=residual)
    return estimates[0], (estimates[1] if twin is not None else None), report
