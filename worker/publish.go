package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
)

// publish sends m on subject with the trace context of ctx in its headers.
// msgID, when set, is JetStream's deduplication key. It returns once
// JetStream has stored the message.
func (q *Queue) publish(ctx context.Context, subject, msgID string, m proto.Message) (*jetstream.PubAck, error) {
	data, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", proto.MessageName(m), err)
	}
	ctx, span := tracer().Start(ctx, "publish "+subject, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(messagingAttrs(subject, semconv.MessagingOperationTypeSend)...))
	defer span.End()
	if msgID != "" {
		span.SetAttributes(semconv.MessagingMessageID(msgID))
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	Inject(ctx, msg.Header)
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := q.js.PublishMsg(ctx, msg, opts...)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, fmt.Errorf("publishing to %s: %w", subject, err)
	}
	span.SetAttributes(attribute.Bool("messaging.nats.duplicate", ack.Duplicate))
	return ack, nil
}

// PublishEvent stores a verified push event. It returns duplicate=true when
// JetStream already holds an event with the same delivery ID.
func (q *Queue) PublishEvent(ctx context.Context, ev *ferryv1.PushEvent) (duplicate bool, err error) {
	id := ""
	if ev.GetDeliveryId() != "" {
		id = ev.GetProvider() + ":" + ev.GetDeliveryId()
	}
	ack, err := q.publish(ctx, EventSubject(ev.GetProvider()), id, ev)
	if err != nil {
		return false, err
	}
	return ack.Duplicate, nil
}

// PublishSync enqueues a sync request. A pending request for the same app is
// replaced, so the newest request wins; the new request inherits trace links
// to the pushes the replaced one stood for, and to the replaced one itself.
func (q *Queue) PublishSync(ctx context.Context, req *ferryv1.SyncRequest) error {
	subject := SyncSubject(req.GetApp().GetNamespace(), req.GetApp().GetName())
	if prev, tp := q.pendingSync(ctx, subject); prev != nil {
		req.Links = append(req.Links, prev.GetLinks()...)
		if tp != "" {
			req.Links = append(req.Links, &ferryv1.TraceLink{Traceparent: tp, DeliveryId: prev.GetDeliveryId(), Reason: "coalesced"})
		}
		if n := len(req.Links); n > maxLinks {
			req.Links = req.Links[n-maxLinks:]
		}
	}
	_, err := q.publish(ctx, subject, "", req)
	return err
}

// PublishApplyIfIdle enqueues an apply of an already rendered bundle (a
// self-heal re-apply, the PostSync phase) unless a sync or apply of the app
// is pending: that newer job brings the cluster back to Git anyway, and this
// one must not replace it. It reports whether it published.
func (q *Queue) PublishApplyIfIdle(ctx context.Context, req *ferryv1.ApplyRequest) (bool, error) {
	ns, name := req.GetApp().GetNamespace(), req.GetApp().GetName()
	for _, p := range [][2]string{{StreamSync, SyncSubject(ns, name)}, {StreamApply, ApplySubject(ns, name)}} {
		s, err := q.js.Stream(ctx, p[0])
		if err != nil {
			return false, err
		}
		if _, err := s.GetLastMsgForSubject(ctx, p[1]); err == nil {
			return false, nil
		} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return false, err
		}
	}
	_, err := q.publish(ctx, ApplySubject(ns, name), "", req)
	return err == nil, err
}

// maxLinks bounds the links one request carries through a long burst.
const maxLinks = 32

// pendingSync returns the request still waiting on subject, if any, and its
// traceparent.
func (q *Queue) pendingSync(ctx context.Context, subject string) (*ferryv1.SyncRequest, string) {
	s, err := q.js.Stream(ctx, StreamSync)
	if err != nil {
		return nil, ""
	}
	raw, err := s.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return nil, ""
	}
	prev := &ferryv1.SyncRequest{}
	if proto.Unmarshal(raw.Data, prev) != nil {
		return nil, ""
	}
	return prev, raw.Header.Get("traceparent")
}
