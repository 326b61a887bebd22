#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (localhost, loopback only), for the tests and CI.
#
#   eval "$(bash scripts/slurm_local.sh start)"   # install if missing, start, export SLURM_CONF
#   bash scripts/slurm_local.sh status            # controller, node and queue
#   bash scripts/slurm_local.sh stop              # cancel its jobs, stop what `start` started
#
# `start` installs Debian's slurm-wlm and munge with apt-get when they are missing (root only),
# starts munged when no munge daemon answers, writes slurm.conf for one node "localhost"
# (127.0.0.1) with this machine's CPUs and memory as `slurmd -C` reports them, and starts
# slurmctld and slurmd. It is idempotent: a second `start` leaves running daemons alone. Its only
# stdout line is `export SLURM_CONF=...`; everything else goes to stderr.
#
# Nothing outside the state folder is written (not /etc/slurm): clients find this cluster through
# SLURM_CONF. The state folder is $PACE_WORKER_SLURM_DIR (default /tmp/pace-worker-slurm); the
# tests look there when SLURM_CONF is not set. Jobs inherit slurmd's niceness (slurm.conf
# PropagatePrioProcess=0, the default): slurmd runs at `nice -n $PACE_WORKER_SLURM_NICE`
# (default 19) so that test jobs never compete with interactive work on a shared machine.
set -euo pipefail

dir="${PACE_WORKER_SLURM_DIR:-/tmp/pace-worker-slurm}"
nice_level="${PACE_WORKER_SLURM_NICE:-19}"
conf="$dir/slurm.conf"

say() { echo "slurm_local: $*" >&2; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
  local missing=()
  for tool in slurmctld slurmd sbatch munged; do
    command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 \
      || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    say "Slurm is not installed (${missing[*]} missing) and only root can install it: apt-get install slurm-wlm munge"
    exit 2
  fi
  say "installing slurm-wlm and munge (${missing[*]} missing)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends slurm-wlm munge >&2 \
    || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends slurm-wlm munge >&2; }
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  munge_works && return 0
  [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key && chown munge:munge /etc/munge/munge.key; }
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  touch "$dir/started-munged"
  for _ in $(seq 50); do munge_works && return 0; sleep 0.1; done
  say "munged did not answer; see /var/log/munge/munged.log"
  exit 1
}

write_conf() {
  # the node line as slurmd detects it, named localhost (the daemons and clients use 127.0.0.1 only)
  local node
  node="$(/usr/sbin/slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]*/NodeName=localhost NodeAddr=127.0.0.1/')"
  cat > "$conf.new" <<EOF
# one-node cluster of scripts/slurm_local.sh (pace-worker tests); written by it, rewritten on start
ClusterName=pace-worker-local
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=${PACE_WORKER_SLURMCTLD_PORT:-6817}
SlurmdPort=${PACE_WORKER_SLURMD_PORT:-6818}
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
# no cgroups in containers: processes are tracked by parentage, no binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
MinJobAge=30
$node State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  if cmp -s "$conf.new" "$conf"; then rm "$conf.new"; return 1; fi
  mv "$conf.new" "$conf"
  return 0
}

wait_for_node() {
  for _ in $(seq 120); do
    state="$(SLURM_CONF="$conf" sinfo -h -n localhost -o %T 2>/dev/null || true)"
    case "$state" in
      idle*|mixed*|allocated*) return 0 ;;
      down*|drain*) SLURM_CONF="$conf" scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  say "the node did not come up (state '${state:-none}'); see $dir/slurmctld.log and $dir/slurmd.log"
  exit 1
}

start() {
  install_packages
  export PATH="$PATH:/usr/sbin:/sbin"
  [ "$(id -u)" = 0 ] || { say "start needs root (it runs slurmctld and slurmd as root)"; exit 2; }
  mkdir -p "$dir/state" "$dir/spool"
  start_munge
  if write_conf; then
    # a changed configuration (another machine size, ports): restart our daemons with it
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
      alive "$pidfile" && { kill "$(cat "$pidfile")"; sleep 1; }
    done
  fi
  if ! alive "$dir/slurmctld.pid"; then
    slurmctld -f "$conf" -i
    say "slurmctld started (log $dir/slurmctld.log)"
  fi
  if ! alive "$dir/slurmd.pid"; then
    nice -n "$nice_level" slurmd -f "$conf" -N localhost
    say "slurmd started at nice $nice_level (log $dir/slurmd.log)"
  fi
  wait_for_node
  say "one-node cluster up: $(SLURM_CONF="$conf" sinfo -h -o '%P %D node, %c CPUs, %m MB')"
  echo "export SLURM_CONF=$conf"
}

stop() {
  export PATH="$PATH:/usr/sbin:/sbin"
  if alive "$dir/slurmctld.pid"; then
    jobs="$(SLURM_CONF="$conf" squeue -h -o %i 2>/dev/null || true)"
    if [ -n "$jobs" ]; then
      say "cancelling jobs: $(echo $jobs)"
      SLURM_CONF="$conf" scancel $jobs || true
      for _ in $(seq 40); do [ -z "$(SLURM_CONF="$conf" squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
    fi
  fi
  for name in slurmd slurmctld; do
    if alive "$dir/$name.pid"; then
      pid="$(cat "$dir/$name.pid")"
      kill "$pid"
      for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      say "$name stopped"
    fi
  done
  if [ -f "$dir/started-munged" ]; then
    pidfile=/run/munge/munged.pid
    alive "$pidfile" && kill "$(cat "$pidfile")" && say "munged stopped"
    rm -f "$dir/started-munged"
  fi
}

status() {
  export PATH="$PATH:/usr/sbin:/sbin"
  for name in slurmctld slurmd; do
    if alive "$dir/$name.pid"; then say "$name running (pid $(cat "$dir/$name.pid"))"; else say "$name not running"; fi
  done
  SLURM_CONF="$conf" scontrol ping >&2 || true
  SLURM_CONF="$conf" sinfo >&2 || true
  SLURM_CONF="$conf" squeue >&2 || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status (see the comment at the top)" >&2; exit 2 ;;
esac
