//go:build tools

// Package controlplane pins the Kubernetes and etcd commands that the
// integration tests run. It is a module of its own so that
// k8s.io/kubernetes never enters ferry's main go.mod.
package controlplane

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
