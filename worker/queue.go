package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
)

// Queue is ferry's view of JetStream: it publishes jobs and runs consumers.
type Queue struct {
	js      jetstream.JetStream
	bundles jetstream.ObjectStore
	heads   jetstream.KeyValue
	cfg     Config
	log     *slog.Logger
	locks   keyedMutex
}

// New declares ferry's streams on nc's JetStream and returns a Queue over them.
func New(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger) (*Queue, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if err := EnsureStreams(ctx, js, cfg); err != nil {
		return nil, err
	}
	obs, err := js.ObjectStore(ctx, BucketBundles)
	if err != nil {
		return nil, fmt.Errorf("opening object store %s: %w", BucketBundles, err)
	}
	heads, err := js.KeyValue(ctx, BucketHeads)
	if err != nil {
		return nil, fmt.Errorf("opening KV bucket %s: %w", BucketHeads, err)
	}
	return &Queue{js: js, bundles: obs, heads: heads, cfg: cfg, log: log}, nil
}

// JetStream returns the underlying JetStream handle.
func (q *Queue) JetStream() jetstream.JetStream { return q.js }

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

// ConsumeEvents runs handle for every push event until ctx is done.
func (q *Queue) ConsumeEvents(ctx context.Context, handle func(context.Context, *ferryv1.PushEvent) error) error {
	return q.consume(ctx, StreamEvents, ConsumerDispatch, "dispatch", q.cfg.DispatchParallelism,
		func(ctx context.Context, m jetstream.Msg) error {
			ev := &ferryv1.PushEvent{}
			if err := proto.Unmarshal(m.Data(), ev); err != nil {
				return Terminal(fmt.Errorf("decoding push event: %w", err))
			}
			trace.SpanFromContext(ctx).SetAttributes(
				attribute.String("ferry.repo", ev.GetRepoUrl()),
				attribute.String("ferry.revision", ev.GetAfter()),
				attribute.String("ferry.delivery_id", ev.GetDeliveryId()))
			return handle(ctx, ev)
		})
}

// consume runs handle for each message of the durable consumer, at most
// parallel at a time, until ctx is done. A nil error acks the message; a
// Terminal error, or the last allowed delivery, terminates it; anything else
// is redelivered after a backoff.
func (q *Queue) consume(ctx context.Context, stream, consumer, role string, parallel int, handle func(context.Context, jetstream.Msg) error) error {
	cons, err := q.js.Consumer(ctx, stream, consumer)
	if err != nil {
		return fmt.Errorf("opening consumer %s on %s: %w", consumer, stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(parallel))
	if err != nil {
		return fmt.Errorf("consuming %s: %w", stream, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			q.log.Warn("consumer error", "consumer", consumer, "error", err)
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			_ = m.Nak()
			return nil
		}
		wg.Go(func() {
			defer func() { <-sem }()
			q.process(ctx, role, m, handle)
		})
	}
}

func (q *Queue) process(ctx context.Context, role string, m jetstream.Msg, handle func(context.Context, jetstream.Msg) error) {
	ctx = Extract(ctx, m.Headers())
	ctx, span := tracer().Start(ctx, role, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(messagingAttrs(m.Subject(), semconv.MessagingOperationTypeProcess)...))
	defer span.End()
	delivered := uint64(1)
	if md, err := m.Metadata(); err == nil {
		delivered = md.NumDelivered
		span.SetAttributes(attribute.Int64("messaging.nats.delivered", int64(md.NumDelivered)))
	}

	// Tell JetStream the job is alive while it runs, so a long render is
	// not redelivered to another worker.
	ctx = context.WithValue(ctx, deliveryKey{}, delivered)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(q.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = m.InProgress()
			}
		}
	}()
	err := safeHandle(ctx, m, handle)
	close(done)

	var retry *retryError
	switch {
	case err == nil:
		if err := m.Ack(); err != nil {
			q.log.WarnContext(ctx, "ack failed", "subject", m.Subject(), "error", err)
		}
	case errors.As(err, &retry) && !IsTerminal(err):
		span.SetStatus(codes.Error, err.Error())
		q.log.WarnContext(ctx, "job failed, retrying as asked", "role", role, "subject", m.Subject(), "deliveries", delivered, "retry_in", retry.after, "error", err)
		_ = m.NakWithDelay(retry.after)
	case IsTerminal(err) || delivered >= uint64(q.cfg.MaxDeliver):
		span.SetStatus(codes.Error, err.Error())
		span.RecordError(err)
		q.log.ErrorContext(ctx, "job failed for good", "role", role, "subject", m.Subject(), "deliveries", delivered, "error", err)
		q.deadLetter(ctx, role, m, err)
		_ = m.TermWithReason(truncate(err.Error(), 256))
	default:
		span.SetStatus(codes.Error, err.Error())
		span.RecordError(err)
		delay := backoff(delivered)
		q.log.WarnContext(ctx, "job failed, will retry", "role", role, "subject", m.Subject(), "deliveries", delivered, "retry_in", delay, "error", err)
		_ = m.NakWithDelay(delay)
	}
}

// deadLetter keeps a copy of a job that failed for good, with the reason,
// on ferry.dead.<role>.<original subject>.
func (q *Queue) deadLetter(ctx context.Context, role string, m jetstream.Msg, cause error) {
	h := nats.Header{}
	for k, v := range m.Headers() {
		h[k] = v
	}
	h.Set("Ferry-Dead-Reason", truncate(cause.Error(), 1024))
	h.Set("Ferry-Dead-Subject", m.Subject())
	dl := &nats.Msg{Subject: subjectDead + "." + role + "." + m.Subject(), Data: m.Data(), Header: h}
	if _, err := q.js.PublishMsg(ctx, dl); err != nil {
		q.log.Warn("dead letter not stored", "subject", m.Subject(), "error", err)
	}
}

// safeHandle turns a panic in a handler into a terminal error, so one bad
// job cannot take the worker down.
func safeHandle(ctx context.Context, m jetstream.Msg, handle func(context.Context, jetstream.Msg) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = Terminal(fmt.Errorf("panic handling %s: %v", m.Subject(), r))
		}
	}()
	return handle(ctx, m)
}

func backoff(delivered uint64) time.Duration {
	d := time.Second << min(delivered, 6)
	return min(d, time.Minute)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// keyedMutex serialises work per key (per app) inside one process.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
