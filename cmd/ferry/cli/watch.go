package cli

import (
	"context"
	"log/slog"
	"sync"

	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/client-go/tools/cache"

	"github.com/ferrycd/ferry/ingest"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
)

// watchSpecs makes a created Application, or one whose spec changed since
// its last sync, sync at once when it is automated and not suspended. An
// app whose last sync saw its current generation is left alone, so a
// restart does not resync every app.
func (s *appStore) watchSpecs(ctx context.Context, pub ingest.SyncPublisher, log *slog.Logger) error {
	// enqueued remembers the generation last enqueued per app, so that the
	// status writes of a sync in progress (a retry, say) do not enqueue the
	// same generation again and again.
	var mu sync.Mutex
	enqueued := map[string]int64{}
	enqueue := func(obj any) {
		app, err := s.decode(obj)
		if err != nil || app.DeletionTimestamp != nil || app.Spec.Suspend || !app.Spec.IsAutomated() {
			return
		}
		if app.Generation == app.Status.ObservedGeneration {
			return
		}
		key := app.Namespace + "/" + app.Name
		mu.Lock()
		seen := enqueued[key] >= app.Generation
		enqueued[key] = app.Generation
		mu.Unlock()
		if seen {
			return
		}
		var repo string
		if srcs := app.Spec.AllSources(); len(srcs) > 0 {
			repo = srcs[0].RepoURL
		}
		req := &ferryv1.SyncRequest{
			App:         &ferryv1.AppRef{Namespace: app.Namespace, Name: app.Name},
			RepoUrl:     repo,
			Trigger:     ferryv1.Trigger_TRIGGER_APP_CHANGED,
			RequestedAt: timestamppb.Now(),
		}
		if err := pub.PublishSync(ctx, req); err != nil {
			log.Warn("could not enqueue the sync of a changed app", "app", app.Namespace+"/"+app.Name, "error", err)
			return
		}
		log.Info("app changed; sync enqueued", "app", app.Namespace+"/"+app.Name, "generation", app.Generation)
	}
	_, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: func(obj any) {
			// A recreated app starts again at generation 1.
			if app, err := s.decode(obj); err == nil {
				mu.Lock()
				delete(enqueued, app.Namespace+"/"+app.Name)
				mu.Unlock()
			}
		},
	})
	return err
}
