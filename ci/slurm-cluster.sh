#!/usr/bin/env bash
# A one-node Slurm cluster for tests (Debian's munge, slurmctld, slurmd): everything under DIR, its own
# ports, and eight GPU GRES backed by character devices (major 195, as /dev/nvidiaN), so Slurm exports
# CUDA_VISIBLE_DEVICES and ROCR_VISIBLE_DEVICES per job as on a real GPU node.
#   usage: ci/slurm-cluster.sh start DIR | stop DIR
# start prints the SLURM_CONF to export; stop cancels every job, then stops the daemons.
# SLURM_CTLD_PORT / SLURMD_PORT (default 16817 / 16818) move the ports.
set -euo pipefail

usage() {
  echo "usage: $0 start DIR | $0 stop DIR" >&2
  exit 2
}

[ $# -eq 2 ] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
conf="$dir/slurm.conf"
host=$(hostname -s)
gpus=8

wait_for() {  # wait_for SECONDS COMMAND...: poll until the command succeeds
  local tries=$(($1 * 10))
  shift
  for _ in $(seq 1 "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

stop_pid_file() {
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}

fail() {
  echo "error: $1; logs in $dir:" >&2
  tail -n 20 "$dir"/*.log >&2 || true
  "$0" stop "$dir" >/dev/null 2>&1 || true
  exit 1
}

case "$action" in
  start)
    for tool in munged slurmctld slurmd sbatch; do
      command -v "$tool" >/dev/null || { echo "error: $tool not found (apt-get install munge slurmctld slurmd)" >&2; exit 1; }
    done
    mkdir -p "$dir/state" "$dir/spool" "$dir/dev"
    for i in $(seq 0 $((gpus - 1))); do
      [ -c "$dir/dev/nvidia$i" ] || mknod "$dir/dev/nvidia$i" c 195 "$i"
    done
    [ -f "$dir/munge.key" ] || { head -c 1024 /dev/urandom >"$dir/munge.key"; chmod 600 "$dir/munge.key"; }
    munged --force --key-file "$dir/munge.key" --socket "$dir/munge.sock" --pid-file "$dir/munged.pid" \
      --log-file "$dir/munged.log" --seed-file "$dir/munged.seed"
    cat >"$conf" <<CONF
ClusterName=gsm8k-ci
SlurmctldHost=$host
SlurmctldPort=${SLURM_CTLD_PORT:-16817}
SlurmdPort=${SLURMD_PORT:-16818}
AuthType=auth/munge
AuthInfo=socket=$dir/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
ReturnToService=2
MpiDefault=none
MinJobAge=600
KillWait=5
# The node declares more CPUs than it has so that three GPU jobs can run at once on two cores.
SlurmdParameters=config_overrides
NodeName=$host CPUs=8 RealMemory=4000 Gres=gpu:$gpus State=UNKNOWN
PartitionName=ci Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    cat >"$dir/gres.conf" <<CONF
AutoDetect=off
NodeName=$host Name=gpu File=$dir/dev/nvidia[0-$((gpus - 1))]
CONF
    export SLURM_CONF="$conf"
    slurmctld -f "$conf" || fail "slurmctld did not start"
    wait_for 20 scontrol ping || fail "slurmctld does not answer"
    slurmd -f "$conf" || fail "slurmd did not start"
    idle() { sinfo -h -N -o '%t %G' | grep -q "^idle gpu:$gpus"; }
    if ! wait_for 30 idle; then
      scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
      wait_for 10 idle || fail "node $host is not idle with gpu:$gpus"
    fi
    echo "$conf"
    ;;
  stop)
    if [ -f "$conf" ] && [ -f "$dir/slurmctld.pid" ]; then
      # Jobs first, while slurmd can still kill their steps.
      export SLURM_CONF="$conf"
      scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
      queue_empty() { [ -z "$(squeue -h -o %i 2>/dev/null)" ]; }
      wait_for 20 queue_empty || true
    fi
    stop_pid_file "$dir/slurmd.pid"
    stop_pid_file "$dir/slurmctld.pid"
    stop_pid_file "$dir/munged.pid"
    ;;
  *) usage ;;
esac
