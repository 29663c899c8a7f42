#!/usr/bin/env bash
# Builds Kueue (the queueing controller, run out of cluster against the test apiserver) from the Go module
# proxy at a pinned version and caches the binary outside the repo keyed by version, like build.sh does for
# the control plane. A second run with the same versions returns at once. Prints the cache directory,
# which also holds crds/ (the module's config/components/crd/bases, applied before Kueue starts).
set -euo pipefail
KUEUE=${KUEUE_VERSION:-0.19.2}
. "$(dirname "$0")/cache.sh"
cache_dir "kueue-$KUEUE"
echo ">> kueue v$KUEUE (about 15 minutes cold on 2 cores)" >&2
# Kueue's go.mod has no replace directives, so go install works; -p 2 keeps the build from starving a CI box.
GOBIN="$OUT" go install -p 2 -trimpath -ldflags "-s -w" "sigs.k8s.io/kueue/cmd/kueue@v$KUEUE"
MOD=$(go env GOMODCACHE)/sigs.k8s.io/kueue@v$KUEUE
rm -rf "$OUT/crds"; mkdir -p "$OUT/crds"
cp "$MOD"/config/components/crd/bases/*.yaml "$OUT/crds/"
chmod -R u+w "$OUT/crds"
"$OUT/kueue" --help >/dev/null 2>&1 || true
touch "$OUT/.complete"
echo "$OUT"
