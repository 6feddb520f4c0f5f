package worker

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

const tracerName = "github.com/ferrycd/ferry/worker"

func tracer() trace.Tracer { return otel.Tracer(tracerName) }

// propagator is fixed to W3C trace context rather than read from the global,
// so that every ferry role speaks the same header whatever the host set up.
var propagator = propagation.TraceContext{}

// HeaderCarrier adapts NATS message headers to OpenTelemetry's TextMapCarrier.
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the first value of key.
func (c HeaderCarrier) Get(key string) string { return nats.Header(c).Get(key) }

// Set replaces the values of key.
func (c HeaderCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }

// Keys lists the header names.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes the span context of ctx into h.
func Inject(ctx context.Context, h nats.Header) { propagator.Inject(ctx, HeaderCarrier(h)) }

// Extract returns ctx carrying the remote span context found in h.
func Extract(ctx context.Context, h nats.Header) context.Context {
	return propagator.Extract(ctx, HeaderCarrier(h))
}

var natsSystem = semconv.MessagingSystemKey.String("nats")

func messagingAttrs(subject string, op attribute.KeyValue) []attribute.KeyValue {
	return []attribute.KeyValue{natsSystem, semconv.MessagingDestinationName(subject), op}
}

// remoteSpanContext parses a W3C traceparent into a span context.
func remoteSpanContext(traceparent string) trace.SpanContext {
	if traceparent == "" {
		return trace.SpanContext{}
	}
	h := nats.Header{}
	h.Set("traceparent", traceparent)
	// An empty context, not the caller's: a traceparent that does not
	// parse must give no span context, not the caller's own span.
	return trace.SpanContextFromContext(Extract(context.Background(), h))
}

// Traceparent returns the W3C traceparent of the span in ctx, or "".
func Traceparent(ctx context.Context) string {
	h := nats.Header{}
	Inject(ctx, h)
	return h.Get("traceparent")
}
