// Package demo runs ferry's main job end to end on embedded defaults: a
// control plane built from source, a git repository laid out like the seed
// served on 127.0.0.1, and `ferry serve` with its embedded NATS. It commits
// an image-tag bump, sends the signed push webhook itself and reports what
// reached the cluster. `go tool task demo` runs it; its test runs it too.
package demo
