#!/usr/bin/env bash
# Fresh machine -> installed -> a complete active-learning loop (EMT labels) with maxvol and random
# selection -> table of test errors per iteration and runs/demo/learning_curve.png.
# Extra arguments go to `pace-worker demo` (e.g. --iterations 4, --workdir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/pace-worker demo --workdir runs/demo --compare random "$@"
