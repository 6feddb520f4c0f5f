package ingest

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
	"github.com/ferrycd/ferry/proto/job"
)

// ApplyPublisher enqueues an apply of a bundle already rendered, unless a
// newer job for the app is pending; it reports whether it published.
type ApplyPublisher interface {
	PublishApplyIfIdle(ctx context.Context, req *ferryv1.ApplyRequest) (bool, error)
}

// healBackoff spaces the self-heals of one app that keeps drifting.
var healBackoff = job.Backoff{First: 5 * time.Second, Factor: 2, Max: 5 * time.Minute}

// DriftReport is what the apply Monitor saw of one app, as far as the
// triggers care. ingest does not import apply (DESIGN.md's floors): the
// wiring fills this in from apply.AppStatus.
type DriftReport struct {
	// App is namespace/name.
	App string
	// Drifted counts the objects that no longer match what ferry applied;
	// FirstDrift describes one of them.
	Drifted    int
	FirstDrift string
	// Syncing says a sync of the app is writing right now.
	Syncing bool
	// PostSyncPending says PostSync hooks wait for the app to be Healthy.
	PostSyncPending bool
	// Healthy says the app is Healthy.
	Healthy bool
}

// OutOfSync reports whether some object drifted.
func (r DriftReport) OutOfSync() bool { return r.Drifted > 0 }

// DriftTrigger turns what the apply Monitor sees into jobs: a re-apply of
// the last bundle of a drifted app with selfHeal (at most once per backoff
// step per app), and the PostSync phase once an app is healthy.
type DriftTrigger struct {
	apps    *AppStore
	pub     ApplyPublisher
	metrics *Metrics
	log     *slog.Logger

	mu      sync.Mutex
	heals   map[string]*heal
	drifted map[string]bool
}

type heal struct {
	next     time.Time
	attempts int
}

// NewDriftTrigger returns a DriftTrigger over the apps in apps, publishing
// to pub; m may be nil.
func NewDriftTrigger(apps *AppStore, pub ApplyPublisher, m *Metrics, log *slog.Logger) *DriftTrigger {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &DriftTrigger{apps: apps, pub: pub, metrics: m, log: log, heals: map[string]*heal{}, drifted: map[string]bool{}}
}

// OnStatus handles one report of the Monitor.
func (d *DriftTrigger) OnStatus(ctx context.Context, s DriftReport) {
	ns, name, _ := strings.Cut(s.App, "/")
	app, err := d.apps.Get(ns, name)
	if err != nil {
		return // deleted, or not ours
	}
	d.mu.Lock()
	was := d.drifted[s.App]
	d.drifted[s.App] = s.OutOfSync()
	if !s.OutOfSync() {
		delete(d.heals, s.App)
	}
	d.mu.Unlock()
	if s.OutOfSync() && !was {
		d.metrics.drift()
		d.log.InfoContext(ctx, "drift detected", "app", s.App, "objects", s.Drifted, "first", s.FirstDrift)
	}
	if app.Spec.Suspend || s.Syncing {
		return
	}
	if s.OutOfSync() && app.Spec.SyncPolicy != nil && app.Spec.SyncPolicy.Automated != nil && app.Spec.SyncPolicy.Automated.SelfHeal {
		d.selfHeal(ctx, app)
	}
	if s.PostSyncPending && s.Healthy {
		d.enqueue(ctx, app, true, "postsync")
	}
}

// selfHeal re-applies the app's last bundle, at most once per backoff step.
func (d *DriftTrigger) selfHeal(ctx context.Context, app *v1alpha1.Application) {
	key := app.Namespace + "/" + app.Name
	d.mu.Lock()
	h := d.heals[key]
	if h == nil {
		h = &heal{}
		d.heals[key] = h
	}
	if time.Now().Before(h.next) {
		d.mu.Unlock()
		return
	}
	h.attempts++
	h.next = time.Now().Add(healBackoff.Delay(h.attempts))
	d.mu.Unlock()
	d.enqueue(ctx, app, false, "self-heal")
}

// enqueue publishes an apply of the app's last bundle in a trace of its
// own, linked to the sync that applied that bundle.
func (d *DriftTrigger) enqueue(ctx context.Context, app *v1alpha1.Application, postSync bool, why string) {
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
	ctx, span := otel.Tracer(tracerName).Start(ctx, why,
		trace.WithNewRoot(), trace.WithLinks(links...),
		trace.WithAttributes(attribute.String("ferry.app", app.Namespace+"/"+app.Name), attribute.String("ferry.revision", st.Sync.Revision)))
	defer span.End()
	trigger := ferryv1.Trigger_TRIGGER_DRIFT
	if postSync {
		trigger = ferryv1.Trigger_TRIGGER_APP_CHANGED
	}
	req := &ferryv1.ApplyRequest{
		App:      &ferryv1.AppRef{Namespace: app.Namespace, Name: app.Name},
		Revision: st.Sync.Revision, Bundle: &ferryv1.BundleRef{Hash: st.Sync.BundleHash},
		Trigger: trigger, PostSync: postSync, RequestedAt: timestamppb.Now(), RepoUrl: app.Spec.PrimaryRepoURL(), Links: tlinks,
	}
	published, err := d.pub.PublishApplyIfIdle(ctx, req)
	switch {
	case err != nil:
		d.log.WarnContext(ctx, "could not enqueue "+why, "app", app.Namespace+"/"+app.Name, "error", err)
	case published:
		d.log.InfoContext(ctx, why+" enqueued", "app", app.Namespace+"/"+app.Name, "revision", st.Sync.Revision)
	}
}
