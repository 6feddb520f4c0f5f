package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
	"github.com/ferrycd/ferry/proto/job"
)

// ConsumeEvents runs handle for every push event until ctx is done.
func (q *Queue) ConsumeEvents(ctx context.Context, handle func(context.Context, *ferryv1.PushEvent) error) error {
	return q.consume(ctx, StreamEvents, ConsumerDispatch, "dispatch", q.cfg.DispatchParallelism,
		func(ctx context.Context, m jetstream.Msg) error {
			ev := &ferryv1.PushEvent{}
			if err := proto.Unmarshal(m.Data(), ev); err != nil {
				return job.Terminal(fmt.Errorf("decoding push event: %w", err))
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
	ctx = job.WithAttempt(ctx, int(delivered))
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

	retryIn, retry := job.RetryDelay(err)
	switch {
	case err == nil:
		if err := m.Ack(); err != nil {
			q.log.WarnContext(ctx, "ack failed", "subject", m.Subject(), "error", err)
		}
	case retry:
		span.SetStatus(codes.Error, err.Error())
		q.log.WarnContext(ctx, "job failed, retrying as asked", "role", role, "subject", m.Subject(), "deliveries", delivered, "retry_in", retryIn, "error", err)
		_ = m.NakWithDelay(retryIn)
	case job.IsTerminal(err) || delivered >= uint64(q.cfg.MaxDeliver):
		span.SetStatus(codes.Error, err.Error())
		span.RecordError(err)
		q.log.ErrorContext(ctx, "job failed for good", "role", role, "subject", m.Subject(), "deliveries", delivered, "error", err)
		q.deadLetter(ctx, role, m, err)
		_ = m.TermWithReason(truncate(err.Error(), 256))
	default:
		span.SetStatus(codes.Error, err.Error())
		span.RecordError(err)
		delay := redeliveryBackoff.Delay(int(delivered))
		q.log.WarnContext(ctx, "job failed, will retry", "role", role, "subject", m.Subject(), "deliveries", delivered, "retry_in", delay, "error", err)
		_ = m.NakWithDelay(delay)
	}
}

// safeHandle turns a panic in a handler into a terminal error, so one bad
// job cannot take the worker down.
func safeHandle(ctx context.Context, m jetstream.Msg, handle func(context.Context, jetstream.Msg) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = job.Terminal(fmt.Errorf("panic handling %s: %v", m.Subject(), r))
		}
	}()
	return handle(ctx, m)
}

// redeliveryBackoff spaces the redeliveries of a job that failed without
// saying when to come back.
var redeliveryBackoff = job.Backoff{First: 2 * time.Second, Factor: 2, Max: time.Minute}
