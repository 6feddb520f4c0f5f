// Package render turns an Application's sources at one exact commit into the
// Kubernetes objects to apply, as Argo CD would: plain directories of YAML
// and JSON, Kustomize (sigs.k8s.io/kustomize/api, `kustomize build`
// semantics) and Helm (helm.sh/helm/v3, `helm template` semantics, with
// charts from git, Helm repositories and OCI registries), one source or
// several.
//
// It keeps one bare clone per repository, shared by every render, and reads
// files straight from git objects: there is no per-app checkout and no copy
// of a repository per render. Kustomize sees the repository through a
// read-only file system over those objects (kustomizeFS) and Helm gets the
// chart's files from them, so a render reads only the files it uses.
//
// Every path is confined to its repository: ".." cannot climb out, and
// symbolic links are followed only while they stay inside. Kustomize
// plugins, exec functions and Helm inflation are off, remote kustomize
// bases are off unless Options.KustomizeRemoteBases, and a chart's
// templates cannot name files outside the chart. Renders have a timeout
// and caps on input bytes, output bytes and objects.
//
// Nothing is fetched that the operator did not allow (fetchpolicy.go):
// with remote bases off, no field of a kustomization, nor of a generator
// or transformer configuration, may name a URL, since kustomize would
// fetch it itself; a repository URL carrying credentials is refused;
// credentials go only to their own scheme, host and path, and never over
// plain http unless their Secret says insecure; and, with
// Options.AllowedHosts and WithAllowedHosts, git and chart hosts are
// limited to a list of globs.
//
// Every read is recorded as a fact about the commit (this blob, this
// listing, this path missing). A later render of the same app spec whose
// facts all still hold, on the new commit, with the same chart versions
// and cluster capabilities, is served from the render cache: a push that
// does not touch an app's inputs, wherever they are in the repository,
// renders nothing.
//
// Helm hooks are kept and marked for the apply worker with ferry.dev/hook,
// ferry.dev/hook-weight and ferry.dev/hook-delete-policy.
//
// Application documents in a render (ferry's, or Argo CD's argoproj.io
// ones) become ferry Applications in ferry's namespace, so app of apps
// works and no argoproj.io object reaches the cluster.
//
// Role is the render role, run by the queue behind worker.Renderer: it
// drops a push older than the commit an app runs (newest wins) and hands
// every failure to the apply role's Lifecycle, which records it.
//
// render is a library. It knows nothing of NATS, and of the cluster only
// what it is given: the Application types, repository credentials
// (Credentials) and the cluster's capabilities (CapabilitiesSource).
// package worker runs it behind a consumer.
package render
