#!/usr/bin/env bash
# Install pace-worker and the ICAMS stack (python-ace/pacemaker, tensorpotential, TensorFlow).
#
#   scripts/install.sh            # CPU: virtual environment in .venv, no CUDA wheels
#   scripts/install.sh --gpu      # same, plus tensorflow[and-cuda] (the Docker image uses this)
#   scripts/install.sh --system   # into the current interpreter instead of .venv
#   scripts/install.sh --no-test  # without the test extra (pytest); the Docker image uses
#                                 # PACE_WORKER_VENV=/opt/venv scripts/install.sh --gpu --no-test
#
# tensorpotential declares tensorflow[and-cuda] on Linux; it is installed with --no-deps after
# its real needs (listed in pyproject.toml), so the CPU install never downloads CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${PACE_WORKER_VENV:-.venv}"
with_test=1
with_gpu=0
use_venv=1
for arg in "$@"; do
  case "$arg" in
    --gpu) with_gpu=1 ;;
    --no-test) with_test=0 ;;
    --system) use_venv=0 ;;
    *) echo "install.sh: unknown option '$arg' (use --gpu, --no-test and/or --system)" >&2; exit 2 ;;
  esac
done
extras=""
[ "$with_test" = 1 ] && extras="test"
[ "$with_gpu" = 1 ] && extras="${extras:+$extras,}gpu"

if [ "$use_venv" = 1 ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  py="$venv/bin/python"
else
  py="$(command -v python3)"
fi

"$py" -m pip install -q --upgrade pip
"$py" -m pip install -q -c constraints.txt -e ".${extras:+[$extras]}"
"$py" -m pip install -q -c constraints.txt --no-deps "tensorpotential==0.6.2.1"
# pip compiles the libraries' bytecode, not an editable package's: compiled here, a command does not
# compile its ~12k lines again at every start (Python cannot cache them where PYTHONDONTWRITEBYTECODE
# is set, as in many containers); an edited file is compiled anew, as always
"$py" -m compileall -q src >/dev/null || echo "install.sh: could not precompile src/ (read-only?); it runs as it is"
"$py" - <<'PY'
import importlib.metadata as md
for name in ("python-ace", "tensorpotential", "tensorflow", "tf_keras", "numpy", "pandas"):
    print(f"  {name:16s} {md.version(name)}")
cuda = [d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].lower().startswith("nvidia-")]
print(f"  CUDA wheels      {len(cuda)}")
PY
echo "pace-worker installed ($py)"
