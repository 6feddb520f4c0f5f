package cli

import (
	"context"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ferrycd/ferry/apply"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
	"github.com/ferrycd/ferry/worker"
)

// healer reacts to what the apply Monitor sees: it records health and
// drift in the status, re-applies the last bundle of a drifted app with
// selfHeal (with a backoff per app), and starts the PostSync phase once an
// app is healthy.
type healer struct {
	roles *roles
	queue *worker.Queue

	mu      sync.Mutex
	backoff map[string]*healBackoff
	drifted map[string]bool
}

type healBackoff struct {
	next  time.Time
	delay time.Duration
}

const (
	healFirst = 5 * time.Second
	healMax   = 5 * time.Minute
)

func newHealer(r *roles, q *worker.Queue) *healer {
	return &healer{roles: r, queue: q, backoff: map[string]*healBackoff{}, drifted: map[string]bool{}}
}

// onStatus is the Monitor's callback.
func (h *healer) onStatus(s apply.AppStatus) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := h.roles
	ns, name, _ := strings.Cut(s.App, "/")
	app, err := r.apps.Get(ns, name)
	if err != nil {
		return // deleted, or not ours
	}
	if err := apply.RecordStatus(ctx, r.applier.Dynamic(), ns, name, s); err != nil {
		r.log.Warn("could not record app status", "app", s.App, "error", err)
	}
	h.mu.Lock()
	was := h.drifted[s.App]
	h.drifted[s.App] = s.OutOfSync()
	if !s.OutOfSync() {
		delete(h.backoff, s.App)
	}
	h.mu.Unlock()
	if s.OutOfSync() && !was {
		r.metrics.drift.Inc()
		r.log.Info("drift detected", "app", s.App, "objects", len(s.Drift), "first", s.Drift[0].String())
	}
	if app.Spec.Suspend || s.Syncing {
		return
	}
	if s.OutOfSync() && app.Spec.SyncPolicy != nil && app.Spec.SyncPolicy.Automated != nil && app.Spec.SyncPolicy.Automated.SelfHeal {
		h.selfHeal(ctx, app)
	}
	if s.PostSyncPending && s.Health.Status == apply.HealthHealthy {
		h.enqueue(ctx, app, true, "postsync")
	}
}

// selfHeal re-applies the app's last bundle, at most once per backoff step.
func (h *healer) selfHeal(ctx context.Context, app *v1alpha1.Application) {
	key := app.Namespace + "/" + app.Name
	h.mu.Lock()
	b := h.backoff[key]
	if b == nil {
		b = &healBackoff{delay: healFirst}
		h.backoff[key] = b
	}
	if time.Now().Before(b.next) {
		h.mu.Unlock()
		return
	}
	b.next = time.Now().Add(b.delay)
	b.delay = min(b.delay*2, healMax)
	h.mu.Unlock()
	h.enqueue(ctx, app, false, "self-heal")
}

// enqueue publishes an apply of the app's last bundle in a trace of its
// own, linked to the sync that applied that bundle.
func (h *healer) enqueue(ctx context.Context, app *v1alpha1.Application, postSync bool, why string) {
	r := h.roles
	st := app.Status
	if st.Sync.BundleHash == "" || st.Sync.Revision == "" {
		return
	}
	var links []trace.Link
	var tlinks []*ferryv1.TraceLink
	if n := len(st.History); n > 0 {
		last := st.History[n-1]
		tid, err1 := trace.TraceIDFromHex(last.TraceID)
		sid, err2 := trace.SpanIDFromHex(last.SpanID)
		if err1 == nil && err2 == nil {
			sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
			links = append(links, trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{attribute.String("ferry.link.reason", "last sync")}})
			tlinks = append(tlinks, &ferryv1.TraceLink{Traceparent: "00-" + last.TraceID + "-" + last.SpanID + "-01", Reason: "last sync"})
		}
	}
	ctx, span := otel.Tracer("github.com/ferrycd/ferry/cmd").Start(ctx, why,
		trace.WithNewRoot(), trace.WithLinks(links...),
		trace.WithAttributes(attribute.String("ferry.app", app.Namespace+"/"+app.Name), attribute.String("ferry.revision", st.Sync.Revision)))
	defer span.End()
	trigger := ferryv1.Trigger_TRIGGER_DRIFT
	if postSync {
		trigger = ferryv1.Trigger_TRIGGER_APP_CHANGED
	}
	var repo string
	if srcs := app.Spec.AllSources(); len(srcs) > 0 {
		repo = srcs[0].RepoURL
	}
	req := &ferryv1.ApplyRequest{
		App:      &ferryv1.AppRef{Namespace: app.Namespace, Name: app.Name},
		Revision: st.Sync.Revision, Bundle: &ferryv1.BundleRef{Hash: st.Sync.BundleHash},
		Trigger: trigger, PostSync: postSync, RequestedAt: timestamppb.Now(), RepoUrl: repo, Links: tlinks,
	}
	published, err := h.queue.PublishApplyIfIdle(ctx, req)
	switch {
	case err != nil:
		r.log.WarnContext(ctx, "could not enqueue "+why, "app", app.Namespace+"/"+app.Name, "error", err)
	case published:
		r.log.InfoContext(ctx, why+" enqueued", "app", app.Namespace+"/"+app.Name, "revision", st.Sync.Revision)
	}
}
