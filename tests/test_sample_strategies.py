"""The strategies of ``sample`` as objects: what each admits, buffers and selects (no potential
needed: γ values are given). The whole command with real potentials is in test_sample.py."""
import os
from typing import get_args

import numpy as np
import pytest

from pace_worker.algorithms.sample_strategies import (STRATEGIES, BufferedCandidate, CandidateBuffer, GammaWindow,
                                                      MaxGamma, MaxVol, RandomPick, make_strategy)
from pace_worker.config import SampleOptions, SampleStrategy


def test_every_configurable_strategy_is_a_class_and_back():
    assert list(STRATEGIES) == list(get_args(SampleStrategy))
    for name, cls in STRATEGIES.items():
        assert cls.name == name and isinstance(make_strategy(name, 3, SampleOptions(), 0), cls)


def test_admission_floor_and_window():
    options = SampleOptions(gamma_min=1.2, gamma_lo=2.0, gamma_hi=8.0)
    window = GammaWindow(5, options, 0)
    assert [window.admit(g) for g in (1.0, 1.2, 1.5, 2.0, 8.0, 9.0)] == [
        "not_extrapolative", "not_extrapolative", "outside_window", None, None, "above_gamma_hi"]
    assert MaxVol(5, options, 0).admit(1.5) is None and MaxVol(5, options, 0).admit(1.2) == "not_extrapolative"
    assert MaxGamma(5, options, 0).admit(9.0) is None
    assert RandomPick(5, options, 0).admit(0.1) is None and RandomPick(5, options, 0).gamma_min is None
    assert MaxGamma(5, SampleOptions(gamma_min=0), 0).admit(0.5) is None  # 0: always N


def test_buffer_sizes_follow_the_strategy():
    assert MaxVol(7, SampleOptions(), 0).buffer_limit() == 2000
    assert MaxVol(300, SampleOptions(), 0).buffer_limit() == 6000
    assert GammaWindow(7, SampleOptions(buffer_size=50), 0).buffer_limit() == 50
    assert MaxGamma(7, SampleOptions(buffer_size=50), 0).buffer_limit() == 7
    assert RandomPick(7, SampleOptions(), 0).report_fields() == {"buffer_size": None, "gamma_window": None}


def _stream(strategy, gammas):
    """The pool streamed as the command streams it: a structure below the threshold of its time
    comes back without its frame (the buffer refuses to take one of those: AssertionError)."""
    buffer = CandidateBuffer(strategy.buffer_limit())
    thresholds = []
    for index, g in enumerate(gammas):
        threshold = strategy.send_back_from(buffer)
        thresholds.append(threshold)
        frame = None if threshold is not None and g < threshold else object()
        if strategy.admit(g) is None:
            buffer.offer(BufferedCandidate(strategy.key(g, index), index, frame, np.array([g])))
    return buffer, thresholds


def test_max_gamma_keeps_the_largest_and_ties_go_to_the_earlier_structure():
    gammas = [3.0, 9.0, 1.5, 9.0, 4.0, 0.9, 7.0]
    strategy = MaxGamma(3, SampleOptions(), 0)
    buffer, thresholds = _stream(strategy, gammas)
    best = buffer.best_first()
    assert [c.pool_index for c in best] == [1, 3, 6]
    assert [c.pool_index for c in strategy.select(best, {}).picks] == [1, 3, 6]
    # before the buffer is full, whole structures from the γ floor on; then only what beats its lowest γ
    assert thresholds[:3] == [1.01, 1.01, 1.01] and thresholds[3] == 1.5 and thresholds[-1] == 4.0


