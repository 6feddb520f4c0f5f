package render

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// renderVersion changes whenever ferry renders the same inputs differently,
// so that no cached bundle from another version is served.
const renderVersion = "render/v2"

// baseKey identifies what a render is, before the facts it read: the app
// (whose name is Helm's default release name), its spec, and the options
// that change output.
func (r *Renderer) baseKey(app *v1alpha1.Application) string {
	h := sha256.New()
	spec, _ := json.Marshal(app.Spec)
	fmt.Fprintf(h, "%s\x00%s/%s\x00%t\x00", renderVersion, app.Namespace, app.Name, r.opts.KustomizeRemoteBases)
	h.Write(spec)
	return hex.EncodeToString(h.Sum(nil))
}

// stillValid reports whether every fact a cached render relied on holds
// now: the git facts against the snapshots of this request, the others
// (chart versions, cluster capabilities) asked again.
func (r *Renderer) stillValid(ctx context.Context, app *v1alpha1.Application, e *cacheEntry, trees []*snapshotTrees) bool {
	if !checkFacts(e.facts, trees) {
		return false
	}
	for k, want := range e.extra {
		got, err := r.extraFact(ctx, app, k)
		if err != nil || got != want {
			return false
		}
	}
	return true
}

const (
	factCapabilities = "capabilities"
	factChartPrefix  = "chart\x00"
)

func chartFactKey(repoURL, name, spec string) string {
	return factChartPrefix + repoURL + "\x00" + name + "\x00" + spec
}

// chartFactValue is what a chart fact holds: the version a spec resolved
// to. A published version is taken as immutable, as Helm and Argo CD take
// it; a digest pin is its own version.
func chartFactValue(ref chartRef) string { return ref.version }

func (r *Renderer) extraFact(ctx context.Context, app *v1alpha1.Application, key string) (string, error) {
	switch {
	case key == factCapabilities:
		caps, err := r.capabilities(ctx, app.Spec.Destination)
		if err != nil {
			return "", err
		}
		return caps.fingerprint(), nil
	case strings.HasPrefix(key, factChartPrefix):
		parts := strings.Split(strings.TrimPrefix(key, factChartPrefix), "\x00")
		if len(parts) != 3 {
			return "", fmt.Errorf("bad chart fact %q", key)
		}
		ref, err := r.charts.resolve(ctx, parts[0], parts[1], parts[2])
		if err != nil {
			return "", err
		}
		return chartFactValue(ref), nil
	}
	return "", fmt.Errorf("unknown fact %q", key)
}
