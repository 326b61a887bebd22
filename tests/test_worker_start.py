"""A local worker ends at once only when the process that started it is gone (not when its parent
is PID 1: in a container the command itself is PID 1, and its workers must work)."""
from __future__ import annotations

import multiprocessing
import os

from pace_worker import interrupts


def started_worker_exit_code(parent_pid: int) -> int:
    process = multiprocessing.get_context("fork").Process(target=interrupts.quiet_worker, args=(parent_pid,))
    process.start()
    process.join(timeout=30)
    return process.exitcode


def test_a_worker_of_the_process_that_started_it_runs():
    assert started_worker_exit_code(os.getpid()) == 0


def test_a_worker_whose_starter_is_gone_ends_at_once():
    assert started_worker_exit_code(os.getpid() + 1_000_000) == 1
