#!/usr/bin/env bash
# End-to-end check of the Docker image, on a Debian machine run as root (CI runs it from a fresh
# clone after the tests). Needs no GPU and no image registry; needs the Debian mirror and PyPI.
#
#   bash scripts/docker_check.sh
#
# 1. installs docker.io, docker-compose and debootstrap from Debian if missing, and starts
#    `dockerd --bridge=none --iptables=false` if no daemon runs (no Docker bridge network is
#    ever used: builds use the host network, containers run with --network none);
# 2. base image: python:3.11-slim if present or pullable, else a stand-in made once with
#    debootstrap (Debian bookworm minbase + python3 3.11, venv, pip; reused while it exists);
# 3. `docker-compose build pace_worker` (BASE_IMAGE passed as a build argument); the builder
#    stage is kept as pace_worker:builder-cache (the next build takes seconds unless
#    pyproject.toml, constraints.txt or scripts/install.sh changed), superseded
#    images of ours are pruned;
# 4. in the image: TensorFlow is the CUDA build, and runs on the CPU without a GPU;
# 5. the README's four commands on the bundled Si data (train, sample, direct_sample,
#    validate), once as root and once as --user 1000:1000 (no passwd entry, no home) with
#    --read-only --tmpfs /tmp; checks the outputs and that the user run's files belong to 1000.
# Prints the wall time of every step and the image size; exits non-zero on any failure.
#
# Environment: BASE_IMAGE (skip the choice in 2), PACE_WORKER_STANDIN_BASE (name of the stand-in,
# default pace_worker_base:bookworm-py311), DOCKERD_LOG (default /var/log/pace-worker-dockerd.log),
# PACE_WORKER_CHECK_KEEP=1 (keep the temporary data folders).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

IMAGE=pace_worker:latest
REAL_BASE=python:3.11-slim
STANDIN_BASE="${PACE_WORKER_STANDIN_BASE:-pace_worker_base:bookworm-py311}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/pace-worker-dockerd.log}"
USER_ID=1000:1000

