package ingest

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
)

// ErrAppNotFound is returned by an AppGetter for a missing Application.
var ErrAppNotFound = errors.New("application not found")

// AppGetter reads one Application.
type AppGetter interface {
	GetApplication(ctx context.Context, namespace, name string) (*v1alpha1.Application, error)
}

// APIError is the JSON body of every API error: a stable code and a
// message for people.
type APIError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// WriteAPIError answers with an APIError.
func WriteAPIError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, APIError{Code: code, Message: msg})
}

// Authorize checks the bearer token of a mutating API call. An empty token
// means mutations are disabled. It answers the request itself and returns
// false when the call may not go on.
func Authorize(w http.ResponseWriter, r *http.Request, token []byte) bool {
	if len(token) == 0 {
		WriteAPIError(w, http.StatusForbidden, "mutations_disabled", "this ferry has no API token (--api-token-file); mutating calls are disabled")
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), token) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ferry"`)
		WriteAPIError(w, http.StatusUnauthorized, "unauthorized", "a valid bearer token is required")
		return false
	}
	return true
}

// SyncResponse answers an accepted manual sync.
type SyncResponse struct {
	Status    string `json:"status"`
	App       string `json:"app"`
	Revision  string `json:"revision,omitempty"`
	RequestID string `json:"requestID"`
}

// ManualSync handles POST /api/v1/apps/{namespace}/{name}/sync: it enqueues
// a sync with trigger manual. The optional JSON body {"revision": "..."}
// pins the revision; otherwise the app's targetRevision is followed.
type ManualSync struct {
	apps  AppGetter
	pub   SyncPublisher
	token []byte
	log   *slog.Logger
}

// NewManualSync returns the manual sync handler.
func NewManualSync(apps AppGetter, pub SyncPublisher, token []byte, log *slog.Logger) *ManualSync {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &ManualSync{apps: apps, pub: pub, token: token, log: log}
}

func (m *ManualSync) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !Authorize(w, r, m.token) {
		return
	}
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	var body struct {
		Revision string `json:"revision"`
	}
	if r.ContentLength != 0 {
		dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
		if err := dec.Decode(&body); err != nil && !errors.Is(err, io.EOF) {
			WriteAPIError(w, http.StatusBadRequest, "bad_request", "body must be JSON like {\"revision\": \"<sha>\"}: "+err.Error())
			return
		}
	}
	app, err := m.apps.GetApplication(r.Context(), ns, name)
	if errors.Is(err, ErrAppNotFound) {
		WriteAPIError(w, http.StatusNotFound, "not_found", "application "+ns+"/"+name+" not found")
		return
	}
	if err != nil {
		WriteAPIError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
		return
	}
	var repo string
	if srcs := app.Spec.AllSources(); len(srcs) > 0 {
		repo = srcs[0].RepoURL
	}
	id := "manual-" + timestamppb.Now().AsTime().Format("20060102T150405.000000000")
	req := &ferryv1.SyncRequest{
		App:         &ferryv1.AppRef{Namespace: ns, Name: name},
		RepoUrl:     repo,
		Revision:    body.Revision,
		Trigger:     ferryv1.Trigger_TRIGGER_MANUAL,
		DeliveryId:  id,
		RequestedAt: timestamppb.Now(),
	}
	if err := m.pub.PublishSync(r.Context(), req); err != nil {
		m.log.Error("manual sync not enqueued", "app", ns+"/"+name, "error", err)
		WriteAPIError(w, http.StatusServiceUnavailable, "unavailable", "the sync queue is unavailable; try again")
		return
	}
	m.log.Info("manual sync enqueued", "app", ns+"/"+name, "revision", body.Revision)
	writeJSON(w, http.StatusAccepted, SyncResponse{Status: "queued", App: ns + "/" + name, Revision: body.Revision, RequestID: id})
}

// Rollback handles POST /api/v1/apps/{namespace}/{name}/rollback: it
// re-applies a revision from the app's history, as Argo CD does, and only
// while automated sync is off (otherwise Git would win again at once). The
// optional JSON body {"revision": "..."} names the revision; by default it
// is the last successful one before the current.
type Rollback struct {
	apps  AppGetter
	pub   SyncPublisher
	token []byte
	log   *slog.Logger
}

// NewRollback returns the rollback handler.
func NewRollback(apps AppGetter, pub SyncPublisher, token []byte, log *slog.Logger) *Rollback {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Rollback{apps: apps, pub: pub, token: token, log: log}
}

func (h *Rollback) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !Authorize(w, r, h.token) {
		return
	}
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	var body struct {
		Revision string `json:"revision"`
	}
	if r.ContentLength != 0 {
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
			WriteAPIError(w, http.StatusBadRequest, "bad_request", "body must be JSON like {\"revision\": \"<sha>\"}: "+err.Error())
			return
		}
	}
	app, err := h.apps.GetApplication(r.Context(), ns, name)
	if errors.Is(err, ErrAppNotFound) {
		WriteAPIError(w, http.StatusNotFound, "not_found", "application "+ns+"/"+name+" not found")
		return
	}
	if err != nil {
		WriteAPIError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
		return
	}
	if app.Spec.IsAutomated() {
		WriteAPIError(w, http.StatusConflict, "automated_sync_enabled", "rollback is refused while automated sync is on: turn off spec.syncPolicy.automated first")
		return
	}
	rev, err := RollbackTarget(app, body.Revision)
	if err != nil {
		WriteAPIError(w, http.StatusBadRequest, "no_such_revision", err.Error())
		return
	}
	var repo string
	if srcs := app.Spec.AllSources(); len(srcs) > 0 {
		repo = srcs[0].RepoURL
	}
	id := "rollback-" + timestamppb.Now().AsTime().Format("20060102T150405.000000000")
	req := &ferryv1.SyncRequest{
		App: &ferryv1.AppRef{Namespace: ns, Name: name}, RepoUrl: repo, Revision: rev,
		Trigger: ferryv1.Trigger_TRIGGER_ROLLBACK, DeliveryId: id, RequestedAt: timestamppb.Now(),
	}
	if err := h.pub.PublishSync(r.Context(), req); err != nil {
		WriteAPIError(w, http.StatusServiceUnavailable, "unavailable", "the sync queue is unavailable; try again")
		return
	}
	h.log.Info("rollback enqueued", "app", ns+"/"+name, "revision", rev)
	writeJSON(w, http.StatusAccepted, SyncResponse{Status: "queued", App: ns + "/" + name, Revision: rev, RequestID: id})
}

// RollbackTarget picks the revision a rollback goes to: want when it is in
// the app's history, else (want empty) the newest successful revision that
// differs from the one deployed now.
func RollbackTarget(app *v1alpha1.Application, want string) (string, error) {
	h := app.Status.History
	if want != "" {
		for _, e := range h {
			if e.Revision == want || (len(want) >= 7 && strings.HasPrefix(e.Revision, want)) {
				return e.Revision, nil
			}
		}
		return "", errors.New("revision " + want + " is not in the app's history")
	}
	current := app.Status.Sync.Revision
	if n := len(h); n > 0 && h[n-1].Phase == v1alpha1.PhaseSucceeded {
		current = h[n-1].Revision
	}
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].Phase == v1alpha1.PhaseSucceeded && h[i].Revision != current {
			return h[i].Revision, nil
		}
	}
	return "", errors.New("the history holds no earlier successful revision")
}
