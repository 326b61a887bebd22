#!/usr/bin/env bash
# Fresh machine -> installed -> train on the bundled Si example -> metrics printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/pace-worker train --config examples/si/config.yaml --meta-config examples/si/meta_config.yaml \
    --dataset examples/si/data/Si_training.xyz --iteration 1 "$@"
echo "outputs: runs/si-demo/ (train_metrics.json, output_potential.yace, ...)"