work=""
rootfs=""
cleanup() {
  local rc=$?
  if [ -n "$rootfs" ] && [ -d "$rootfs" ]; then
    for m in proc sys dev/pts dev; do umount -l "$rootfs/$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$(dirname "$rootfs")"
  fi
  if [ -n "$work" ] && [ -d "$work" ]; then
    if [ "${PACE_WORKER_CHECK_KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
  fi
  if [ "$rc" != 0 ]; then echo "docker_check: FAILED (exit $rc)" >&2; fi
}
trap cleanup EXIT
trap 'echo "docker_check: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

die() { echo "docker_check: FAILED: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
declare -a summary=()
record() { summary+=("$(printf '%-44s %8s s' "$1" "$2")"); echo "-- $1: $2 s"; }
step() { echo; echo "== $*"; }

t_total=$(now)
[ "$(id -u)" = 0 ] || die "run as root (installs packages, starts dockerd, runs debootstrap)"

# ---------------------------------------------------------------- 1. tools and the daemon
step "tools"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  t=$(now)
  echo "installing ${missing[*]} (waits for a running apt/dpkg to finish)"
  apt_opts=(-o DPkg::Lock::Timeout=1800 -o Acquire::Retries=3)
  # the package must not start a dockerd of its own (with the default bridge network)
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update -q
  DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -q docker.io docker-compose debootstrap
  [ -z "$policy" ] || rm -f "$policy"
  record "apt-get install ${missing[*]}" "$(since "$t")"
fi
command -v docker >/dev/null || die "no docker client after installing docker.io"

dockerd_runs() { pidof dockerd >/dev/null 2>&1 || pgrep -x dockerd >/dev/null 2>&1; }
wait_docker() { for _ in $(seq 1 "$1"); do docker info >/dev/null 2>&1 && return 0; sleep 1; done; return 1; }
if ! docker info >/dev/null 2>&1; then
  if dockerd_runs; then
    echo "a dockerd runs but does not answer yet; waiting for it"
    wait_docker 30 || true
  fi
  if ! docker info >/dev/null 2>&1 && ! dockerd_runs; then
    echo "starting dockerd --bridge=none --iptables=false (log: $DOCKERD_LOG)"
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    nohup dockerd --bridge=none --iptables=false >>"$DOCKERD_LOG" 2>&1 </dev/null &
  fi
  wait_docker 60 || true
  docker info >/dev/null 2>&1 || { tail -20 "$DOCKERD_LOG" >&2 || true; die "dockerd did not start (log: $DOCKERD_LOG)"; }
fi
echo "docker $(docker version -f '{{.Server.Version}}'), $(docker-compose version --short 2>/dev/null || docker-compose --version)"

gpu_flags=()
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 \
    && docker info -f '{{json .Runtimes}}' 2>/dev/null | grep -q nvidia; then
  gpu_flags=(--gpus all)
  echo "GPU present: the runs get --gpus all"
else
  echo "no GPU (or no nvidia runtime): the runs are CPU only, without --gpus all"
fi

# ---------------------------------------------------------------- 2. the base image
debian_mirror() {
  local m
  # one-line sources: deb [opts] URL bookworm main ...
  m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '
    $1 == "deb" { for (i = 2; i < NF; i++) if ($i ~ /^(https?|ftp):\/\//) { if ($(i+1) == "bookworm") { print $i; exit } break } }') || true
  # deb822 sources: URIs: URL / Suites: bookworm ...
  [ -n "$m" ] || m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '
    /^[ \t]*$/ { u = "" } /^URIs:/ { u = $2 }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm" && u != "") { print u; exit } }') || true
  echo "${m:-http://deb.debian.org/debian}"
}

make_standin_base() {
  local mirror tmp t
  mirror="$(debian_mirror)"
  tmp="$(mktemp -d /var/tmp/pace-worker-rootfs.XXXXXX)"
  rootfs="$tmp/rootfs"
  echo "debootstrap bookworm from $mirror into $rootfs"
  t=$(now)
  debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$tmp/debootstrap.log" 2>&1 \
    || { tail -30 "$tmp/debootstrap.log" >&2; die "debootstrap failed"; }
  record "debootstrap (stand-in base)" "$(since "$t")"
  # the machine's own CAs (e.g. a TLS-inspecting egress proxy in front of PyPI)
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null
  fi
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/* "$rootfs"/tmp/*
  for m in proc sys dev/pts dev; do umount -l "$rootfs/$m" 2>/dev/null || true; done
  t=$(now)
  tar --numeric-owner -C "$rootfs" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . \
    | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'CMD ["python3"]' \
        -m "pace-worker stand-in for $REAL_BASE: debootstrap bookworm minbase + python3" \
        - "$STANDIN_BASE" >/dev/null
  record "docker import (stand-in base)" "$(since "$t")"
  rm -rf --one-file-system "$tmp"
  rootfs=""
}

step "base image"
t=$(now)
if [ -n "${BASE_IMAGE:-}" ]; then
  base="$BASE_IMAGE"
  docker image inspect "$base" >/dev/null 2>&1 || docker pull "$base" || die "BASE_IMAGE=$base is neither present nor pullable"
elif docker image inspect "$REAL_BASE" >/dev/null 2>&1; then
  base="$REAL_BASE"
else
  tp=$(now)
  if timeout 120 docker pull -q "$REAL_BASE" >/dev/null 2>&1; then
    record "docker pull $REAL_BASE" "$(since "$tp")"
    base="$REAL_BASE"
  else
    record "docker pull $REAL_BASE (failed)" "$(since "$tp")"
    if docker image inspect "$STANDIN_BASE" >/dev/null 2>&1; then
      echo "$REAL_BASE cannot be pulled; reusing the stand-in $STANDIN_BASE"
    else
      echo "$REAL_BASE cannot be pulled; making the stand-in $STANDIN_BASE"
      make_standin_base
    fi
    base="$STANDIN_BASE"
  fi
fi
docker run --rm --network none "$base" python -c 'import sys, venv; assert sys.version_info[:2] == (3, 11), sys.version' \
  || die "base image $base has no python 3.11 with venv"
record "base image ($base)" "$(since "$t")"

# ---------------------------------------------------------------- 3. the image
step "docker-compose build pace_worker (BASE_IMAGE=$base)"
t=$(now)
docker-compose build --build-arg BASE_IMAGE="$base" pace_worker || die "docker-compose build failed"
record "docker-compose build" "$(since "$t")"
# keep the builder stage (the multi-GB venv layer) as cache for the next build, tagged so that
# pruning our superseded images (untagged, labelled pace_worker.image) leaves it alone
builder_id=$(docker images -q --filter label=pace_worker.image=builder | head -1)
[ -z "$builder_id" ] || docker tag "$builder_id" pace_worker:builder-cache
docker image prune -f --filter label=pace_worker.image >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
echo "image $IMAGE: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.2f GB", s / 1e9 }'))"

run() {  # run [docker run options] -- command...: the README's `docker run`, without a Docker network
  local opts=()
  while [ "$1" != "--" ]; do opts+=("$1"); shift; done
  shift
  docker run --rm --network none "${gpu_flags[@]}" "${opts[@]}" "$IMAGE" "$@"
}

step "image contents"
t=$(now)
run -- sh -c '
  set -e
  test -f /app/src/main.py && test -d /app/examples/si/data
  ! python -c "import pytest" 2>/dev/null || { echo "pytest is in the image" >&2; exit 1; }
  for tool in gcc cc g++ git; do ! command -v $tool >/dev/null || { echo "$tool is in the image" >&2; exit 1; }; done
  pace-worker --help >/dev/null
  python -c "
import tensorflow as tf
b = tf.sysconfig.get_build_info()
print(\"TensorFlow\", tf.__version__, dict(b))
assert b.get(\"is_cuda_build\"), \"TensorFlow is not the CUDA build\"
print(\"GPUs visible:\", tf.config.list_physical_devices(\"GPU\"))
"' || die "image contents"
record "image contents (CUDA TensorFlow)" "$(since "$t")"

# ---------------------------------------------------------------- 4. the four commands
work="$(mktemp -d /var/tmp/pace-worker-docker-check.XXXXXX)"
template="$work/template"
mkdir -p "$template"
cp examples/si/data/Si_training.xyz "$template/training_set.xyz"
cp examples/si/data/Si_test.xyz "$template/Si_test.xyz"
cat >"$template/config.yaml" <<'EOF'
# docker_check: the pipeline's whole config.yaml (other workers' sections are ignored by
# pace-worker) with a deliberately tiny fit of the bundled Si data (about a minute on 2 cores)
experiment: {name: si-docker-check, workdir: /data}
dft_params: {code: vasp, encut: 520, kpoints: [4, 4, 4]}
md_params: {temperature: [300, 1200], steps: 1000}
al_params: {n_iterations: 5, gamma_threshold: 5}
ace_model:
  initial_potentials: []
  pacemaker_config:
    seed: 42
    cutoff: 5.0
    data:
      test_filename: Si_test.xyz   # the benchmark's test set (relative to this file)
      reference_energy: auto
    potential:
      functions:
        number_of_functions_per_element: 12
        ALL: {nradmax_by_orders: [8, 4, 3], lmax_by_orders: [0, 3, 2]}
    fit:
      optimizer: BFGS
      maxiter: 10
      max_time: 600
      loss: {kappa: 0.3, L1_coeffs: 1.0e-8, L2_coeffs: 1.0e-8}
    backend:
      evaluator: tensorpot
      batch_size: 100
      display_step: 2
sample: {strategy: maxvol}
# pacemaker's fit (TensorFlow, the image's CUDA build falling back to the CPU), not the budget
# schedule's linear stage (pyace on the CPU, covered by the tests), is what the image must show
train: {schedule: "off"}
EOF
cat >"$template/meta_config.yaml" <<'EOF'
device: auto
threads: 2
EOF

step "pool: the training structures rattled twice (0.02 and 0.15 A), without labels"
t=$(now)
run -i -v "$template:/data" -- python - <<'PY'
import numpy as np
from ase.io import read, write

frames = read("/data/training_set.xyz", ":")
pool = []
for seed, sigma in ((1, 0.02), (2, 0.15)):  # close to the training data / about 120 extrapolative (γ > 1)
    rng = np.random.default_rng(seed)
    for atoms in frames:
        a = atoms.copy()  # no calculator, no results
        a.info = {"config_type": atoms.info.get("config_type", "?")}
        a.positions += rng.normal(0.0, sigma, a.positions.shape)
        pool.append(a)
write("/data/pool.xyz", pool, format="extxyz")
print(f"pool.xyz: {len(pool)} structures")
PY
chmod -R a+rX "$template"
record "pool (docker run)" "$(since "$t")"

json_check() {  # json_check FILE PYTHON-EXPRESSION-ON-d
  python3 - "$1" "$2" <<'PY' || die "$1: check failed: $2"
import json, sys
with open(sys.argv[1]) as f:
    d = json.load(f)
ok = eval(sys.argv[2], {"d": d})
print(f"  {sys.argv[1].split('/')[-1]}: {sys.argv[2]} -> {ok}")
sys.exit(0 if ok else 1)
PY
}

nonempty() { for f in "$@"; do [ -s "$f" ] || die "missing or empty output: $f"; done; }

count_frames() { python3 - "$1" <<'PY'
import sys
n, lines = 0, open(sys.argv[1]).read().splitlines()
i = 0
while i < len(lines):
    if not lines[i].strip():
        break
    k = int(lines[i]); n += 1; i += k + 2
print(n)
PY
}

# The README's commands verbatim (unquoted $(pwd): the mktemp folder has no spaces), plus
# --network none and the run's options; --gpus all where a GPU is present.
# shellcheck disable=SC2046
four_commands() {  # four_commands LABEL [docker run options...]
  local label="$1"; shift
  local dir="$work/$label" t
  mkdir -p "$dir"
  cp -a "$template" "$dir/data"
  if [ "$label" = user ]; then chown -R "$USER_ID" "$dir/data"; fi
  cd "$dir"

  step "$label: train"
  t=$(now)
  docker run --rm --network none "${gpu_flags[@]}" "$@" -v $(pwd)/data:/data pace_worker:latest python /app/src/main.py train --config /data/config.yaml --meta-config /data/meta_config.yaml --dataset /data/training_set.xyz --iteration 1 \
    >"$dir/train.out" 2>"$dir/train.err" || { tail -30 "$dir/train.out" "$dir/train.err" >&2; die "$label: train failed"; }
  record "$label: train" "$(since "$t")"
  cat "$dir/train.out"
  nonempty data/output_potential.yaml data/output_potential.yace data/output_potential.asi data/train_metrics.json data/test_set.xyz
  json_check data/train_metrics.json 'd["iteration"] == 1 and d["fit"]["iterations"] >= 1 and d["test"]["n_structures"] == 25'
  grep -E "ignoring sections of other workers: experiment, dft_params, md_params, al_params" "$dir/train.err" \
    || die "$label: train did not name the pipeline config's other sections once in its log (stderr: $dir/train.err)"
  if [ ${#gpu_flags[@]} -eq 0 ]; then  # CUDA TensorFlow without a GPU: the fit falls back to the CPU
    json_check data/train_metrics.json 'd["device"]["requested"] == "auto" and d["device"]["gpus"] == [] and d["device"]["used"] == "cpu"'
    grep -i -E "no GPU visible|on the CPU" "$dir/train.err" \
      || die "$label: train logged no line saying that it fell back to the CPU (stderr: $dir/train.err)"
  else
    json_check data/train_metrics.json 'd["device"]["used"] == "gpu" and len(d["device"]["gpus"]) >= 1'
  fi

  step "$label: sample"
  t=$(now)
  docker run --rm --network none "${gpu_flags[@]}" "$@" -v $(pwd)/data:/data pace_worker:latest python /app/src/main.py sample --config /data/config.yaml --meta-config /data/meta_config.yaml --candidates /data/pool.xyz --n_samples 50 --output /data/sel.xyz \
    || die "$label: sample failed"
  record "$label: sample" "$(since "$t")"
  nonempty data/sel.xyz data/sel_report.json
  json_check data/sel_report.json 'd["n_requested"] == 50 and d["n_picked"] == 50 and len(d["picks"]) == 50'
  [ "$(count_frames data/sel.xyz)" = 50 ] || die "$label: sel.xyz does not hold the 50 picks"

  step "$label: direct_sample"
  t=$(now)
  docker run --rm --network none "${gpu_flags[@]}" "$@" -v $(pwd)/data:/data pace_worker:latest python /app/src/main.py direct_sample --input /data/pool.xyz --output /data/div.xyz --n_clusters 100 \
    || die "$label: direct_sample failed"
  record "$label: direct_sample" "$(since "$t")"
  nonempty data/div.xyz data/div_report.json
  json_check data/div_report.json 'd["n_clusters_requested"] == 100 and d["n_picked"] >= 100'
  [ "$(count_frames data/div.xyz)" -ge 100 ] || die "$label: div.xyz holds fewer than 100 structures"

  step "$label: validate"
  t=$(now)
  docker run --rm --network none "${gpu_flags[@]}" "$@" -v $(pwd)/data:/data pace_worker:latest python /app/src/main.py validate --potential /data/output_potential.yace --output /data/metrics.json \
    || die "$label: validate failed"
  record "$label: validate" "$(since "$t")"
  nonempty data/metrics.json
  json_check data/metrics.json 'd["test_set"]["n_structures"] == 25 and d["test_set"]["path"] == "/data/test_set.xyz"'

  if [ "$label" = user ]; then
    local foreign
    foreign=$(find data ! -uid "${USER_ID%%:*}" -printf '%u:%g %p\n')
    [ -z "$foreign" ] || { echo "$foreign" >&2; die "user run: files in data/ not owned by uid ${USER_ID%%:*}"; }
    echo "  every file in data/ belongs to uid ${USER_ID%%:*} ($(find data | wc -l) entries)"
  fi
  echo "  outputs: $(cd data && ls | tr '\n' ' ')"
  cd "$repo"
}

four_commands root
four_commands user --user "$USER_ID" --read-only --tmpfs /tmp

# ---------------------------------------------------------------- summary
step "summary"
printf '%s\n' "${summary[@]}"
printf '%-44s %8s s\n' "total" "$(since "$t_total")"
echo "image $IMAGE: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.2f GB", s / 1e9 }')), base $base"
echo "docker_check: OK"
