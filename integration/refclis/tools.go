//go:build tools

// Package refclis pins the reference CLIs, helm and kustomize, that render's
// golden files and benchmarks compare ferry against. It is a module of its
// own so that the CLIs' command-line dependencies never enter ferry's main
// go.mod; the versions are the ones ferry's go.mod uses as libraries.
package refclis

import (
	_ "helm.sh/helm/v3/cmd/helm"
	_ "sigs.k8s.io/kustomize/kustomize/v5"
)
