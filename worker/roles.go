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

	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
)

// Renderer turns a sync request into a rendered bundle.
type Renderer interface {
	// Render returns the bundle, the commit it was rendered from and the
	// paths it read.
	Render(ctx context.Context, req *ferryv1.SyncRequest) (*ferryv1.RenderResult, error)
}

// Applier brings the cluster to a rendered bundle and reports what it did.
// A failed sync that has been recorded is a result, not an error; an error
// means the job should be retried (or, when Terminal, given up).
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
				return Terminal(fmt.Errorf("decoding sync request: %w", err))
			}
			app := req.GetApp()
			ctx = WithLogAttrs(ctx, LogAttrs{App: app.GetNamespace() + "/" + app.GetName(), Revision: req.GetRevision()})
			span := trace.SpanFromContext(ctx)
			span.SetAttributes(appAttrs(app, req.GetRepoUrl(), req.GetRevision(), req.GetDeliveryId())...)
			for _, l := range req.GetLinks() {
				if sc := remoteSpanContext(l.GetTraceparent()); sc.IsValid() {
					span.AddLink(trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{
						attribute.String("ferry.link.reason", l.GetReason()),
						attribute.String("ferry.delivery_id", l.GetDeliveryId()),
					}})
				}
			}
			unlock := q.locks.lock("render/" + app.GetNamespace() + "/" + app.GetName())
			defer unlock()
			if q.superseded(ctx, StreamSync, m) {
				span.SetAttributes(attribute.Bool("ferry.superseded", true))
				return nil
			}

			rr, err := r.Render(ctx, req)
			if errors.Is(err, ErrSkip) {
				return nil
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
}

// RunApply consumes apply requests, fetches their bundles and applies them
// with a, one at a time per app, publishing each result. It returns when ctx
// is done.
func (q *Queue) RunApply(ctx context.Context, a Applier) error {
	return q.consume(ctx, StreamApply, ConsumerApply, "apply", q.cfg.ApplyParallelism,
		func(ctx context.Context, m jetstream.Msg) error {
			req := &ferryv1.ApplyRequest{}
			if err := proto.Unmarshal(m.Data(), req); err != nil {
				return Terminal(fmt.Errorf("decoding apply request: %w", err))
			}
			app := req.GetApp()
			ctx = WithLogAttrs(ctx, LogAttrs{App: app.GetNamespace() + "/" + app.GetName(), Revision: req.GetRevision()})
			span := trace.SpanFromContext(ctx)
			span.SetAttributes(appAttrs(app, req.GetRepoUrl(), req.GetRevision(), req.GetDeliveryId())...)
			span.SetAttributes(attribute.Int("ferry.objects", int(req.GetBundle().GetObjectCount())))
			for _, l := range req.GetLinks() {
				if sc := remoteSpanContext(l.GetTraceparent()); sc.IsValid() {
					span.AddLink(trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{attribute.String("ferry.link.reason", l.GetReason())}})
				}
			}
			unlock := q.locks.lock("apply/" + app.GetNamespace() + "/" + app.GetName())
			defer unlock()
			if q.superseded(ctx, StreamApply, m) {
				span.SetAttributes(attribute.Bool("ferry.superseded", true))
				return nil
			}

			bundle, err := q.getBundle(ctx, req.GetBundle().GetHash())
			if err != nil {
				return err
			}
			res, err := a.Apply(ctx, req, bundle)
			if errors.Is(err, ErrSkip) {
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
}

func appAttrs(app *ferryv1.AppRef, repo, revision, delivery string) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("ferry.app", app.GetNamespace()+"/"+app.GetName()),
		attribute.String("ferry.repo", repo),
		attribute.String("ferry.revision", revision),
		attribute.String("ferry.delivery_id", delivery),
	}
}

// putBundle stores b under its content hash unless it is already there.
func (q *Queue) putBundle(ctx context.Context, b *ferryv1.Bundle) (*ferryv1.BundleRef, error) {
	if b.GetHash() == "" {
		return nil, Terminal(errors.New("bundle has no hash"))
	}
	ref := &ferryv1.BundleRef{Hash: b.GetHash(), ObjectCount: int32(len(b.GetObjects()))}
	if info, err := q.bundles.GetInfo(ctx, b.GetHash()); err == nil {
		ref.Size = int64(info.Size)
		return ref, nil
	} else if !errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("looking up bundle %s: %w", b.GetHash(), err)
	}
	data, err := proto.Marshal(b)
	if err != nil {
		return nil, Terminal(fmt.Errorf("encoding bundle: %w", err))
	}
	if _, err := q.bundles.PutBytes(ctx, b.GetHash(), data); err != nil {
		return nil, fmt.Errorf("storing bundle %s: %w", b.GetHash(), err)
	}
	ref.Size = int64(len(data))
	return ref, nil
}

func (q *Queue) getBundle(ctx context.Context, hash string) (*ferryv1.Bundle, error) {
	data, err := q.bundles.GetBytes(ctx, hash)
	if err != nil {
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil, Terminal(fmt.Errorf("bundle %s is not in the object store", hash))
		}
		return nil, fmt.Errorf("fetching bundle %s: %w", hash, err)
	}
	b := &ferryv1.Bundle{}
	if err := proto.Unmarshal(data, b); err != nil {
		return nil, Terminal(fmt.Errorf("decoding bundle %s: %w", hash, err))
	}
	return b, nil
}

// WatchResults calls fn for every sync result published from now on, until
// ctx is done.
func (q *Queue) WatchResults(ctx context.Context, fn func(*ferryv1.SyncResult)) error {
	cons, err := q.js.OrderedConsumer(ctx, StreamResults, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("watching results: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		res := &ferryv1.SyncResult{}
		if proto.Unmarshal(m.Data(), res) == nil {
			fn(res)
		}
	})
	if err != nil {
		return fmt.Errorf("watching results: %w", err)
	}
	<-ctx.Done()
	cc.Stop()
	return nil
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
