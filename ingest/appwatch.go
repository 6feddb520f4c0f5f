package ingest

import (
	"context"
	"log/slog"
	"sync"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
)

// SpecTrigger makes a created Application, or one whose spec changed since
// its last sync, sync at once when it is automated and not suspended. An
// app whose last sync saw its current generation is left alone, so a
// restart does not resync every app.
type SpecTrigger struct {
	pub SyncPublisher
	log *slog.Logger

	// enqueued remembers the generation last enqueued per app, so that the
	// status writes of a sync in progress (a retry, say) do not enqueue the
	// same generation again and again.
	mu       sync.Mutex
	enqueued map[string]int64
}

var _ AppHandler = (*SpecTrigger)(nil)

// NewSpecTrigger returns a SpecTrigger publishing to pub; add it to the
// AppStore with Handle.
func NewSpecTrigger(pub SyncPublisher, log *slog.Logger) *SpecTrigger {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &SpecTrigger{pub: pub, log: log, enqueued: map[string]int64{}}
}

// AppChanged enqueues a sync of app when its spec is newer than its last
// sync.
func (t *SpecTrigger) AppChanged(ctx context.Context, app *v1alpha1.Application) {
	if app.DeletionTimestamp != nil || app.Spec.Suspend || !app.Spec.IsAutomated() {
		return
	}
	if app.Generation == app.Status.ObservedGeneration {
		return
	}
	key := app.Namespace + "/" + app.Name
	t.mu.Lock()
	seen := t.enqueued[key] >= app.Generation
	t.enqueued[key] = app.Generation
	t.mu.Unlock()
	if seen {
		return
	}
	if err := t.pub.PublishSync(ctx, appChangedRequest(app)); err != nil {
		t.log.WarnContext(ctx, "could not enqueue the sync of a changed app", "app", key, "error", err)
		return
	}
	t.log.InfoContext(ctx, "app changed; sync enqueued", "app", key, "generation", app.Generation)
}

// AppDeleted forgets app: a recreated app starts again at generation 1.
func (t *SpecTrigger) AppDeleted(_ context.Context, app *v1alpha1.Application) {
	t.mu.Lock()
	delete(t.enqueued, app.Namespace+"/"+app.Name)
	t.mu.Unlock()
}

// appChangedRequest is the sync request of an app whose spec, or whose
// key Secret, changed: at the newest commit of its tracked ref.
func appChangedRequest(app *v1alpha1.Application) *ferryv1.SyncRequest {
	return &ferryv1.SyncRequest{
		App:         &ferryv1.AppRef{Namespace: app.Namespace, Name: app.Name},
		RepoUrl:     app.Spec.PrimaryRepoURL(),
		Trigger:     ferryv1.Trigger_TRIGGER_APP_CHANGED,
		RequestedAt: timestamppb.Now(),
	}
}
