# Sourced by the build scripts: `cache_dir KEY` sets OUT to the cache folder of a set of pinned versions built
# by this Go, printing it and exiting when an earlier build there completed (a second run returns at once);
# else it creates the folder and sets the build environment.
CACHE_ROOT=${PORTAL_TESTENV_CACHE:-/var/cache/ml-portal-testenv}
cache_dir() {
  OUT="$CACHE_ROOT/$1-$(go env GOVERSION)"
  if [ -f "$OUT/.complete" ]; then echo "$OUT"; exit 0; fi
  mkdir -p "$OUT"
  export CGO_ENABLED=0 GOFLAGS=${GOFLAGS:-} GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
}
