// Package integration holds ferry's end-to-end tests: the whole pipeline
// against a real kube-apiserver, etcd and kube-controller-manager, an
// embedded NATS server and real git repositories served on 127.0.0.1. The
// helpers it uses live in its subpackages; the control plane is built from
// source by the module in controlplane/.
package integration
