"""The main process's signal handling (:mod:`pace_worker.interrupts`) in a process of its own."""
from __future__ import annotations

import subprocess
import sys
import textwrap

QUIETED_AFTER_A_SIGNAL = textwrap.dedent("""
    import logging, os, signal, sys
    from pace_worker import interrupts

    interrupts.install()
    interrupts.quiet_logger_after_a_signal("tornado.application")
    logging.basicConfig(stream=sys.stderr, format="%(name)s %(message)s")
    loop_log, child_log = logging.getLogger("tornado.application"), logging.getLogger("tornado.application.child")
    loop_log.error("before the signal")
    try:
        os.kill(os.getpid(), signal.SIGINT)
        signal.pause()
    except KeyboardInterrupt:
        pass
    loop_log.error("after the signal")
    child_log.error("a child logger keeps its records")
    logging.getLogger("pace_worker.x").error("other loggers too")
""")


def test_a_quieted_logger_drops_its_records_once_a_signal_came():
    """Dask's client loop reports a failing callback of its own after Ctrl-C on this logger (a
    traceback where the command's one line belongs): after a signal it is dropped, before it is not."""
    proc = subprocess.run([sys.executable, "-c", QUIETED_AFTER_A_SIGNAL], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["tornado.application before the signal",
                                        "tornado.application.child a child logger keeps its records",
                                        "pace_worker.x other loggers too"]


WARNINGS_AFTER_A_SIGNAL = textwrap.dedent("""
    import gc, os, signal, warnings
    from pace_worker import interrupts

    async def result():
        return 1

    interrupts.install()
    result()  # a coroutine never awaited: Python warns when it is collected
    gc.collect()
    warnings.warn("a warning of the work")
    try:
        os.kill(os.getpid(), signal.SIGINT)
        signal.pause()
    except KeyboardInterrupt:
        pass
    result()
    gc.collect()
    warnings.warn("a warning of the unwinding")
""")


def test_warnings_are_not_shown_once_a_signal_came():
    """Ctrl-C inside Dask's client can leave a coroutine never awaited; Python's RuntimeWarning about it
    (two lines, one a tracemalloc hint) came before the command's one line. After a signal warnings
    are ignored; before it they are shown."""
    proc = subprocess.run([sys.executable, "-W", "default", "-c", WARNINGS_AFTER_A_SIGNAL],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "coroutine 'result' was never awaited" in proc.stderr
    assert "a warning of the work" in proc.stderr
    assert proc.stderr.count("was never awaited") == 1, proc.stderr
    assert "unwinding" not in proc.stderr, proc.stderr
