"""The working folder of one iteration (``iter_NNN/``): fresh, replaced, or resumed.

``state.json`` records ``{"status": "running" | "completed", "inputs": <fingerprint>, "attempt": k}``.
A folder whose run was interrupted (status ``running``) with the same input fingerprint and an
interim potential is resumed from that interim potential (copied to ``resume_from_<k>.yaml``);
any other existing folder is removed and started anew.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

INTERIM_POTENTIAL = "interim_potential_0.yaml"  # pacemaker rewrites it at every optimizer step
STALE_AFTER_INTERRUPT = ("output_potential.yaml", "metrics.txt", "test_metrics.txt")


def fingerprint(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class IterationFolder:
    path: Path
    inputs: str  # fingerprint of everything that determines the fit
    attempt: int = 1
    resume_from: Optional[Path] = None

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @classmethod
    def open(cls, path: Path, inputs: str) -> "IterationFolder":
        """Resume an interrupted run of the same inputs, or start the folder anew."""
        path = Path(path)
        state_file = path / "state.json"
        state = json.loads(state_file.read_text()) if state_file.is_file() else {}
        if (state.get("status") == "running" and state.get("inputs") == inputs
                and (path / INTERIM_POTENTIAL).is_file()):
            attempt = int(state.get("attempt", 1))
            resume_from = path / f"resume_from_{attempt}.yaml"
            shutil.copyfile(path / INTERIM_POTENTIAL, resume_from)
            for name in STALE_AFTER_INTERRUPT:
                (path / name).unlink(missing_ok=True)
            log.info("%s was interrupted: resuming from %s", path.name, resume_from.name)
            folder = cls(path, inputs, attempt + 1, resume_from)
        else:
            if path.exists():
                log.info("replacing %s", path)
                shutil.rmtree(path)
            path.mkdir(parents=True)
            folder = cls(path, inputs)
        folder._write_state("running")
        return folder

    def mark_completed(self) -> None:
        self._write_state("completed")

    def _write_state(self, status: str) -> None:
        self.state_file.write_text(json.dumps({"status": status, "inputs": self.inputs, "attempt": self.attempt}))
