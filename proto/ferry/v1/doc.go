// Package ferryv1 holds the protobuf messages that cross NATS between ferry's
// roles: push events, sync and apply requests, rendered bundles and sync
// results. The Go code is generated from ferry.proto by proto/generate.sh; it
// imports nothing of NATS or Kubernetes.
package ferryv1
