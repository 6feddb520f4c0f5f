package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
	"github.com/ferrycd/ferry/proto/job"
)

// Renderer turns a sync request into a rendered bundle.
type Renderer interface {
	// Render returns the bundle, the commit it was rendered from and the
	// paths it read.
	Render(ctx context.Context, req *ferryv1.SyncRequest) (*ferryv1.RenderResult, error)
}

// Applier brings the cluster to a rendered bundle and reports what it did.
// A failed sync that has been recorded is a result, not an error; an error
// means the job should be retried (or, when job.Terminal, given up).
type Applier interface {
	Apply(ctx context.Context, req *ferryv1.ApplyRequest, bundle *ferryv1.Bundle) (*ferryv1.SyncResult, error)
}

// RunRender consumes sync requests, renders them with r, stores each bundle
// in the object store and enqueues its apply request. It returns when ctx is
// done.
func (q *Queue) RunRender(ctx context.Context, r Renderer) error {
	return q.consume(ctx, StreamSync, ConsumerRender, "render", q.cfg.RenderParallelism,
		func(ctx context.Context, m jetstream.Msg) error {
			req := &ferryv1.SyncRequest{}
			if err := proto.Unmarshal(m.Data(), req); err != nil {
				return job.Terminal(fmt.Errorf("decoding sync request: %w", err))
			}
			aj := appJob{role: "render", stream: StreamSync, m: m, req: req, linkDeliveryIDs: true}
			return q.runAppJob(ctx, aj, func(ctx context.Context, span trace.Span) error {
				app := req.GetApp()
				rr, err := r.Render(ctx, req)
				if errors.Is(err, job.ErrSkip) {
					return nil
				}
				if job.IsTerminal(err) {
					q.publishRenderFailure(ctx, req, span, err)
				}
				if err != nil {
					return err
				}
				ref, err := q.putBundle(ctx, rr.GetBundle())
				if err != nil {
					return err
				}
				areq := &ferryv1.ApplyRequest{
					App:         app,
					Revision:    rr.GetRevision(),
					Inputs:      rr.GetInputs(),
					Bundle:      ref,
					Trigger:     req.GetTrigger(),
					DeliveryId:  req.GetDeliveryId(),
					RequestedAt: req.GetRequestedAt(),
					RepoUrl:     req.GetRepoUrl(),
				}
				if areq.RequestedAt == nil {
					areq.RequestedAt = timestamppb.Now()
				}
				_, err = q.publish(ctx, ApplySubject(app.GetNamespace(), app.GetName()), "", areq)
				return err
			})
		})
}

// RunApply consumes apply requests, fetches their bundles and applies them
// with a, one at a time per app, publishing each result. It returns when ctx
// is done.
func (q *Queue) RunApply(ctx context.Context, a Applier) error {
	return q.consume(ctx, StreamApply, ConsumerApply, "apply", q.cfg.ApplyParallelism,
		func(ctx context.Context, m jetstream.Msg) error {
			req := &ferryv1.ApplyRequest{}
			if err := proto.Unmarshal(m.Data(), req); err != nil {
				return job.Terminal(fmt.Errorf("decoding apply request: %w", err))
			}
			aj := appJob{role: "apply", stream: StreamApply, m: m, req: req,
				attrs: []attribute.KeyValue{attribute.Int("ferry.objects", int(req.GetBundle().GetObjectCount()))}}
			return q.runAppJob(ctx, aj, func(ctx context.Context, span trace.Span) error {
				app := req.GetApp()
				bundle, err := q.getBundle(ctx, req.GetBundle().GetHash())
				if err != nil {
					return err
				}
				res, err := a.Apply(ctx, req, bundle)
				if errors.Is(err, job.ErrSkip) {
					return nil
				}
				if err != nil {
					return err
				}
				if res.TraceId == "" {
					res.TraceId = span.SpanContext().TraceID().String()
				}
				_, err = q.publish(ctx, ResultSubject(app.GetNamespace(), app.GetName()), "", res)
				return err
			})
		})
}