def test_structures_below_the_admission_floor_are_not_sent_back_while_the_buffer_fills():
    """What admit refuses for its γ alone never comes back whole; every strategy's picks are the
    same as with everything sent back until the buffer is full."""
    options = SampleOptions(gamma_min=1.2, gamma_lo=2.0, gamma_hi=8.0, buffer_size=60)
    gammas = list(np.random.default_rng(3).lognormal(0.5, 0.8, 400))
    floors = {"maxvol": 1.2, "max_gamma": 1.2, "gamma_window": 2.0, "random": None}
    for name, floor in floors.items():
        strategy = make_strategy(name, 30, options, 0)
        assert strategy.admitted_from() == floor
        assert all(strategy.admit(g) is not None for g in gammas if floor is not None and g < floor)
        buffer, thresholds = _stream(strategy, gammas)
        assert thresholds[0] == floor and len(buffer) == strategy.buffer_limit()  # it filled up
        held_back = sum(t is not None and g < t for g, t in zip(gammas, thresholds))
        assert held_back > 100 if floor is not None else held_back == 0
        reference = CandidateBuffer(strategy.buffer_limit())
        again = make_strategy(name, 30, options, 0)
        for index, g in enumerate(gammas):  # everything sent back: the buffer's contents must not change
            if again.admit(g) is None:
                reference.offer(BufferedCandidate(again.key(g, index), index, object(), np.array([g])))
        assert [c.pool_index for c in buffer.best_first()] == [c.pool_index for c in reference.best_first()]
        assert all(c.frame is not None for c in buffer.best_first())  # each came back whole
    assert GammaWindow(5, SampleOptions(gamma_min=3.0, gamma_lo=2.0, gamma_hi=8.0), 0).admitted_from() == 3.0


def test_random_is_a_seeded_uniform_reservoir():
    gammas = list(np.linspace(0.5, 20, 200))
    picks = {seed: [c.pool_index for c in RandomPick(10, SampleOptions(), seed).select(
        _stream(RandomPick(10, SampleOptions(), seed), gammas)[0].best_first(), {}).picks] for seed in (1, 1, 2)}
    assert len(picks[1]) == 10 and picks[1] == sorted(picks[1])
    again = [c.pool_index for c in _stream(RandomPick(10, SampleOptions(), 1), gammas)[0].best_first()]
    assert sorted(again) == picks[1]                 # the same seed, the same reservoir
    assert picks[2] != picks[1]
    assert min(picks[1]) < 100 < max(picks[1])       # not the largest γ: low ones are drawn too
    _, thresholds = _stream(RandomPick(10, SampleOptions(), 1), gammas)
    assert set(thresholds) == {None}                 # every structure may still replace a member


def test_buffer_refuses_a_structure_that_was_not_sent_back():
    buffer = CandidateBuffer(1)
    buffer.offer(BufferedCandidate((2.0, 0), 0, object(), np.array([2.0])))
    with pytest.raises(AssertionError):
        buffer.offer(BufferedCandidate((3.0, -1), 1, None, np.array([3.0])))


def _recording_greedy_run(original, log_path):
    def run(*args, **kwargs):
        with open(log_path, "a") as log:
            log.write(f"{os.getpid()}\n")
        return original(*args, **kwargs)
    return run


def test_maxvol_runs_its_plain_greedy_run_in_a_forked_process_with_the_same_selection(tmp_path, monkeypatch):
    """With n_jobs 2 the greedy run without the joint MaxVol owners goes to a forked process; the
    selection and its report equal those of both runs here, bit for bit (two elements, 120
    candidates of 3-9 atoms beyond an active set of random projections)."""
    from pace_worker.ace.activeset import maxvol_routine
    from pace_worker.algorithms import sample_strategies

    rng = np.random.default_rng(5)
    inverse = {el: np.linalg.inv(rng.normal(size=(12, 12))) for el in ("Cu", "Ni")}
    buffered = []
    for index in range(120):
        projections = {el: rng.normal(size=(int(rng.integers(3, 10)), 12)) * rng.uniform(0.5, 3.0)
                       for el in ("Cu", "Ni") if rng.random() < 0.8 or el == "Cu"}
        gamma = np.concatenate([np.abs(p @ inverse[el]).max(axis=1) for el, p in projections.items()])
        buffered.append(BufferedCandidate((float(gamma.max()), -index), index, object(), gamma, projections))
    buffered.sort(reverse=True)
    log_path = tmp_path / "runs.txt"
    monkeypatch.setattr(sample_strategies, "greedy_run", _recording_greedy_run(sample_strategies.greedy_run, log_path))
    selections = {}
    for jobs in (None, 2):
        log_path.write_text("")
        selected = MaxVol(15, SampleOptions(), 0, maxvol_routine(), n_jobs=jobs).select(buffered, inverse)
        selections[jobs] = ([c.pool_index for c in selected.picks], selected.report, selected.logdet)
        pids = [int(line) for line in log_path.read_text().split()]
        assert len(pids) == 2 and (pids.count(os.getpid()) == 2 if jobs is None else pids.count(os.getpid()) == 1)
    assert len(selections[2][0]) == 15
    assert selections[2] == selections[None]
    assert {selections[2][1]["maxvol_method"]} <= {"greedy", "joint MaxVol owners first, then greedy"}

