// Package render turns an Application's sources at one exact commit into the
// Kubernetes objects to apply.
//
// It keeps one bare clone per repository, shared by every render, and reads
// files straight from git objects: there is no per-app checkout and no copy
// of a repository per render. A render whose inputs (the app spec and the
// git trees of the paths it reads) have not changed is served from a cache.
//
// render is a library. It knows nothing of NATS and nothing of the cluster
// beyond the Application types; package worker runs it behind a consumer.
package render
