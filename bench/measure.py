"""Shared by the bench scripts: run a command and measure its wall time and peak memory."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


# the polls' spacing in a run made for its memory alone (its wall time is not used): a short peak
# can fall between polls 0.3 s apart (``sample``'s, in its selection at the end: its 20k peak read
# 180 or 226 MiB every 0.3 s, 226 in each of three runs every 0.1 s)
MEMORY_RUN_POLL_S = 0.1


def run_measured(cmd, cwd, memory: bool = True, poll_s: float = 0.3) -> tuple[float, float, float, str]:
    """Wall seconds, peak PSS and peak RSS (MiB, summed over the process tree; 0 without
    ``memory``), output. Polling PSS reads every process's smaps (~15 ms of CPU per poll of 3
    processes): on a machine whose cores the command keeps busy that CPU is taken from it, so
    time a multi-process command with ``memory=False``. ``poll_s``: the polls' spacing (a run
    for memory alone: :data:`MEMORY_RUN_POLL_S`)."""
    import psutil

    start = time.perf_counter()
    out_path = Path(cwd) / f"out_{time.time_ns()}.log"
    with open(out_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PACE_WORKER_NO_PROGRESS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
        parent = psutil.Process(proc.pid)
        peak_pss = peak_rss = 0
        while memory and proc.poll() is None:
            try:
                infos = [p.memory_full_info() for p in [parent] + parent.children(recursive=True)]
                peak_pss = max(peak_pss, sum(i.pss for i in infos))
                peak_rss = max(peak_rss, sum(i.rss for i in infos))
            except psutil.Error:
                pass
            time.sleep(poll_s)  # reading smaps for PSS costs CPU: poll gently
        proc.wait()
    wall = time.perf_counter() - start
    text = out_path.read_text()
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{text[-3000:]}")
    return wall, peak_pss / 2 ** 20, peak_rss / 2 ** 20, text
