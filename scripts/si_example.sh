#!/usr/bin/env bash
# Installed -> train on the bundled Si example (real DFT data) -> validate it -> metrics printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/pace-worker train --config examples/si/config.yaml --meta-config examples/si/meta_config.yaml \
    --dataset examples/si/data/Si_training.xyz --iteration 1 "$@"
# validate finds the test set that train recorded next to the potential
.venv/bin/pace-worker validate --potential runs/si-demo/output_potential.yace \
    --output runs/si-demo/validation_metrics.json
echo "outputs: runs/si-demo/ (train_metrics.json, output_potential.yace, validation_metrics*.png, ...)"
