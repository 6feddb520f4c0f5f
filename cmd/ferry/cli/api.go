package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ferrycd/ferry/apply"
	"github.com/ferrycd/ferry/ingest"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	"github.com/ferrycd/ferry/render"
)

// AppSummary is one row of GET /api/v1/apps.
type AppSummary struct {
	Namespace      string     `json:"namespace"`
	Name           string     `json:"name"`
	RepoURL        string     `json:"repoURL"`
	Path           string     `json:"path,omitempty"`
	Chart          string     `json:"chart,omitempty"`
	TargetRevision string     `json:"targetRevision,omitempty"`
	Sync           string     `json:"sync"`
	Health         string     `json:"health"`
	Revision       string     `json:"revision,omitempty"`
	Automated      bool       `json:"automated"`
	Suspended      bool       `json:"suspended,omitempty"`
	LastSyncedAt   *time.Time `json:"lastSyncedAt,omitempty"`
	LastError      string     `json:"lastError,omitempty"`
}

// ResourcesResponse is GET .../resources.
type ResourcesResponse struct {
	Health v1alpha1.HealthStatus    `json:"health"`
	Items  []v1alpha1.ResourceState `json:"items"`
}

// HistoryEntry is one past sync, with a link to its trace when ferry knows
// where Jaeger is.
type HistoryEntry struct {
	v1alpha1.SyncHistory
	TraceURL string `json:"traceURL,omitempty"`
}

// HistoryResponse is GET .../history, newest first.
type HistoryResponse struct {
	Items []HistoryEntry `json:"items"`
}

// DiffResponse is GET .../diff.
type DiffResponse struct {
	Revision string `json:"revision,omitempty"`
	Diff     string `json:"diff"`
}

// api serves ferry's read API; the mutating calls live in ingest.
type api struct {
	apps     *ingest.AppStore
	renderer *render.Renderer
	// differ compares an app's render with the cluster.
	differ    *apply.Role
	jaegerURL string
	// auth is the same Authorizer the mutating handlers ask.
	auth *ingest.Authorizer
}

func (a *api) register(mux *http.ServeMux) {
	mux.Handle("GET /api/v1/apps", a.auth.RequireRead(http.HandlerFunc(a.list)))
	mux.Handle("GET /api/v1/apps/{namespace}/{name}", a.auth.RequireRead(http.HandlerFunc(a.get)))
	mux.Handle("GET /api/v1/apps/{namespace}/{name}/resources", a.auth.RequireRead(http.HandlerFunc(a.resources)))
	mux.Handle("GET /api/v1/apps/{namespace}/{name}/history", a.auth.RequireRead(http.HandlerFunc(a.history)))
	mux.Handle("GET /api/v1/apps/{namespace}/{name}/diff", a.auth.RequireRead(http.HandlerFunc(a.diffApp)))
}

func summarize(app *v1alpha1.Application) AppSummary {
	s := AppSummary{
		Namespace: app.Namespace, Name: app.Name,
		Sync: app.Status.Sync.Status, Health: app.Status.Health.Status, Revision: app.Status.Sync.Revision,
		Automated: app.Spec.IsAutomated(), Suspended: app.Spec.Suspend, LastError: app.Status.LastError,
	}
	if srcs := app.Spec.AllSources(); len(srcs) > 0 {
		s.RepoURL, s.Path, s.Chart, s.TargetRevision = srcs[0].RepoURL, srcs[0].Path, srcs[0].Chart, srcs[0].TargetRevision
	}
	if s.Sync == "" {
		s.Sync = v1alpha1.SyncStatusUnknown
	}
	if s.Health == "" {
		s.Health = "Unknown"
	}
	if t := app.Status.ReconciledAt; t != nil {
		tt := t.Time
		s.LastSyncedAt = &tt
	}
	return s
}

func (a *api) list(w http.ResponseWriter, r *http.Request) {
	apps, _ := a.apps.ListApplications(r.Context())
	items := make([]AppSummary, 0, len(apps))
	for _, app := range apps {
		items = append(items, summarize(app))
	}
	slices.SortFunc(items, func(x, y AppSummary) int {
		return strings.Compare(x.Namespace+"/"+x.Name, y.Namespace+"/"+y.Name)
	})
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

func (a *api) app(w http.ResponseWriter, r *http.Request) (*v1alpha1.Application, bool) {
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	app, err := a.apps.GetApplication(r.Context(), ns, name)
	if errors.Is(err, ingest.ErrAppNotFound) {
		ingest.WriteAPIError(w, http.StatusNotFound, "not_found", "application "+ns+"/"+name+" not found")
		return nil, false
	}
	if err != nil {
		ingest.WriteAPIError(w, http.StatusInternalServerError, "internal", err.Error())
		return nil, false
	}
	return app, true
}

func (a *api) get(w http.ResponseWriter, r *http.Request) {
	if app, ok := a.app(w, r); ok {
		out := *app // the store's copy is shared
		out.APIVersion, out.Kind = v1alpha1.APIVersion, v1alpha1.Kind
		out.ManagedFields = nil
		writeJSON(w, http.StatusOK, &out)
	}
}

func (a *api) resources(w http.ResponseWriter, r *http.Request) {
	if app, ok := a.app(w, r); ok {
		items := app.Status.Resources
		if items == nil {
			items = []v1alpha1.ResourceState{}
		}
		writeJSON(w, http.StatusOK, ResourcesResponse{Health: app.Status.Health, Items: items})
	}
}

func (a *api) history(w http.ResponseWriter, r *http.Request) {
	app, ok := a.app(w, r)
	if !ok {
		return
	}
	items := make([]HistoryEntry, 0, len(app.Status.History))
	for i := len(app.Status.History) - 1; i >= 0; i-- {
		e := HistoryEntry{SyncHistory: app.Status.History[i]}
		if a.jaegerURL != "" && e.TraceID != "" {
			e.TraceURL = strings.TrimSuffix(a.jaegerURL, "/") + "/trace/" + e.TraceID
		}
		items = append(items, e)
	}
	writeJSON(w, http.StatusOK, HistoryResponse{Items: items})
}

func (a *api) diffApp(w http.ResponseWriter, r *http.Request) {
	app, ok := a.app(w, r)
	if !ok {
		return
	}
	d, err := a.diff(r.Context(), app)
	if err != nil {
		ingest.WriteAPIError(w, http.StatusUnprocessableEntity, "diff_failed", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// diff renders the app at its target revision and compares it with the
// cluster through a server-side dry run; Secret data is masked by apply.
func (a *api) diff(ctx context.Context, app *v1alpha1.Application) (DiffResponse, error) {
	b, rev, err := a.renderer.Render(ctx, render.Request{App: app})
	if err != nil {
		return DiffResponse{}, fmt.Errorf("render failed: %w", err)
	}
	objs, err := apply.Decode(b.GetObjects())
	if err != nil {
		return DiffResponse{}, err
	}
	diffs, err := a.differ.Diff(ctx, app, objs)
	if err != nil {
		return DiffResponse{}, err
	}
	var sb strings.Builder
	for _, d := range diffs {
		sb.WriteString(d.Diff)
	}
	return DiffResponse{Revision: rev, Diff: sb.String()}, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
