"""A call in a forked process: its result comes back; a failure or a death is one exception the
caller answers by doing the work itself; a call not wanted is killed, not left running. And
BIRCH's threshold search gives the same clusters with fits running ahead in forked processes."""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import REPO

from pace_worker.algorithms.direct_clustering import BirchClustering
from pace_worker.parallel import forked_call
from pace_worker.parallel.forked_call import ForkedCall, ForkedCallFailed


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _fail():
    raise ValueError("bad data")


def test_the_result_comes_from_another_process_and_sees_this_ones_memory():
    data = np.arange(1_000_000.0)  # not pickled to the child: it has it from the fork
    with ForkedCall(lambda: (os.getpid(), float(data.sum()))) as call:
        pid, total = call.result()
    assert pid != os.getpid() and total == float(data.sum())


def test_an_error_or_a_death_in_the_child_is_forked_call_failed():
    with pytest.raises(ForkedCallFailed, match="bad data"):
        ForkedCall(_fail).result()
    with pytest.raises(ForkedCallFailed, match="without a result"):
        ForkedCall(os._exit, 3).result()


def test_a_fork_that_cannot_start_is_forked_call_failed_and_leaves_no_pipe_open(monkeypatch):
    def no_fork(self):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(multiprocessing.get_context("fork").Process, "start", no_fork)
    open_before = len(os.listdir("/proc/self/fd"))
    call = ForkedCall(sum, [1, 2])
    assert len(os.listdir("/proc/self/fd")) == open_before
    with pytest.raises(ForkedCallFailed):
        call.result()


def test_a_forked_call_not_started_is_forked_call_failed():
    call = ForkedCall(sum, [1, 2], start=False)
    assert not call.started
    with pytest.raises(ForkedCallFailed):
        call.result()
    with ForkedCall(sum, [1, 2]) as started:
        assert started.started and started.result() == 3 and not started.started


def _birch_labels_in_a_pool_worker(X) -> np.ndarray:
    return BirchClustering(100, random_state=0, n_jobs=2).fit(X).labels_


def test_in_a_daemonic_pool_worker_the_search_runs_there_alone():
    """A pool's worker is daemonic and may not start processes: the fits run in it, one by one.
    (A spawned worker: a forked one would inherit this process's OpenMP state, and BIRCH's
    predict, which uses OpenMP, would then wait for ever — scikit-learn's limit, not ours.)"""
    X = _clusters(1000, seed=2)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        labels = pool.apply(_birch_labels_in_a_pool_worker, (X,))
    assert np.array_equal(labels, BirchClustering(100, random_state=0).fit(X).labels_)


def test_a_cancelled_call_leaves_no_process():
    call = ForkedCall(_pid_after, 60)
    pid = call._process.pid
    os.kill(pid, 0)  # running
    started = time.monotonic()
    call.cancel()
    assert time.monotonic() - started < 10
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)
    with pytest.raises(ForkedCallFailed):
        call.result()


def _clusters(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal(centre, 0.3, size=(n // 8, 3)) for centre in rng.uniform(-5, 5, size=(8, 3))])


@pytest.mark.parametrize("n_jobs", [2, 3])
def test_birch_search_ahead_gives_the_same_clusters(n_jobs):
    X = _clusters(4000, seed=0)
    alone = BirchClustering(200, random_state=0).fit(X)
    ahead = BirchClustering(200, random_state=0, n_jobs=n_jobs).fit(X)
    assert alone.refits_ >= 3  # several thresholds were tried, so fits ran ahead
    assert (ahead.refits_, ahead.threshold_, ahead.n_subclusters_) == (alone.refits_, alone.threshold_,
                                                                      alone.n_subclusters_)
    assert np.array_equal(ahead.labels_, alone.labels_)


def test_birch_search_fits_here_when_a_forked_fit_fails(monkeypatch):
    X = _clusters(2000, seed=1)
    alone = BirchClustering(100, random_state=0).fit(X)

    def failing(self):
        self.cancel()
        raise ForkedCallFailed("no memory for a fork")

    monkeypatch.setattr(forked_call.ForkedCall, "result", failing)
    ahead = BirchClustering(100, random_state=0, n_jobs=2).fit(X)
    assert alone.refits_ >= 1 and ahead.refits_ == alone.refits_
    assert np.array_equal(ahead.labels_, alone.labels_)


def test_forked_calls_after_openmp_work_in_this_process_do_not_hang():
    """libgomp's thread pool does not survive a fork: a child that entered OpenMP after its parent
    had used it would wait for ever (it does without ForkedCall's one-thread limit). The parent
    here runs k-means and a nearest-centre search (scikit-learn's OpenMP code) on 2 threads first,
    then forks BIRCH fits, several times, and a child that runs the OpenMP search itself."""
    script = textwrap.dedent("""
        import numpy as np
        from sklearn.cluster import KMeans
        from sklearn.metrics import pairwise_distances_argmin
        from threadpoolctl import threadpool_limits
        from pace_worker.algorithms.direct_clustering import BirchClustering
        from pace_worker.parallel.forked_call import ForkedCall
        rng = np.random.default_rng(0)
        X = np.vstack([rng.normal(c, 0.3, size=(800, 4)) for c in rng.uniform(-5, 5, size=(6, 4))])
        with threadpool_limits(2):
            for rep in range(4):
                KMeans(n_clusters=10, n_init=1, random_state=rep).fit(X)
                pairwise_distances_argmin(X, X[:300])
                birch = BirchClustering(150 + rep, random_state=0, n_jobs=2).fit(X)
            in_child = ForkedCall(lambda: pairwise_distances_argmin(X, X[:300])).result()
        assert np.array_equal(in_child, pairwise_distances_argmin(X, X[:300]))
        print("refits", birch.refits_)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) >= 1  # fits ran ahead in forked processes
