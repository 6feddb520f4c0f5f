#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager)
# from source into $FERRY_CONTROLPLANE_DIR (default: <repo>/.bin/controlplane).
# Each binary is built only when it is missing, so a second run costs nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${FERRY_CONTROLPLANE_DIR:-$here/../../.bin/controlplane}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$here"
ver=v1.37.2
base=k8s.io/component-base/version
ldflags="-s -w -X $base.gitVersion=$ver -X $base.gitMajor=1 -X $base.gitMinor=37 -X $base.gitTreeState=clean"
build() { # name package [ldflags]
  local name=$1 pkg=$2 flags=${3:-"-s -w"}
  if [ -x "$out/$name" ]; then
    echo "controlplane: $name present in $out"
    return
  fi
  echo "controlplane: building $name (first run only; a few minutes on 2 cores)"
  local start=$SECONDS
  go build -trimpath -ldflags "$flags" -o "$out/$name.tmp" "$pkg"
  mv "$out/$name.tmp" "$out/$name"
  echo "controlplane: built $name in $((SECONDS - start))s"
}
build etcd go.etcd.io/etcd/server/v3
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$ldflags"
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$ldflags"
