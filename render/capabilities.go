package render

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// Capabilities is what Helm templates see of the target cluster as
// .Capabilities: its version and the API versions it serves.
type Capabilities struct {
	// KubeVersion is the server's version, such as "v1.37.2".
	KubeVersion string
	// APIVersions lists group/version ("apps/v1") and
	// group/version/kind ("apps/v1/Deployment") entries, as Helm's
	// discovery-based capabilities do.
	APIVersions []string
}

// fingerprint identifies the capabilities in the render cache key.
func (c *Capabilities) fingerprint() string {
	if c == nil {
		return "helm-defaults"
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00", c.KubeVersion)
	vs := slices.Clone(c.APIVersions)
	slices.Sort(vs)
	for _, v := range vs {
		fmt.Fprintf(h, "%s\x00", v)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// CapabilitiesSource gives the capabilities of the cluster an app deploys to.
// cmd fills it from the cluster's discovery API; without one, Helm renders
// with its built-in defaults, as `helm template` does.
type CapabilitiesSource interface {
	Capabilities(ctx context.Context, dest v1alpha1.Destination) (*Capabilities, error)
}

// CapabilitiesFunc adapts a function to CapabilitiesSource.
type CapabilitiesFunc func(ctx context.Context, dest v1alpha1.Destination) (*Capabilities, error)

// Capabilities calls f.
func (f CapabilitiesFunc) Capabilities(ctx context.Context, dest v1alpha1.Destination) (*Capabilities, error) {
	return f(ctx, dest)
}

// CachedCapabilities keeps the answers of another source for a while, per
// destination server, so that discovery runs once per TTL and not once per
// render. A failed lookup is not kept.
type CachedCapabilities struct {
	src CapabilitiesSource
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries map[string]cachedCaps
}

type cachedCaps struct {
	caps *Capabilities
	at   time.Time
}

var (
	_ CapabilitiesSource = CapabilitiesFunc(nil)
	_ CapabilitiesSource = (*CachedCapabilities)(nil)
)

// NewCachedCapabilities caches src's answers for ttl.
func NewCachedCapabilities(src CapabilitiesSource, ttl time.Duration) *CachedCapabilities {
	return &CachedCapabilities{src: src, ttl: ttl, now: time.Now, entries: map[string]cachedCaps{}}
}

// Capabilities returns the cached answer for dest's server, asking src when
// it is missing or older than the TTL.
func (c *CachedCapabilities) Capabilities(ctx context.Context, dest v1alpha1.Destination) (*Capabilities, error) {
	key := dest.Server + "\x00" + dest.Name
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if ok && c.now().Sub(e.at) < c.ttl {
		return e.caps, nil
	}
	caps, err := c.src.Capabilities(ctx, dest)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.entries[key] = cachedCaps{caps: caps, at: c.now()}
	c.mu.Unlock()
	return caps, nil
}

// defaultKubeVersion is the Kubernetes version charts see when no cluster
// capabilities are given: the one of the client-go ferry is built with
// (k8s.io/client-go v0.37.x is Kubernetes 1.37). An official helm binary
// reports the same for itself, since helm's Makefile sets it from its own
// client-go; Helm's library alone would say v1.20.0. A test checks it
// against go.mod.
const defaultKubeVersion = "v1.37.0"
