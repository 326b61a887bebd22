"""The strategies of ``sample``, one class each: which scored candidates a strategy admits, how
many it buffers, what it sends back from workers, and how it selects from its buffer.

Every strategy sees the pool once, structure by structure, as ``(pool index, max γ)`` with the
structure (its frame's text), per-atom γ and (if it asks for them) B-projections of the structures that can still
enter its buffer. The command (:mod:`pace_worker.commands.sample`) streams the pool through
:meth:`SampleStrategy.admit` and :class:`CandidateBuffer`, then calls
:meth:`SampleStrategy.select` once. A new strategy is one subclass registered in
:data:`STRATEGIES` (``config.SampleStrategy`` and the CLI's choices derive from it).

The γ floor: a candidate whose max γ against the potential's active set is ≤ ``gamma_min`` lies
inside the potential's domain (its training data reach γ ≤ 1.01), so labelling it teaches next
to nothing; every strategy except the ``random`` baseline refuses it (``not_extrapolative``).
"""
from __future__ import annotations

import heapq
from dataclasses import asdict, dataclass, field
from typing import ClassVar, Optional

import numpy as np

from pace_worker.algorithms.d_optimal import (
    Candidate,
    DOptimalResult,
    greedy_d_optimal,
    joint_maxvol_order,
    log_abs_det_of_inverse,
    picks_logdet_gain,
    top_by_gamma,
)
from pace_worker.parallel.forked_call import ForkedCall, ForkedCallFailed, one_blas_thread


@dataclass(order=True)
class BufferedCandidate:
    """A candidate kept for selection, ordered by ``key`` (the strategy's), then by nothing else."""

    key: tuple
    pool_index: int = field(compare=False)
    frame: object = field(compare=False)              # the structure (its extxyz text from the workers)
    gamma: np.ndarray = field(compare=False)          # per atom
    projections: Optional[dict] = field(compare=False, default=None)

    @property
    def gamma_max(self) -> float:
        return float(self.gamma.max())


class CandidateBuffer:
    """The ``limit`` candidates of largest key seen so far (a min-heap: memory stays bounded)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._heap: list[BufferedCandidate] = []

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def full(self) -> bool:
        return len(self._heap) >= self.limit

    def lowest_key(self) -> tuple:
        return self._heap[0].key

    def offer(self, entry: BufferedCandidate) -> None:
        if not self.full:
            heapq.heappush(self._heap, entry)
        elif entry > self._heap[0]:
            assert entry.frame is not None, "a structure entered the buffer without being sent back"
            heapq.heapreplace(self._heap, entry)

    def best_first(self) -> list[BufferedCandidate]:
        """Largest key first (the order only matters for ties)."""
        return sorted(self._heap, reverse=True)


@dataclass(frozen=True)
class LogDetChange:
    """log|det| of an element's active set before and after the picks (None: the active set is
    singular), and the gain, which Cramer's rule gives exactly in either case."""

    before: Optional[float]
    after: Optional[float]
    gain: float
    rank: int
    size: int


@dataclass
class Selected:
    """What a strategy chose from its buffer, and what it reports about how."""

    picks: list[BufferedCandidate]
    report: dict = field(default_factory=dict)              # strategy-specific report fields
    logdet: dict[str, LogDetChange] = field(default_factory=dict)  # per element (MaxVol strategies)


class SampleStrategy:
    """Base: admit candidates above the γ floor, buffer the ``n`` of largest γ."""

    name: ClassVar[str]
    needs_projections: ClassVar[bool] = False  # B-projections of buffered candidates (MaxVol)

    def __init__(self, n: int, options, seed: int, maxvol=None, n_jobs: Optional[int] = None):
        """``options``: the ``sample:`` settings (``gamma_min``, ``gamma_lo``, ``gamma_hi``,
        ``buffer_size``), e.g. :class:`pace_worker.config.SampleOptions`; ``maxvol``: the MaxVol
        routine the MaxVol strategies need (:func:`pace_worker.algorithms.d_optimal.joint_maxvol_order`);
        ``n_jobs`` (processes, None: 1): with two or more, a selection's independent runs go side
        by side (:meth:`MaxVol.select`)."""
        self.n = n
        self.options = options
        self.seed = seed
        self.maxvol = maxvol
        self.n_jobs = n_jobs
        self.gamma_min: Optional[float] = options.gamma_min

    def buffer_limit(self) -> int:
        return self.n

    def admit(self, gamma_max: float) -> Optional[str]:
        """None if a scored candidate is eligible, else the pool count it goes to."""
        if self.gamma_min is not None and gamma_max <= self.gamma_min:
            return "not_extrapolative"
        return None

    def key(self, gamma_max: float, pool_index: int) -> tuple:
        """Buffer order: larger γ first, the earlier structure of equal γ."""
        return (gamma_max, -pool_index)

    def admitted_from(self) -> Optional[float]:
        """The max γ below which :meth:`admit` refuses every structure (None: no γ is too low)."""
        return self.gamma_min

    def send_back_from(self, buffer: CandidateBuffer) -> Optional[float]:
        """Workers send whole structures back only from this max γ on (None: all): a structure
        below the full buffer's lowest γ can never enter it (that γ only grows), nor, while the
        buffer fills, one that :meth:`admit` refuses for its low γ (:meth:`admitted_from`)."""
        return buffer.lowest_key()[0] if buffer.full else self.admitted_from()

    def select(self, buffered: list[BufferedCandidate], inverse: dict[str, np.ndarray]) -> Selected:
        raise NotImplementedError

    def report_fields(self) -> dict:
        """The strategy's settings as the report's ``pool`` section shows them."""
        return {"buffer_size": None, "gamma_window": None}


