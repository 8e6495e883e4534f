#!/usr/bin/env bash
# A throw-away single-node SLURM cluster for tests/test_slurm.py (Debian, as root, no systemd).
#
#   tests/slurm/cluster.sh up RUN_DIR     install the Debian packages if missing, write a
#                                         slurm.conf under RUN_DIR, start munged, slurmctld and
#                                         slurmd, wait until the node is idle
#   tests/slurm/cluster.sh down RUN_DIR   stop the daemons started by `up`, by their pid files
#
# Everything the cluster writes (config, munge key and socket, state, logs, pid files) lives in
# RUN_DIR, and it listens on free ports. Its only trace outside RUN_DIR, for as long as it runs,
# is /etc/slurm/slurm.conf, a link to RUN_DIR/slurm.conf: Snakemake's job steps clear SLURM_*
# variables, SLURM_CONF included, before calling srun, so srun must find the default path.
# A machine with its own /etc/slurm/slurm.conf is left alone and the cluster does not start.
# It has no accounting daemon: sacct does not work, so status queries use squeue
# (snakemake --slurm-status-command squeue) and finished jobs stay visible for MinJobAge.
set -euo pipefail

action=${1:?usage: cluster.sh up|down RUN_DIR}
run=$(realpath -m "${2:?usage: cluster.sh up|down RUN_DIR}")
node=$(hostname -s)

system_conf=/etc/slurm/slurm.conf

stop_daemons() {
  # Reverse start order; each by the pid it wrote, never by name.
  for daemon in slurmd slurmctld munged; do
    pidfile="$run/$daemon.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
  if [ "$(readlink "$system_conf")" = "$run/slurm.conf" ]; then rm -f "$system_conf"; fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if [ "$action" = down ]; then
  stop_daemons
  exit 0
fi
[ "$action" = up ] || { echo "unknown action $action (up or down)" >&2; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "installing munge and SLURM (Debian packages)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null
fi
getent hosts "$node" >/dev/null || echo "127.0.0.1 $node" >>/etc/hosts
if [ -e "$system_conf" ] || [ -L "$system_conf" ]; then
  target=$(readlink "$system_conf" || true)
  if [ -n "$target" ] && [[ $target == */fairfer-slurm-*/slurm.conf ]] && [ ! -e "$target" ]; then
    rm -f "$system_conf" # left behind by a test cluster that was killed
  else
    echo "$system_conf exists (${target:-a SLURM installation}); not starting a test cluster" >&2
    exit 1
  fi
fi

mkdir -p "$run"/{state,spool,munge}
chmod 755 "$run"
chown munge:munge "$run/munge"
chmod 755 "$run/munge"
[ -f "$run/munge/munge.key" ] || mungekey --create --keyfile="$run/munge/munge.key"
chown munge:munge "$run/munge/munge.key"
chmod 600 "$run/munge/munge.key"

cpus=$(nproc)
# Leave 2 GiB to the system; jobs ask for realistic memory and are scheduled against this.
memory_mb=$(($(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 2048))

cat >"$run/slurm.conf" <<CONF
ClusterName=fairfer-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$run/munge/munge.socket
StateSaveLocation=$run/state
SlurmdSpoolDir=$run/spool
SlurmctldPidFile=$run/slurmctld.pid
SlurmdPidFile=$run/slurmd.pid
SlurmctldLogFile=$run/slurmctld.log
SlurmdLogFile=$run/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerParameters=sched_interval=2
# Without a default, a job that asks no memory would take the whole node.
DefMemPerCPU=500
# No accounting: squeue reports a finished job only this long (seconds).
MinJobAge=3600
# One stand-in GPU (/dev/null as its device file) so jobs asking --gpus are scheduled as on
# a GPU node; they run on the CPU.
GresTypes=gpu
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb Gres=gpu:1 State=UNKNOWN
# The partition names of workflow/profiles/slurm, both on the one node.
PartitionName=cpu Nodes=$node Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$node MaxTime=INFINITE State=UP
CONF
echo "NodeName=$node Name=gpu File=/dev/null" >"$run/gres.conf"
export SLURM_CONF="$run/slurm.conf"
mkdir -p "$(dirname "$system_conf")"
ln -s "$run/slurm.conf" "$system_conf"

trap 'stop_daemons' ERR
runuser -u munge -- munged --socket="$run/munge/munge.socket" \
  --key-file="$run/munge/munge.key" --pid-file="$run/munge/munged.pid" \
  --log-file="$run/munge/munged.log" --seed-file="$run/munge/munged.seed"
cp "$run/munge/munged.pid" "$run/munged.pid"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF" -N "$node"

for _ in $(seq 60); do scontrol ping >/dev/null 2>&1 && break; sleep 0.5; done
for _ in $(seq 120); do
  state=$(sinfo -h -N -o %T 2>/dev/null | head -1)
  case "$state" in idle) break ;; inval | drain* | down*) break ;; esac
  sleep 0.5
done
if [ "$state" != idle ]; then
  echo "SLURM node did not become idle (state: ${state:-none}); logs in $run" >&2
  tail -n 20 "$run"/slurmctld.log "$run"/slurmd.log >&2 || true
  stop_daemons
  exit 1
fi
echo "SLURM cluster up: SLURM_CONF=$SLURM_CONF" >&2
