package render

import (
	"context"
	"crypto/rand"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// A render process has no exporter of its own. When ferry's render span is
// recorded, the process records its spans (git reads, kustomize.build,
// helm.template) and sends them back with its result; ferry starts and
// ends the same spans, with their times, under its own render span. The
// sync stays one trace.

// processSpan is one span a render process recorded.
type processSpan struct {
	ID, Parent  [8]byte
	Name        string
	Start, End  time.Time
	Attrs       []processAttr
	StatusError bool
	StatusMsg   string
}

// processAttr is an attribute of a processSpan: gob cannot encode
// attribute.Value.
type processAttr struct {
	Key   string
	Kind  attribute.Type
	Str   string
	Int   int64
	Bool  bool
	Float float64
}

// spanCollector keeps the spans a render process ends.
type spanCollector struct {
	mu    sync.Mutex
	spans []sdktrace.ReadOnlySpan
}

func (c *spanCollector) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (c *spanCollector) OnEnd(s sdktrace.ReadOnlySpan) {
	c.mu.Lock()
	c.spans = append(c.spans, s)
	c.mu.Unlock()
}
func (c *spanCollector) Shutdown(context.Context) error   { return nil }
func (c *spanCollector) ForceFlush(context.Context) error { return nil }

// installSpanCollector makes the render process record the spans of
// traced renders, and only those.
func installSpanCollector() *spanCollector {
	c := &spanCollector{}
	otel.SetTracerProvider(sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())),
		sdktrace.WithSpanProcessor(c),
	))
	return c
}

// tracedContext returns a context whose spans are recorded, under a
// stand-in parent that replay maps to ferry's render span.
func tracedContext(ctx context.Context) (context.Context, [8]byte) {
	var tid trace.TraceID
	var sid trace.SpanID
	_, _ = rand.Read(tid[:])
	_, _ = rand.Read(sid[:])
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
	return trace.ContextWithRemoteSpanContext(ctx, sc), sid
}

// drain returns the spans ended since the last drain, as processSpans.
func (c *spanCollector) drain() []processSpan {
	c.mu.Lock()
	spans := c.spans
	c.spans = nil
	c.mu.Unlock()
	out := make([]processSpan, 0, len(spans))
	for _, s := range spans {
		ps := processSpan{
			ID: s.SpanContext().SpanID(), Parent: s.Parent().SpanID(), Name: s.Name(),
			Start: s.StartTime(), End: s.EndTime(),
			StatusError: s.Status().Code == codes.Error, StatusMsg: s.Status().Description,
		}
		for _, kv := range s.Attributes() {
			a := processAttr{Key: string(kv.Key), Kind: kv.Value.Type()}
			switch a.Kind {
			case attribute.STRING:
				a.Str = kv.Value.AsString()
			case attribute.INT64:
				a.Int = kv.Value.AsInt64()
			case attribute.BOOL:
				a.Bool = kv.Value.AsBool()
			case attribute.FLOAT64:
				a.Float = kv.Value.AsFloat64()
			default:
				a.Kind, a.Str = attribute.STRING, kv.Value.Emit()
			}
			ps.Attrs = append(ps.Attrs, a)
		}
		out = append(out, ps)
	}
	return out
}

// replaySpans starts and ends, under ctx's span, the spans a render
// process recorded below root, with their own times.
func replaySpans(ctx context.Context, root [8]byte, spans []processSpan) {
	slices.SortFunc(spans, func(a, b processSpan) int { return a.Start.Compare(b.Start) })
	ctxs := map[[8]byte]context.Context{root: ctx}
	for _, s := range spans {
		parent, ok := ctxs[s.Parent]
		if !ok {
			parent = ctx
		}
		attrs := make([]attribute.KeyValue, 0, len(s.Attrs))
		for _, a := range s.Attrs {
			switch a.Kind {
			case attribute.INT64:
				attrs = append(attrs, attribute.Int64(a.Key, a.Int))
			case attribute.BOOL:
				attrs = append(attrs, attribute.Bool(a.Key, a.Bool))
			case attribute.FLOAT64:
				attrs = append(attrs, attribute.Float64(a.Key, a.Float))
			default:
				attrs = append(attrs, attribute.String(a.Key, a.Str))
			}
		}
		sctx, span := tracer().Start(parent, s.Name, trace.WithTimestamp(s.Start), trace.WithAttributes(attrs...))
		if s.StatusError {
			span.SetStatus(codes.Error, s.StatusMsg)
		}
		span.End(trace.WithTimestamp(s.End))
		ctxs[s.ID] = sctx
	}
}
