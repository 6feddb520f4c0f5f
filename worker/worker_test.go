package worker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
	"github.com/ferrycd/ferry/proto/job"
	"github.com/ferrycd/ferry/worker"
)

func newQueue(t *testing.T, cfg worker.Config) *worker.Queue {
	t.Helper()
	emb, err := worker.StartEmbedded(t.Context(), worker.EmbeddedOptions{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	nc, err := emb.Connect(t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	q, err := worker.New(t.Context(), nc, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// recorder is a Renderer and Applier that records what it was asked.
type recorder struct {
	mu      sync.Mutex
	renders []*ferryv1.SyncRequest
	applies []*ferryv1.ApplyRequest
	applied chan struct{}
	fail    func(*ferryv1.SyncRequest) error
}

var (
	_ worker.Renderer = (*recorder)(nil)
	_ worker.Applier  = (*recorder)(nil)
)

func (r *recorder) Render(_ context.Context, req *ferryv1.SyncRequest) (*ferryv1.RenderResult, error) {
	r.mu.Lock()
	r.renders = append(r.renders, req)
	r.mu.Unlock()
	if r.fail != nil {
		if err := r.fail(req); err != nil {
			return nil, err
		}
	}
	b := &ferryv1.Bundle{Hash: "h-" + req.GetRevision(), Objects: [][]byte{[]byte(`{"kind":"ConfigMap"}`)}}
	return &ferryv1.RenderResult{Bundle: b, Revision: req.GetRevision()}, nil
}

func (r *recorder) Apply(_ context.Context, req *ferryv1.ApplyRequest, b *ferryv1.Bundle) (*ferryv1.SyncResult, error) {
	r.mu.Lock()
	r.applies = append(r.applies, req)
	r.mu.Unlock()
	r.applied <- struct{}{}
	return &ferryv1.SyncResult{App: req.GetApp(), Revision: req.GetRevision(), Phase: ferryv1.SyncPhase_SYNC_PHASE_SUCCEEDED}, nil
}

func TestCoalescing(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans)))
	q := newQueue(t, worker.DefaultConfig())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	// A burst of 10 pushes to one app before any worker picks them up.
	for i := range 10 {
		pctx, span := otel.Tracer("test").Start(ctx, fmt.Sprintf("push %d", i))
		err := q.PublishSync(pctx, &ferryv1.SyncRequest{
			App: &ferryv1.AppRef{Namespace: "ferry", Name: "blog"}, Revision: fmt.Sprintf("rev-%d", i),
			DeliveryId: fmt.Sprintf("d-%d", i), RequestedAt: timestamppb.Now(),
		})
		span.End()
		if err != nil {
			t.Fatal(err)
		}
	}
	rec := &recorder{applied: make(chan struct{}, 10)}
	go func() { _ = q.RunRender(ctx, rec) }()
	go func() { _ = q.RunApply(ctx, rec) }()
	select {
	case <-rec.applied:
	case <-time.After(30 * time.Second):
		t.Fatal("nothing was applied")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.renders) != 1 || rec.renders[0].GetRevision() != "rev-9" {
		t.Fatalf("rendered %d requests (first %v), want only the newest, rev-9", len(rec.renders), rec.renders)
	}
	if got := len(rec.renders[0].GetLinks()); got != 9 {
		t.Fatalf("newest request links %d coalesced pushes, want 9", got)
	}
	if rec.applies[0].GetRevision() != "rev-9" || rec.applies[0].GetBundle().GetHash() != "h-rev-9" {
		t.Errorf("apply request %v", rec.applies[0])
	}
	var renderSpan sdktrace.ReadOnlySpan
	for _, s := range spans.GetSpans().Snapshots() {
		if s.Name() == "render" {
			renderSpan = s
		}
	}
	if renderSpan == nil {
		t.Fatal("no render span")
	}
	if n := len(renderSpan.Links()); n != 9 {
		t.Errorf("render span has %d links, want 9", n)
	}
}

func TestTerminalErrorsAreNotRetried(t *testing.T) {
	cfg := worker.DefaultConfig()
	cfg.MaxDeliver = 3
	q := newQueue(t, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	calls := make(chan string, 10)
	rec := &recorder{applied: make(chan struct{}, 10), fail: func(req *ferryv1.SyncRequest) error {
		calls <- req.GetRevision()
		if req.GetRevision() == "bad" {
			return job.Terminal(fmt.Errorf("broken YAML"))
		}
		return nil
	}}
	go func() { _ = q.RunRender(ctx, rec) }()
	go func() { _ = q.RunApply(ctx, rec) }()
	if err := q.PublishSync(ctx, &ferryv1.SyncRequest{App: &ferryv1.AppRef{Namespace: "ferry", Name: "bad"}, Revision: "bad"}); err != nil {
		t.Fatal(err)
	}
	// A good app queued after the poison one still goes through.
	if err := q.PublishSync(ctx, &ferryv1.SyncRequest{App: &ferryv1.AppRef{Namespace: "ferry", Name: "good"}, Revision: "good"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rec.applied:
	case <-time.After(30 * time.Second):
		t.Fatal("the good app was not applied")
	}
	// Give a wrongly redelivered poison job the chance to show up: the
	// backoff after a first failure is 2 s.
	time.Sleep(2500 * time.Millisecond)
	close(calls)
	bad := 0
	for c := range calls {
		if c == "bad" {
			bad++
		}
	}
	if bad != 1 {
		t.Fatalf("the poison job ran %d times, want 1", bad)
	}
	s, err := q.JetStream().Stream(ctx, worker.StreamDead)
	if err != nil {
		t.Fatal(err)
	}
	dl, err := s.GetLastMsgForSubject(ctx, "ferry.dead.render."+worker.SyncSubject("ferry", "bad"))
	if err != nil {
		t.Fatalf("no dead letter for the poison job: %v", err)
	}
	if reason := dl.Header.Get("Ferry-Dead-Reason"); reason != "broken YAML" {
		t.Errorf("dead letter reason %q, want %q", reason, "broken YAML")
	}
	rs, err := q.JetStream().Stream(ctx, worker.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := rs.GetLastMsgForSubject(ctx, worker.ResultSubject("ferry", "bad"))
	if err != nil {
		t.Fatalf("no result published for the failed render: %v", err)
	}
	res := &ferryv1.SyncResult{}
	if err := proto.Unmarshal(raw.Data, res); err != nil {
		t.Fatal(err)
	}
	if res.GetPhase() != ferryv1.SyncPhase_SYNC_PHASE_FAILED || res.GetMessage() != "broken YAML" || res.GetRevision() != "bad" {
		t.Errorf("result %v, want a failure of revision bad saying broken YAML", res)
	}
}
