#!/usr/bin/env bash
# Fresh machine -> installed -> the test suite (real pacemaker fits on tiny EMT data, ~10 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/python -m pytest -q "$@"
