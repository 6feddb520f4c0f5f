package render

import (
	"time"
)

// Options bounds a render and says where its inputs come from.
type Options struct {
	// Timeout bounds one app's render, fetch included.
	Timeout time.Duration
	// MaxInputBytes caps the bytes of source files one render reads, and the
	// size of one downloaded chart archive.
	MaxInputBytes int64
	// MaxOutputBytes caps the bytes of manifests one render produces.
	MaxOutputBytes int64
	// MaxObjects caps the objects one app may render.
	MaxObjects int
	// CacheEntries bounds the render cache.
	CacheEntries int

	// ChartCacheDir keeps the charts downloaded from Helm repositories and
	// OCI registries. Empty means a .charts folder in the git cache.
	ChartCacheDir string
	// ChartIndexTTL is how long a Helm repository's index is trusted before
	// a version range is resolved against a fresh one.
	ChartIndexTTL time.Duration
	// Credentials authenticates to Helm repositories and OCI registries.
	// Git remotes get theirs through the GitCache (WithCredentials).
	Credentials Credentials
	// Capabilities gives Helm the target cluster's version and APIs; nil
	// renders with Helm's defaults, as `helm template` does.
	Capabilities CapabilitiesSource
	// KustomizeRemoteBases lets kustomizations use remote bases and files,
	// fetched by kustomize itself on every render. Off by default: only
	// what is in git is deployed.
	KustomizeRemoteBases bool
	// AllowedHosts limits the chart repositories and registries, and the
	// hosts of remote Kustomize bases, to hosts matching one of these
	// globs: "github.com", "*.example.com" ("*" matches any run of
	// characters, dots included), "127.0.0.1:8080" or "127.0.0.1:*". A glob
	// without a port matches any port. Anything else is refused before a
	// request leaves. Empty allows every host. Git remotes are limited by
	// the GitCache (WithAllowedHosts); give both the same list.
	AllowedHosts []string
	// ApplicationNamespace is ferry's namespace: Application documents a
	// render finds (ferry's or Argo CD's) become ferry Applications there,
	// so that app of apps works. Empty leaves them as Git has them.
	ApplicationNamespace string
	// Processes, when set, renders cache misses in child processes with a
	// memory limit and a watchdog (see ProcessOptions). Nil renders in
	// this process.
	Processes *ProcessOptions
}

// DefaultOptions returns the limits of `ferry serve`.
func DefaultOptions() Options {
	return Options{
		Timeout:        90 * time.Second,
		MaxInputBytes:  64 << 20,
		MaxOutputBytes: 64 << 20,
		MaxObjects:     10000,
		CacheEntries:   4096,
		ChartIndexTTL:  5 * time.Minute,
	}
}
