package worker

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Streams, consumers and buckets that ferry declares.
const (
	StreamEvents  = "FERRY_EVENTS"
	StreamSync    = "FERRY_SYNC"
	StreamApply   = "FERRY_APPLY"
	StreamResults = "FERRY_RESULTS"
	StreamDead    = "FERRY_DEAD"

	ConsumerDispatch = "dispatch"
	ConsumerRender   = "render"
	ConsumerApply    = "apply"

	BucketBundles = "ferry-bundles"

	subjectEvents  = "ferry.events"
	subjectSync    = "ferry.sync"
	subjectApply   = "ferry.apply"
	subjectResults = "ferry.results"
	subjectDead    = "ferry.dead"
)

// EventSubject is the subject a provider's push events are published on.
func EventSubject(provider string) string { return subjectEvents + "." + token(provider) }

// SyncSubject is the subject of an app's sync requests. The stream keeps one
// message per subject, so a newer request replaces a pending older one.
func SyncSubject(namespace, name string) string {
	return subjectSync + "." + token(namespace) + "." + token(name)
}

// ApplySubject is the subject of an app's apply requests.
func ApplySubject(namespace, name string) string {
	return subjectApply + "." + token(namespace) + "." + token(name)
}

// ResultSubject is the subject of an app's sync results.
func ResultSubject(namespace, name string) string {
	return subjectResults + "." + token(namespace) + "." + token(name)
}

// token makes s safe as one subject token. Kubernetes names may hold dots,
// which NATS reads as token separators; '_' never occurs in such names, so
// the mapping is one-to-one.
func token(s string) string {
	if s == "" {
		return "_"
	}
	return strings.NewReplacer(".", "_", "*", "_", ">", "_", " ", "_").Replace(s)
}

// EnsureStreams declares every stream, consumer and bucket ferry uses. It is
// idempotent: running it again updates the configuration in place.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	streams := []jetstream.StreamConfig{
		{
			Name:        StreamEvents,
			Description: "verified push events, deduplicated by delivery ID",
			Subjects:    []string{subjectEvents + ".>"},
			Retention:   jetstream.WorkQueuePolicy,
			Duplicates:  cfg.DuplicateWindow,
			MaxAge:      24 * time.Hour,
		},
		{
			Name:              StreamSync,
			Description:       "sync requests, the newest per app",
			Subjects:          []string{subjectSync + ".>"},
			Retention:         jetstream.WorkQueuePolicy,
			MaxMsgsPerSubject: 1,
			Discard:           jetstream.DiscardOld,
			Duplicates:        cfg.DuplicateWindow,
		},
		{
			Name:              StreamApply,
			Description:       "apply requests referencing rendered bundles, the newest per app",
			Subjects:          []string{subjectApply + ".>"},
			Retention:         jetstream.WorkQueuePolicy,
			MaxMsgsPerSubject: 1,
			Discard:           jetstream.DiscardOld,
		},
		{
			Name:        StreamDead,
			Description: "jobs that failed for good, with the reason, for inspection",
			Subjects:    []string{subjectDead + ".>"},
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      7 * 24 * time.Hour,
			MaxMsgs:     10000,
		},
		{
			Name:              StreamResults,
			Description:       "sync results, the last 20 per app",
			Subjects:          []string{subjectResults + ".>"},
			Retention:         jetstream.LimitsPolicy,
			MaxMsgsPerSubject: 20,
			MaxAge:            7 * 24 * time.Hour,
		},
	}
	for _, sc := range streams {
		sc.Storage = jetstream.FileStorage
		sc.Replicas = cfg.Replicas
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("declaring stream %s: %w", sc.Name, err)
		}
	}
	consumers := []struct {
		stream string
		name   string
		limit  int
	}{
		{StreamEvents, ConsumerDispatch, cfg.DispatchParallelism},
		{StreamSync, ConsumerRender, cfg.RenderParallelism},
		{StreamApply, ConsumerApply, cfg.ApplyParallelism},
	}
	for _, c := range consumers {
		_, err := js.CreateOrUpdateConsumer(ctx, c.stream, jetstream.ConsumerConfig{
			Durable:   c.name,
			AckPolicy: jetstream.AckExplicitPolicy,
			AckWait:   cfg.AckWait,
			// Unlimited here: the worker ends a job after cfg.MaxDeliver
			// plain failures itself, while an app's retry policy may ask
			// for more (job.RetryAfter).
			MaxDeliver:    -1,
			MaxAckPending: 256,
		})
		if err != nil {
			return fmt.Errorf("declaring consumer %s on %s: %w", c.name, c.stream, err)
		}
	}
	_, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      BucketBundles,
		Description: "rendered bundles keyed by content hash",
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Compression: true,
		// Create or update: a bucket declared before bundles expired gets
		// its TTL and budget in place, keeping what it holds.
		TTL:      cfg.BundleTTL,
		MaxBytes: cfg.BundleMaxBytes,
	})
	if err != nil {
		return fmt.Errorf("declaring object store %s: %w", BucketBundles, err)
	}
	_, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketHeads,
		Description: "last dispatched head per repository and ref",
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		History:     1,
	})
	if err != nil {
		return fmt.Errorf("declaring KV bucket %s: %w", BucketHeads, err)
	}
	return nil
}
