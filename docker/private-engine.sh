#!/usr/bin/env bash
# A private Docker engine for tests: its own socket, exec root and no networking of its own
# (containers use the host network), so it touches nothing of a system engine.
#   usage: docker/private-engine.sh start DIR [DATA_ROOT] | stop DIR
# start prints the DOCKER_HOST to export. DATA_ROOT (default DIR/data) keeps images between runs.
set -euo pipefail

usage() {
  echo "usage: $0 start DIR [DATA_ROOT] | $0 stop DIR" >&2
  exit 2
}

[ $# -ge 2 ] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
socket="$dir/docker.sock"

case "$action" in
  start)
    data_root=${3:-$dir/data}
    mkdir -p "$data_root" "$dir/exec"
    command -v dockerd >/dev/null || { echo "error: dockerd not found (apt-get install docker.io)" >&2; exit 1; }
    dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 \
      --data-root "$data_root" --exec-root "$dir/exec" --pidfile "$dir/docker.pid" \
      -H "unix://$socket" >"$dir/dockerd.log" 2>&1 &
    for _ in $(seq 1 100); do
      if DOCKER_HOST="unix://$socket" docker version >/dev/null 2>&1; then
        echo "unix://$socket"
        exit 0
      fi
      sleep 0.1
    done
    echo "error: dockerd did not answer on $socket; its log:" >&2
    tail -n 20 "$dir/dockerd.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$dir/docker.pid" ]; then
      pid=$(cat "$dir/docker.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    # dockerd leaves its network namespace mounted under the exec root.
    if mountpoint -q "$dir/exec/netns/default" 2>/dev/null; then umount "$dir/exec/netns/default"; fi
    ;;
  *) usage ;;
esac
