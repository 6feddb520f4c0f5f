// Package testenv starts a real Kubernetes control plane for ferry's tests:
// etcd and kube-apiserver through controller-runtime's envtest, plus
// kube-controller-manager, so that Deployments and other workloads get real
// status from their controllers.
//
// The binaries are built from source (see integration/controlplane/build.sh)
// into BinDir the first time they are needed; EnsureBinaries does that under
// a file lock, so test binaries running in parallel build them only once.
//
// A test that cannot get its control plane fails; StartT never skips.
//
// The package does not run a scheduler or a kubelet: Pods stay Pending, and a
// Deployment only becomes Available when it asks for zero replicas. It does not
// download anything, and it does not share one control plane between test
// binaries; each Start runs its own processes on free loopback ports.
package testenv
