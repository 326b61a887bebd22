"""The working folder of one iteration (``iter_NNN/``): fresh, resumed, or replaced only on success.

The archive of a finished iteration is never lost to a failed rerun: a rerun of a finished
iteration works in ``iter_NNN.attempt-<pid>/`` and takes the name ``iter_NNN`` only when it
succeeded (:meth:`IterationFolder.commit`); a failed attempt stays beside the archive for its
logs and is removed by the next successful run.

``state.json`` records ``{"status": "running" | "completed", "inputs": <fingerprint>, "attempt": k}``
(written atomically). A folder whose run was interrupted (status ``running``) with the same
input fingerprint and an interim potential is resumed from it (copied to ``resume_from_<k>.yaml``):
from the whole copy the fit keeps after every optimizer step (``interim_potential_0.whole.yaml``,
renamed into place: :mod:`pace_worker.ace.pacemaker_child`), or, without a usable one, from
pacemaker's ``interim_potential_0.yaml``, which pacemaker rewrites in place at every step, so that a
run stopped at that moment leaves it cut short. When the caller's check finds every interim
potential there unusable, that run, like an interrupted run of other inputs, is started anew in place; a
``state.json`` that cannot be read (a run killed while writing it) counts as "start this
iteration over", without removing what the folder holds until the new run succeeded.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

log = logging.getLogger(__name__)


def interim_name(cycle: int = 0) -> str:
    """pacemaker's interim potential of fit cycle ``cycle``: it rewrites it in place at every optimizer step."""
    return f"interim_potential_{cycle}.yaml"


def whole_interim_name(cycle: "int | str" = 0) -> str:
    """The whole copy of :func:`interim_name` the fit keeps after every step (renamed into place);
    ``cycle="*"``: the pattern of all of them."""
    return f"interim_potential_{cycle}.whole.yaml"


INTERIM_POTENTIAL = interim_name(0)
WHOLE_INTERIM_POTENTIAL = whole_interim_name(0)
STALE_AFTER_INTERRUPT = ("output_potential.yaml", "metrics.txt", "test_metrics.txt")


def fingerprint(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def read_state(path: Path) -> Optional[dict]:
    """The folder's state: ``{}`` for none, ``None`` for a damaged one."""
    state_file = Path(path) / "state.json"
    if not state_file.is_file():
        return {}
    try:
        state = json.loads(state_file.read_text())
        return state if isinstance(state, dict) else None
    except (OSError, ValueError):
        return None


def _usable_interim(run: str, interims: list[Path],
                    interim_problem: Optional[Callable[[Path], Optional[str]]]) -> tuple[Optional[Path], Optional[str]]:
    """``(the first of interims that interim_problem finds usable, None)``, or ``(None, what is wrong
    with each)`` when none is (each named in a warning)."""
    problems = []
    for interim in interims:
        problem = interim_problem(interim) if interim_problem else None
        if problem is None:
            for skipped in problems:
                log.warning("%s was interrupted; its %s (damaged after it was written): resuming from %s instead",
                            run, skipped, interim.name)
            return interim, None
        problems.append(f"{interim.name} {problem}")
    problem = "; ".join(problems)
    log.warning("%s was interrupted, but its %s (a run stopped while it was written): starting this iteration over",
                run, problem)
    return None, problem


@dataclass
class IterationFolder:
    path: Path       # where this run works
    final: Path      # the archive name it gets on success (``iter_NNN``)
    inputs: str      # fingerprint of everything that determines the fit
    attempt: int = 1
    resume_from: Optional[Path] = None

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @classmethod
    def open(cls, path: Path, inputs: str,
             interim_problem: Optional[Callable[[Path], Optional[str]]] = None) -> "IterationFolder":
        """Resume an interrupted run of the same inputs, or start anew (see the module docstring).
        ``interim_problem``: what is wrong with an interim potential (None: it can be resumed from)."""
        path = Path(path)
        state = read_state(path) if path.exists() else {}
        if state is None:
            log.warning("%s/state.json is damaged (a run was killed while writing it): starting this iteration "
                        "over; the folder is replaced only if the new run succeeds", path)
        interims = [path / name for name in (WHOLE_INTERIM_POTENTIAL, INTERIM_POTENTIAL) if (path / name).is_file()]
        interrupted = bool(state and state.get("status") == "running" and state.get("inputs") == inputs
                           and interims)
        interim, problem = (_usable_interim(path.name, interims, interim_problem) if interrupted
                            else (None, None))
        if interrupted and problem is None:
            attempt = int(state.get("attempt", 1))
            resume_from = path / f"resume_from_{attempt}.yaml"
            shutil.copyfile(interim, resume_from)
            for name in STALE_AFTER_INTERRUPT:
                (path / name).unlink(missing_ok=True)
            log.info("%s was interrupted: resuming from %s", path.name, resume_from.name)
            folder = cls(path, path, inputs, attempt + 1, resume_from)
        elif path.exists() and (state is None or state.get("status") == "completed"):
            work = path.with_name(f"{path.name}.attempt-{os.getpid()}")
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            log.info("%s is a finished iteration: this run works in %s and replaces it only on success",
                     path.name, work.name)
            folder = cls(work, path, inputs)
        else:
            if path.exists():
                log.info("replacing %s (an interrupted run %s)", path,
                         "that cannot be resumed" if problem is not None else "of other inputs")
                shutil.rmtree(path)
            path.mkdir(parents=True)
            folder = cls(path, path, inputs)
        folder._write_state("running")
        return folder

    def commit(self) -> Path:
        """Mark the run completed and give it the archive name (replacing the previous archive). The
        whole copies of the interim potentials (only for resuming) are removed: the archive keeps
        pacemaker's own files."""
        for copy in self.path.glob(whole_interim_name("*")):
            copy.unlink(missing_ok=True)
        self._write_state("completed")
        if self.path != self.final:
            old = self.final.with_name(f"{self.final.name}.old-{os.getpid()}")
            if self.final.exists():
                os.replace(self.final, old)
            os.replace(self.path, self.final)
            shutil.rmtree(old, ignore_errors=True)
            self.path = self.final
        for leftover in self.final.parent.glob(f"{self.final.name}.attempt-*"):  # failed attempts
            shutil.rmtree(leftover, ignore_errors=True)
        return self.final

    def _write_state(self, status: str) -> None:
        tmp = self.state_file.with_name(f".state.json.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"status": status, "inputs": self.inputs, "attempt": self.attempt}))
        os.replace(tmp, self.state_file)
