"""The main process's signal handling (:mod:`pace_worker.interrupts`) in a process of its own."""
from __future__ import annotations

import subprocess
import sys
import textwrap

# each script runs after this: the handler installed, and a SIGINT to the process itself
PRELUDE = textwrap.dedent("""
    import os, signal
    from pace_worker import interrupts

    interrupts.install()

    def interrupt_itself():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            signal.pause()
        except KeyboardInterrupt:
            pass
""")

QUIETED_AFTER_A_SIGNAL = textwrap.dedent("""
    import logging, sys

    interrupts.quiet_logger_after_a_signal("tornado.application")
    logging.basicConfig(stream=sys.stderr, format="%(name)s %(message)s")
    loop_log, child_log = logging.getLogger("tornado.application"), logging.getLogger("tornado.application.child")
    loop_log.error("before the signal")
    interrupt_itself()
    loop_log.error("after the signal")
    child_log.error("a child logger keeps its records")
    logging.getLogger("pace_worker.x").error("other loggers too")
""")

WARNINGS_AFTER_A_SIGNAL = textwrap.dedent("""
    import gc, warnings

    async def result():
        return 1

    result()  # a coroutine never awaited: Python warns when it is collected
    gc.collect()
    warnings.warn("a warning of the work")
    interrupt_itself()
    result()
    gc.collect()
    warnings.warn("a warning of the unwinding")
""")


def run_script(script: str, *options: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *options, "-c", PRELUDE + script], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_a_quieted_logger_drops_its_records_once_a_signal_came():
    """Dask's client loop reports a failing callback of its own after Ctrl-C on this logger (a
    traceback where the command's one line belongs): after a signal it is dropped, before it is not."""
    proc = run_script(QUIETED_AFTER_A_SIGNAL)
    assert proc.stderr.splitlines() == ["tornado.application before the signal",
                                        "tornado.application.child a child logger keeps its records",
                                        "pace_worker.x other loggers too"]


def test_warnings_are_not_shown_once_a_signal_came():
    """Ctrl-C inside Dask's client can leave a coroutine never awaited; Python's RuntimeWarning about it
    (two lines, one a tracemalloc hint) came before the command's one line. After a signal warnings
    are ignored; before it they are shown."""
    proc = run_script(WARNINGS_AFTER_A_SIGNAL, "-W", "default")
    assert "coroutine 'result' was never awaited" in proc.stderr
    assert "a warning of the work" in proc.stderr
    assert proc.stderr.count("was never awaited") == 1, proc.stderr
    assert "unwinding" not in proc.stderr, proc.stderr
