#!/usr/bin/env bash
# Builds the Kubernetes test control plane (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, etcd, kwok, kwokctl) from the Go module proxy at pinned versions, and caches the binaries
# outside the repo keyed by version. A second run with the same versions returns at once.
set -euo pipefail
# Kueue as well, in its own cache entry (tests/k8s/test_kueue.py runs it against this control plane).
# A failure there leaves the control plane usable; the Kueue tests then say why (tests/k8s/kueue_env.py).
"$(cd "$(dirname "$0")" && pwd)/build-kueue.sh" >/dev/null || echo ">> Kueue was not built (see above)" >&2
K8S=${K8S_VERSION:-1.35.4}
ETCD=${ETCD_VERSION:-3.6.10}
KWOK=${KWOK_VERSION:-0.8.0}
. "$(dirname "$0")/cache.sh"
cache_dir "k8s-$K8S-etcd-$ETCD-kwok-$KWOK"
BUILD=${PORTAL_TESTENV_BUILD:-$CACHE_ROOT/build}
mkdir -p "$BUILD"

echo ">> kwok + kwokctl v$KWOK" >&2
GOBIN="$OUT" go install "sigs.k8s.io/kwok/cmd/kwok@v$KWOK" "sigs.k8s.io/kwok/cmd/kwokctl@v$KWOK"

echo ">> etcd v$ETCD" >&2
E="$BUILD/etcd-wrap"; rm -rf "$E"; mkdir -p "$E"; cd "$E"
printf 'module local/etcdwrap\n\ngo 1.26\n' > go.mod
go get "go.etcd.io/etcd/server/v3@v$ETCD"
go build -mod=mod -trimpath -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3

echo ">> kubernetes v$K8S" >&2
STAGING="v0.${K8S#1.}"
W="$BUILD/k8s-wrap"; rm -rf "$W"; mkdir -p "$W"; cd "$W"
printf 'module local/k8swrap\n\ngo 1.26\n' > go.mod
GOMOD=$(go mod download -json "k8s.io/kubernetes@v$K8S" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/.*#\1#p' "$GOMOD"); do
  go mod edit "-replace=$m=$m@$STAGING"
done
grep -h '^godebug' "$GOMOD" >> go.mod || true
go get "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S" "k8s.io/kubernetes/cmd/kube-controller-manager@v$K8S" \
       "k8s.io/kubernetes/cmd/kube-scheduler@v$K8S" "k8s.io/kubernetes/cmd/kubectl@v$K8S"
P=k8s.io/component-base/version
LDF="-s -w -X $P.gitVersion=v$K8S -X $P.gitMajor=1 -X $P.gitMinor=$(echo "$K8S" | cut -d. -f2) -X $P.gitTreeState=clean"
go build -mod=mod -p 2 -trimpath -ldflags "$LDF" -o "$OUT/" k8s.io/kubernetes/cmd/kube-apiserver \
   k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl

"$OUT/etcd" --version >&2 && "$OUT/kube-apiserver" --version >&2 && "$OUT/kwok" --version >&2
touch "$OUT/.complete"
echo "$OUT"
