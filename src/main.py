"""The orchestrator's entry point: ``python src/main.py <command> ...``.

Works from a plain checkout (no install of pace-worker itself needed, only its dependencies).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pace_worker.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
