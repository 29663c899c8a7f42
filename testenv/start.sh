#!/usr/bin/env bash
# Starts the Kubernetes test control plane (real kube-apiserver, etcd, controller-manager, scheduler;
# nodes and pods simulated by KWOK) on 127.0.0.1 and prints the kubeconfig path.
#   testenv/start.sh [NAME]       (default NAME: portal-it)     stop: testenv/stop.sh [NAME]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
NAME=${1:-portal-it}
BIN=$("$HERE/build.sh")
KWOK_VERSION=${KWOK_VERSION:-0.8.0}
KW=$(go env GOMODCACHE)/sigs.k8s.io/kwok@v$KWOK_VERSION
export KWOK_WORKDIR=${KWOK_WORKDIR:-/var/tmp/ml-portal-kwok}
export NO_PROXY=localhost,127.0.0.1
KC="$KWOK_WORKDIR/clusters/$NAME/kubeconfig.yaml"
# A cluster left from an earlier run whose processes are gone (machine restarted, session ended) is removed.
if [ -f "$KC" ] && ! "$BIN/kubectl" --kubeconfig "$KC" --request-timeout=5s get --raw /readyz >/dev/null 2>&1; then
  echo "cluster $NAME is not answering: recreating it" >&2
  "$BIN/kwokctl" delete cluster --name "$NAME" >&2 || rm -rf "$KWOK_WORKDIR/clusters/$NAME"
fi
if [ ! -f "$KC" ]; then
  "$BIN/kwokctl" create cluster --name "$NAME" --runtime binary \
    --kube-apiserver-binary "$BIN/kube-apiserver" --kube-controller-manager-binary "$BIN/kube-controller-manager" \
    --kube-scheduler-binary "$BIN/kube-scheduler" --etcd-binary "$BIN/etcd" --kwok-controller-binary "$BIN/kwok" \
    --enable-crds ClusterLogs,Logs --disable-qps-limits --kubeconfig '' --wait 3m \
    --extra-args kube-apiserver=etcd-compaction-interval=20s \
    --extra-args kube-apiserver=watch-cache=false \
    --extra-args kube-controller-manager=leader-elect=false --extra-args kube-scheduler=leader-elect=false \
    -c "$KW/kustomize/stage/node/fast" -c "$KW/kustomize/stage/node/heartbeat-with-lease" \
    -c "$KW/kustomize/stage/pod/fast/pod-ready.yaml" \
    -c "$HERE/kwok-pod-stages.yaml" -c "$HERE/kwokctl.yaml" >&2
fi
KUBECONFIG_PATH="$KWOK_WORKDIR/clusters/$NAME/kubeconfig.yaml"
# Two fake GPU nodes with 8 GPUs each (kept if they exist).
"$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" apply -f "$HERE/gpu-nodes.yaml" >&2
# OpenShift's Route API, so the openshift overlay of manifests/ is checked by this apiserver too.
"$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" apply -f "$HERE/crds/" >&2
"$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" wait --for=condition=Established --timeout=60s crd --all >&2
# Pods in the default namespace serve a recorded run of the example script as their log, so a portal
# pointed at this cluster shows a real log and loss curve for the jobs it submits there.
LOGS=${PORTAL_TESTENV_LOGS:-/var/tmp/ml-portal-kwok-logs}
mkdir -p "$LOGS"
# Its model.json and metrics.json go beside the log, not into whatever folder this was started from.
PORTAL_OUTPUT_DIR="$LOGS/example-output" python3 "$HERE/../examples/train_example.py" --epochs 10 \
  --seconds-per-epoch 0 --samples 500 2>&1 \
  | python3 -c 'import sys, datetime as d
t = d.datetime.now(d.timezone.utc)
for i, line in enumerate(sys.stdin):
    ts = (t + d.timedelta(milliseconds=10 * i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    sys.stdout.write(f"{ts} stdout F {line}")' > "$LOGS/default.log"
"$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" apply -f - >&2 <<YAML
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata: {name: logs-default}
spec:
  selector: {matchNamespaces: [default]}
  logs:
  - containers: [main]
    logsFile: $LOGS/default.log
YAML
echo "$KUBECONFIG_PATH"
