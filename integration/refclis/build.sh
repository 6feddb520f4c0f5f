#!/usr/bin/env bash
# Builds the reference CLIs, helm and kustomize, from source into
# $FERRY_REFCLIS_DIR (default: <repo>/.bin/refclis). render's golden files
# were produced by these binaries and its benchmarks compare ferry with them.
# Each binary is built only when it is missing, so a second run costs nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${FERRY_REFCLIS_DIR:-$here/../../.bin/refclis}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$here"
build() { # name package version
  local name=$1 pkg=$2 ver=$3 flags="-s -w"
  if [ -x "$out/$name" ]; then
    echo "refclis: $name present in $out"
    return
  fi
  case $name in
    helm)
      # As helm's Makefile does: the default Kubernetes version that charts
      # see is the one of the client-go helm is built with (v0.37 -> 1.37).
      local kv major minor
      kv=$(go list -m -f '{{.Version}}' k8s.io/client-go)
      kv=${kv#v}
      major=$(( ${kv%%.*} + 1 ))
      minor=$(echo "$kv" | cut -d. -f2)
      flags="$flags -X helm.sh/helm/v3/internal/version.version=$ver"
      for vpkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
        flags="$flags -X $vpkg.k8sVersionMajor=$major -X $vpkg.k8sVersionMinor=$minor"
      done
      ;;
    kustomize) flags="$flags -X sigs.k8s.io/kustomize/api/provenance.version=$ver" ;;
  esac
  echo "refclis: building $name $ver (first run only; a few minutes on 2 cores)"
  local start=$SECONDS
  go build -trimpath -ldflags "$flags" -o "$out/$name.tmp" "$pkg"
  mv "$out/$name.tmp" "$out/$name"
  echo "refclis: built $name in $((SECONDS - start))s"
}
build helm helm.sh/helm/v3/cmd/helm v3.22.0
build kustomize sigs.k8s.io/kustomize/kustomize/v5 kustomize/v5.8.2
