package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/ferrycd/ferry/apply"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
	"github.com/ferrycd/ferry/render"
	"github.com/ferrycd/ferry/worker"
)

// roles runs the render and apply libraries behind the worker's consumers.
type roles struct {
	apps     *appStore
	renderer *render.Renderer
	applier  *apply.Applier
	log      *slog.Logger
}

var (
	_ worker.Renderer = (*roles)(nil)
	_ worker.Applier  = (*roles)(nil)
)

func triggerName(t ferryv1.Trigger) string {
	switch t {
	case ferryv1.Trigger_TRIGGER_PUSH:
		return "push"
	case ferryv1.Trigger_TRIGGER_POLL:
		return "poll"
	case ferryv1.Trigger_TRIGGER_MANUAL:
		return "manual"
	case ferryv1.Trigger_TRIGGER_DRIFT:
		return "drift"
	case ferryv1.Trigger_TRIGGER_ROLLBACK:
		return "rollback"
	case ferryv1.Trigger_TRIGGER_APP_CHANGED:
		return "app-changed"
	case ferryv1.Trigger_TRIGGER_RETRY:
		return "retry"
	}
	return "unknown"
}

// Render renders the app a sync request names. A render failure caused by
// the sources is recorded in the app's status and ends the job; a network
// failure is retried.
func (r *roles) Render(ctx context.Context, req *ferryv1.SyncRequest) (*ferryv1.Bundle, string, error) {
	ns, name := req.GetApp().GetNamespace(), req.GetApp().GetName()
	app, err := r.apps.Get(ns, name)
	if apierrors.IsNotFound(err) {
		return nil, "", worker.Terminal(fmt.Errorf("application %s/%s no longer exists", ns, name))
	}
	if err != nil {
		return nil, "", err
	}
	started := time.Now()
	b, rev, err := r.renderer.Render(ctx, render.Request{App: app, RepoURL: req.GetRepoUrl(), Revision: req.GetRevision()})
	if err != nil {
		rec := apply.SyncRecord{
			Revision: req.GetRevision(), Trigger: triggerName(req.GetTrigger()),
			TraceID: traceID(ctx), StartedAt: started, FinishedAt: time.Now(),
			Err: fmt.Errorf("render failed: %w", err), Generation: app.Generation,
		}
		if serr := apply.RecordSync(ctx, r.applier.Dynamic(), ns, name, rec); serr != nil {
			r.log.Warn("could not record render failure", "app", ns+"/"+name, "error", serr)
		}
		if render.IsTransient(err) {
			return nil, "", err
		}
		return nil, "", worker.Terminal(err)
	}
	return b, rev, nil
}

// Apply applies a rendered bundle and records the outcome in the status.
func (r *roles) Apply(ctx context.Context, req *ferryv1.ApplyRequest, b *ferryv1.Bundle) (*ferryv1.SyncResult, error) {
	ns, name := req.GetApp().GetNamespace(), req.GetApp().GetName()
	app, err := r.apps.Get(ns, name)
	if apierrors.IsNotFound(err) {
		return nil, worker.Terminal(fmt.Errorf("application %s/%s no longer exists", ns, name))
	}
	if err != nil {
		return nil, err
	}
	started := time.Now()
	objs, err := apply.Decode(b.GetObjects())
	if err != nil {
		return nil, worker.Terminal(fmt.Errorf("bundle %s: %w", b.GetHash(), err))
	}
	res, applyErr := r.applier.Apply(ctx, apply.Target{App: ns + "/" + name, Namespace: app.Spec.Destination.Namespace}, objs)
	var stageErr *apply.ApplyError
	if applyErr != nil && !errors.As(applyErr, &stageErr) {
		return nil, applyErr
	}
	rec := apply.SyncRecord{
		Revision: req.GetRevision(), Trigger: triggerName(req.GetTrigger()), TraceID: traceID(ctx),
		StartedAt: started, FinishedAt: time.Now(), Result: res, Err: applyErr, Generation: app.Generation,
	}
	if err := apply.RecordSync(ctx, r.applier.Dynamic(), ns, name, rec); err != nil {
		return nil, err
	}
	out := &ferryv1.SyncResult{
		App: req.GetApp(), Revision: req.GetRevision(), Phase: ferryv1.SyncPhase_SYNC_PHASE_SUCCEEDED,
		StartedAt: timestamppb.New(started), FinishedAt: timestamppb.New(rec.FinishedAt),
		TraceId: rec.TraceID, Trigger: req.GetTrigger(), DeliveryId: req.GetDeliveryId(),
	}
	if applyErr != nil {
		out.Phase = ferryv1.SyncPhase_SYNC_PHASE_FAILED
		out.Message = applyErr.Error()
	}
	for _, o := range res.Objects {
		out.Resources = append(out.Resources, &ferryv1.ResourceResult{
			Group: o.Ref.Group, Version: o.Ref.Version, Kind: o.Ref.Kind, Namespace: o.Ref.Namespace,
			Name: o.Ref.Name, Action: string(o.Action), Message: o.Message,
		})
	}
	r.log.Info("sync finished", "app", ns+"/"+name, "revision", req.GetRevision(), "phase", out.Phase.String(),
		"objects", len(res.Objects), "trace_id", rec.TraceID, "duration", rec.FinishedAt.Sub(started))
	return out, nil
}

func traceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}
