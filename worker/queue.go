package worker

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
