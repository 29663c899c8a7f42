#!/usr/bin/env bash
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
NAME=${1:-portal-it}
BIN=$("$HERE/build.sh")
export KWOK_WORKDIR=${KWOK_WORKDIR:-/var/tmp/ml-portal-kwok}
"$BIN/kwokctl" delete cluster --name "$NAME" >&2
