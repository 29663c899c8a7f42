#!/usr/bin/env bash
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
NAME=${1:-portal-it}
BIN=$("$HERE/build.sh")
export KWOK_WORKDIR=${KWOK_WORKDIR:-/var/tmp/ml-portal-kwok}
DIR="$KWOK_WORKDIR/clusters/$NAME"
# A component a test restarted (tests/k8s/conftest.py: Cluster.down) is not one kwokctl started, and kwokctl
# leaves it running: every process the pid files name is ended too, whoever started it.
PIDS=$(cat "$DIR"/pids/*.pid 2>/dev/null || true)
ours() { [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' < "/proc/$1/cmdline" | grep -q "^$DIR/bin/"; }
"$BIN/kwokctl" delete cluster --name "$NAME" >&2
for pid in $PIDS; do ours "$pid" && kill "$pid" 2>/dev/null || true; done
for _ in $(seq 50); do
  alive=""
  for pid in $PIDS; do ours "$pid" && alive=1 || true; done
  [ -z "$alive" ] && exit 0
  sleep 0.2
done
# An apiserver whose etcd is gone waits out its shutdown: no need to wait with it.
for pid in $PIDS; do ours "$pid" && kill -9 "$pid" 2>/dev/null || true; done
