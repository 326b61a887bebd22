"""The three entry points and both flag spellings reach the same command."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MAIN, REPO

ENTRY_POINTS = {
    "src/main.py": [sys.executable, str(MAIN)],
    "python -m": [sys.executable, "-m", "pace_worker"],
    "console script": [str(Path(sys.executable).parent / "pace-worker")],
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_entry_points_show_the_train_command(entry):
    proc = subprocess.run(ENTRY_POINTS[entry] + ["train", "--help"], capture_output=True, text=True,
                          cwd=REPO / "tests", env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr
    for flag in ("--config", "--meta-config", "--dataset", "--iteration", "--initial-potential",
                 "--potential-yaml", "--asi"):
        assert flag in proc.stdout


@pytest.mark.parametrize("spelling", ["--meta-config", "--meta_config"])
def test_both_flag_spellings_are_accepted(tmp_path, spelling):
    meta = tmp_path / "meta.yaml"
    meta.write_text("device: quantum\n")
    proc = subprocess.run([sys.executable, str(MAIN), "train", spelling, str(meta), "--dataset", "x.xyz",
                           "--iteration", "1"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "meta_config" in proc.stderr and "device" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_command_is_a_usage_error():
    proc = subprocess.run([sys.executable, str(MAIN), "trian"], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_a_command_freezes_the_collector_at_exit_after_its_work(tmp_path):
    """At exit a command moves its objects to the collector's permanent generation (the last
    collections would walk them all once more, 0.3-0.4 s after the work was done): the handlers run
    before it did theirs (here: one that reads the frozen count after everything else, and sees
    objects frozen), the command's exit status and its one-line error are as before."""
    script = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count()))\n"  # registered first: runs last
        f"sys.path.insert(0, {str(REPO / 'src')!r})\n"
        "from pace_worker.cli import main\n"
        "sys.exit(main(['validate', '--potential', 'missing.yace', '--test-set', 'missing.xyz',\n"
        "               '--output', 'm.json']))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "missing.yace" in proc.stderr and "Traceback" not in proc.stderr
    assert int(proc.stdout.split("frozen")[-1]) > 10_000
