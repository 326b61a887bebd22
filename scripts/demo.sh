#!/usr/bin/env bash
# Fresh machine -> installed -> the active-learning loop (EMT labels) with maxvol and random selection
# at seeds 0, 1, 2 -> labels each needed to reach a test force RMSE of 50 meV/Å, their ratio per seed,
# runs/demo/demo_summary.json and runs/demo/learning_curve.png.
# Extra arguments go to `pace-worker demo` (e.g. --seeds 0 1 2 3, --target 30, --iterations 6, --workdir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/pace-worker demo --workdir runs/demo --compare random "$@"
