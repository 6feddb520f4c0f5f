package ingest

import (
	"context"
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

// SyncResponse answers an accepted manual sync.
type SyncResponse struct {
	Status    string `json:"status"`
	App       string `json:"app"`
	Revision  string `json:"revision,omitempty"`
	RequestID string `json:"requestID"`
}

// Trigger handles the mutating app calls, POST .../sync and
// POST .../rollback: it asks the Authorizer (the admin token only), reads
// the optional JSON body {"revision": "..."}, finds the app and enqueues
// the sync.
type Trigger struct {
	apps     AppGetter
	pub      SyncPublisher
	auth     *Authorizer
	log      *slog.Logger
	verb     string
	trigger  ferryv1.Trigger
	revision func(app *v1alpha1.Application, asked string) (string, *APIError)
}

// NewManualSync returns the handler of POST /api/v1/apps/{namespace}/{name}/sync:
// a sync with trigger manual, at the asked revision or else the app's
// targetRevision.
func NewManualSync(apps AppGetter, pub SyncPublisher, auth *Authorizer, log *slog.Logger) *Trigger {
	return newTrigger(apps, pub, auth, log, "sync", ferryv1.Trigger_TRIGGER_MANUAL,
		func(_ *v1alpha1.Application, asked string) (string, *APIError) { return asked, nil })
}

// NewRollback returns the handler of POST /api/v1/apps/{namespace}/{name}/rollback:
// it re-applies a revision from the app's history, as Argo CD does, and only
// while automated sync is off (otherwise Git would win again at once). By
// default the revision is the last successful one before the current.
func NewRollback(apps AppGetter, pub SyncPublisher, auth *Authorizer, log *slog.Logger) *Trigger {
	return newTrigger(apps, pub, auth, log, "rollback", ferryv1.Trigger_TRIGGER_ROLLBACK,
		func(app *v1alpha1.Application, asked string) (string, *APIError) {
			if app.Spec.IsAutomated() {
				return "", &APIError{Code: "automated_sync_enabled", Message: "rollback is refused while automated sync is on: turn off spec.syncPolicy.automated first"}
			}
			rev, err := RollbackTarget(app, asked)
			if err != nil {
				return "", &APIError{Code: "no_such_revision", Message: err.Error()}
			}
			return rev, nil
		})
}

func newTrigger(apps AppGetter, pub SyncPublisher, auth *Authorizer, log *slog.Logger, verb string, t ferryv1.Trigger,
	revision func(*v1alpha1.Application, string) (string, *APIError)) *Trigger {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Trigger{apps: apps, pub: pub, auth: auth, log: log, verb: verb, trigger: t, revision: revision}
}

func (h *Trigger) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.auth.Mutate(w, r) {
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
	rev, refused := h.revision(app, body.Revision)
	if refused != nil {
		status := http.StatusBadRequest
		if refused.Code == "automated_sync_enabled" {
			status = http.StatusConflict
		}
		WriteAPIError(w, status, refused.Code, refused.Message)
		return
	}
	repo := app.Spec.PrimaryRepoURL()
	id := h.verb + "-" + timestamppb.Now().AsTime().Format("20060102T150405.000000000")
	req := &ferryv1.SyncRequest{
		App: &ferryv1.AppRef{Namespace: ns, Name: name}, RepoUrl: repo, Revision: rev,
		Trigger: h.trigger, DeliveryId: id, RequestedAt: timestamppb.Now(),
	}
	if err := h.pub.PublishSync(r.Context(), req); err != nil {
		h.log.ErrorContext(r.Context(), h.verb+" not enqueued", "app", ns+"/"+name, "error", err)
		WriteAPIError(w, http.StatusServiceUnavailable, "unavailable", "the sync queue is unavailable; try again")
		return
	}
	h.log.InfoContext(r.Context(), h.verb+" enqueued", "app", ns+"/"+name, "revision", rev)
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