// publishRenderFailure publishes the result of a sync whose render failed
// for good, so that what follows results (commit statuses) hears of it as
// of any other sync. A lost result is logged: the app's status has it.
func (q *Queue) publishRenderFailure(ctx context.Context, req *ferryv1.SyncRequest, span trace.Span, cause error) {
	app := req.GetApp()
	now := timestamppb.Now()
	res := &ferryv1.SyncResult{
		App: app, Revision: req.GetRevision(), Phase: ferryv1.SyncPhase_SYNC_PHASE_FAILED, Message: cause.Error(),
		StartedAt: now, FinishedAt: now, TraceId: span.SpanContext().TraceID().String(),
		Trigger: req.GetTrigger(), DeliveryId: req.GetDeliveryId(), RepoUrl: req.GetRepoUrl(),
	}
	if _, err := q.publish(ctx, ResultSubject(app.GetNamespace(), app.GetName()), "", res); err != nil {
		q.log.WarnContext(ctx, "result of a failed render not published", "app", app.GetNamespace()+"/"+app.GetName(), "error", err)
	}
}

// appRequest is what sync and apply requests share: the app, where its
// sources come from, and the pushes the request stands for.
type appRequest interface {
	GetApp() *ferryv1.AppRef
	GetRepoUrl() string
	GetRevision() string
	GetDeliveryId() string
	GetLinks() []*ferryv1.TraceLink
}

var (
	_ appRequest = (*ferryv1.SyncRequest)(nil)
	_ appRequest = (*ferryv1.ApplyRequest)(nil)
)

// appJob is one decoded message of a role that works on one app at a time.
type appJob struct {
	// role names the per-app lock: a render and an apply of one app may
	// run side by side, two of either may not.
	role string
	// stream is where a newer message for the app supersedes m.
	stream string
	m      jetstream.Msg
	req    appRequest
	// attrs are set on the span after the app's own.
	attrs []attribute.KeyValue
	// linkDeliveryIDs also labels each trace link with its delivery ID.
	linkDeliveryIDs bool
}

// runAppJob labels ctx's logs and span with the job's app, links the span
// to the pushes the request stands for, and runs run while holding the
// app's lock for the role; unless a newer message for the app arrived while
// this one waited for the lock, which then runs instead.
func (q *Queue) runAppJob(ctx context.Context, j appJob, run func(context.Context, trace.Span) error) error {
	req := j.req
	app := req.GetApp()
	ctx = WithLogAttrs(ctx, LogAttrs{App: app.GetNamespace() + "/" + app.GetName(), Revision: req.GetRevision()})
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(appAttrs(app, req.GetRepoUrl(), req.GetRevision(), req.GetDeliveryId())...)
	if len(j.attrs) > 0 {
		span.SetAttributes(j.attrs...)
	}
	for _, l := range req.GetLinks() {
		if sc := remoteSpanContext(l.GetTraceparent()); sc.IsValid() {
			attrs := []attribute.KeyValue{attribute.String("ferry.link.reason", l.GetReason())}
			if j.linkDeliveryIDs {
				attrs = append(attrs, attribute.String("ferry.delivery_id", l.GetDeliveryId()))
			}
			span.AddLink(trace.Link{SpanContext: sc, Attributes: attrs})
		}
	}
	unlock := q.locks.lock(j.role + "/" + app.GetNamespace() + "/" + app.GetName())
	defer unlock()
	if q.superseded(ctx, j.stream, j.m) {
		span.SetAttributes(attribute.Bool("ferry.superseded", true))
		return nil
	}
	return run(ctx, span)
}

func appAttrs(app *ferryv1.AppRef, repo, revision, delivery string) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("ferry.app", app.GetNamespace()+"/"+app.GetName()),
		// A repoURL with credentials is refused by render, but the request
		// naming it gets this far: never let them into a span.
		attribute.String("ferry.repo", v1alpha1.RedactRepoURL(repo)),
		attribute.String("ferry.revision", revision),
		attribute.String("ferry.delivery_id", delivery),
	}
}

// superseded reports whether a newer message for the same app arrived while
// m waited for its turn: the newer one runs instead, so a burst of pushes
// makes at most the running sync and the newest.
func (q *Queue) superseded(ctx context.Context, stream string, m jetstream.Msg) bool {
	md, err := m.Metadata()
	if err != nil {
		return false
	}
	s, err := q.js.Stream(ctx, stream)
	if err != nil {
		return false
	}
	last, err := s.GetLastMsgForSubject(ctx, m.Subject())
	if err != nil {
		return false
	}
	return last.Sequence > md.Sequence.Stream
}
