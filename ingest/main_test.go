package ingest_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/ferrycd/ferry/worker"
)

// queue is a real JetStream, embedded, shared by the tests of this package.
var (
	embedded *worker.Embedded
	queue    *worker.Queue
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferry-ingest-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx := context.Background()
	// A real SDK provider, so that spans have IDs that travel in headers.
	otel.SetTracerProvider(sdktrace.NewTracerProvider())
	embedded, err = worker.StartEmbedded(ctx, worker.EmbeddedOptions{DataDir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	nc, err := embedded.Connect("ingest-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	queue, err = worker.New(ctx, nc, worker.DefaultConfig(), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	nc.Close()
	embedded.Shutdown()
	os.RemoveAll(dir)
	os.Exit(code)
}

// lastSeq is the sequence of the last message stored in stream; it only
// grows, so comparing it before and after tells whether anything was
// published.
func lastSeq(t testing.TB, stream string) uint64 {
	t.Helper()
	s, err := queue.JetStream().Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// lastMsg returns the last message stored in stream on subject.
func lastMsg(t testing.TB, stream, subject string) *jetstream.RawStreamMsg {
	t.Helper()
	s, err := queue.JetStream().Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(context.Background(), subject)
	if err != nil {
		t.Fatalf("no message on %s: %v", subject, err)
	}
	return m
}