class MaxGamma(SampleStrategy):
    """The ``n`` structures of largest γ."""

    name = "max_gamma"

    def select(self, buffered, inverse) -> Selected:
        return Selected([buffered[i] for i in top_by_gamma(np.array([c.key[0] for c in buffered]), self.n)])


class MaxVol(SampleStrategy):
    """Batch D-optimal selection from the active set over a buffer of the most extrapolative
    candidates (:mod:`pace_worker.algorithms.d_optimal`): the better, by the log|det| gain of the
    set of picks, of greedy rank-1 MaxVol updates with and without first taking the owners of rows
    of the joint MaxVol active set (as ``pace_select``). With ``n_jobs`` ≥ 2 the plain greedy run
    goes in a forked process (:class:`pace_worker.parallel.forked_call.ForkedCall`) while this one
    runs the joint MaxVol and the other greedy run, each on one BLAS thread (two BLAS threads made
    neither faster): the same runs, side by side instead of one after the other."""

    name = "maxvol"
    needs_projections = True

    def buffer_limit(self) -> int:
        return self.options.buffer_size or max(20 * self.n, 2000)

    def select(self, buffered, inverse) -> Selected:
        candidates = [Candidate(c.pool_index, c.projections) for c in buffered]
        if self.maxvol is None:
            raise ValueError(f"strategy '{self.name}' needs a MaxVol routine: pass maxvol= (pyace.maxvol.maxvol)")
        with ForkedCall(greedy_run, candidates, inverse, self.n, start=(self.n_jobs or 1) > 1) as plain, \
                one_blas_thread(plain.started):
            first = joint_maxvol_order(candidates, inverse, self.maxvol)[:self.n]
            with_first = greedy_run(candidates, inverse, self.n, first)
            try:
                without = plain.result()
            except ForkedCallFailed:  # no fork here, or it failed: the same run here
                without = greedy_run(candidates, inverse, self.n)
        runs = {"joint MaxVol owners first, then greedy": with_first, "greedy": without}
        method = max(runs, key=lambda m: sum(runs[m][1].values()))
        result, set_gain = runs[method]
        logdet = {el: logdet_change(inverse[el], set_gain[el]) for el in sorted(inverse)}
        return Selected([buffered[i] for i in result.order], {
            "maxvol_method": method,
            "n_from_joint_maxvol": len(first) if method.startswith("joint") else 0,
            "gamma_at_pick": result.gamma_at_pick,
            "entered_active_set": result.volume_gain,
            "active_set_swaps_per_element": result.swaps_per_element,
            "logdet_per_element": {el: asdict(change) for el, change in logdet.items()},
        }, logdet)

    def report_fields(self) -> dict:
        return {"buffer_size": self.buffer_limit(), "gamma_window": None}


def greedy_run(candidates: list[Candidate], inverse: dict[str, np.ndarray], n: int,
               first=()) -> tuple[DOptimalResult, dict[str, float]]:
    """One greedy D-optimal run (:func:`pace_worker.algorithms.d_optimal.greedy_d_optimal`) and the
    log|det| gain of its set of picks per element (:func:`picks_logdet_gain`)."""
    run = greedy_d_optimal(candidates, inverse, n, first=first)
    return run, picks_logdet_gain([candidates[i] for i in run.order], inverse)


class GammaWindow(MaxVol):
    """``maxvol`` among the candidates with ``gamma_lo ≤ γ ≤ gamma_hi`` only; those above
    ``gamma_hi`` are counted as likely unphysical."""

    name = "gamma_window"

    def admit(self, gamma_max: float) -> Optional[str]:
        refused = super().admit(gamma_max)
        if refused is None and gamma_max > self.options.gamma_hi:
            return "above_gamma_hi"
        if refused is None and gamma_max < self.options.gamma_lo:
            return "outside_window"
        return refused

    def admitted_from(self) -> Optional[float]:
        return self.options.gamma_lo if self.gamma_min is None else max(self.gamma_min, self.options.gamma_lo)

    def report_fields(self) -> dict:
        return {"buffer_size": self.buffer_limit(), "gamma_window": [self.options.gamma_lo, self.options.gamma_hi]}


class RandomPick(SampleStrategy):
    """``n`` structures drawn uniformly from the eligible ones (reservoir sampling, seeded); the
    baseline, so no γ floor."""

    name = "random"

    def __init__(self, n: int, options, seed: int, maxvol=None, n_jobs: Optional[int] = None):
        super().__init__(n, options, seed, maxvol, n_jobs)
        self.gamma_min = None
        self._rng = np.random.default_rng(seed)

    def key(self, gamma_max: float, pool_index: int) -> tuple:
        return (float(self._rng.random()), -pool_index)  # drawn once per eligible structure, in pool order

    def send_back_from(self, buffer: CandidateBuffer) -> Optional[float]:
        return None  # any structure may still replace a reservoir member

    def select(self, buffered, inverse) -> Selected:
        return Selected(sorted(buffered, key=lambda c: c.pool_index))


STRATEGIES: dict[str, type[SampleStrategy]] = {cls.name: cls for cls in (MaxVol, MaxGamma, GammaWindow, RandomPick)}


def make_strategy(name: str, n: int, options, seed: int, maxvol=None, n_jobs: Optional[int] = None) -> SampleStrategy:
    return STRATEGIES[name](n, options, seed, maxvol, n_jobs)


def logdet_change(inverse: np.ndarray, gain: float) -> LogDetChange:
    """The :class:`LogDetChange` of an active set (given by its inverse) that the picks grow by ``gain``."""
    before = log_abs_det_of_inverse(inverse)
    return LogDetChange(before, None if before is None else before + gain, gain,
                        int(np.linalg.matrix_rank(inverse)), int(inverse.shape[0]))
