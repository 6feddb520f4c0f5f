package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// BucketHeads is the KV bucket holding the last dispatched head per
// repository and ref, shared by webhooks and the poller.
const BucketHeads = "ferry-heads"

// Heads records, per repository and ref, the newest revision dispatched, so
// that a webhook and the poller never both dispatch one revision.
type Heads struct {
	kv jetstream.KeyValue
}

// Heads returns the head store.
func (q *Queue) Heads() *Heads { return &Heads{kv: q.heads} }

// headKey hashes the key: KV keys allow few characters, and repository
// URLs hold many others.
func headKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "h" + hex.EncodeToString(sum[:16])
}

// Get returns the recorded head for key (normalised repository URL and
// ref), or "" when none is recorded.
func (h *Heads) Get(ctx context.Context, key string) (string, error) {
	e, err := h.kv.Get(ctx, headKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading head of %s: %w", key, err)
	}
	return string(e.Value()), nil
}

// Set records revision as the head for key.
func (h *Heads) Set(ctx context.Context, key, revision string) error {
	if _, err := h.kv.Put(ctx, headKey(key), []byte(revision)); err != nil {
		return fmt.Errorf("recording head of %s: %w", key, err)
	}
	return nil
}
