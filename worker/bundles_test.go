package worker_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
	"github.com/ferrycd/ferry/worker"
)

// bundleStream reads the configuration of the stream under the bundle
// store, where TTL and budget live.
func bundleStream(t *testing.T, js jetstream.JetStream) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(t.Context(), "OBJ_"+worker.BucketBundles)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.Config
}

func bundleStore(t *testing.T, q *worker.Queue) jetstream.ObjectStore {
	t.Helper()
	obs, err := q.JetStream().ObjectStore(t.Context(), worker.BucketBundles)
	if err != nil {
		t.Fatal(err)
	}
	return obs
}

func storedBundles(t *testing.T, obs jetstream.ObjectStore) []string {
	t.Helper()
	infos, err := obs.List(t.Context())
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range infos {
		names = append(names, i.Name)
	}
	slices.Sort(names)
	return names
}

func TestBundleStoreHasATTLAndABudget(t *testing.T) {
	t.Run("a new store gets the configured TTL and budget", func(t *testing.T) {
		cfg := worker.DefaultConfig()
		cfg.BundleTTL, cfg.BundleMaxBytes = 3*time.Hour, 64<<20
		q := newQueue(t, cfg)
		sc := bundleStream(t, q.JetStream())
		if sc.MaxAge != 3*time.Hour || sc.MaxBytes != 64<<20 {
			t.Errorf("bundle store max age %s, max bytes %d; want 3h and 64 MiB", sc.MaxAge, sc.MaxBytes)
		}
		if sc.Discard != jetstream.DiscardNew {
			t.Errorf("bundle store discards %v; a full store must refuse new bundles, not drop chunks of old ones", sc.Discard)
		}
	})

	t.Run("the defaults are a week and 1 GiB", func(t *testing.T) {
		d := worker.DefaultConfig()
		if d.BundleTTL != 7*24*time.Hour || d.BundleMaxBytes != 1<<30 {
			t.Errorf("defaults: TTL %s, budget %d", d.BundleTTL, d.BundleMaxBytes)
		}
	})

	t.Run("a store made without a TTL is updated in place and keeps its bundles", func(t *testing.T) {
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
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		// As an earlier ferry declared it.
		old, err := js.CreateObjectStore(t.Context(), jetstream.ObjectStoreConfig{
			Bucket: worker.BucketBundles, Description: "rendered bundles keyed by content hash",
			Storage: jetstream.FileStorage, Replicas: 1, Compression: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := old.PutBytes(t.Context(), "sha256-old", []byte("bundle")); err != nil {
			t.Fatal(err)
		}
		for range 2 { // twice: declaring is idempotent
			if _, err := worker.New(t.Context(), nc, worker.DefaultConfig(), nil); err != nil {
				t.Fatalf("declaring over a store without TTL: %v", err)
			}
		}
		sc := bundleStream(t, js)
		if sc.MaxAge != 7*24*time.Hour || sc.MaxBytes != 1<<30 {
			t.Errorf("updated store: max age %s, max bytes %d", sc.MaxAge, sc.MaxBytes)
		}
		if got, err := old.GetBytes(t.Context(), "sha256-old"); err != nil || string(got) != "bundle" {
			t.Errorf("the bundle stored before the update: %q, %v", got, err)
		}
	})

	t.Run("a TTL below a second is refused", func(t *testing.T) {
		cfg := worker.DefaultConfig()
		cfg.BundleTTL = time.Millisecond
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
		if _, err := worker.New(t.Context(), nc, cfg, nil); !errors.Is(err, worker.ErrInvalidOption) {
			t.Errorf("got %v, want ErrInvalidOption", err)
		}
	})
}

func TestCollectBundles(t *testing.T) {
	q := newQueue(t, worker.DefaultConfig())
	obs := bundleStore(t, q)
	for _, h := range []string{"sha256-a", "sha256-b", "sha256-c", "sha256-pending"} {
		if _, err := obs.PutBytes(t.Context(), h, []byte(h)); err != nil {
			t.Fatal(err)
		}
	}
	// An apply request waiting in the queue names its bundle.
	if ok, err := q.PublishApplyIfIdle(t.Context(), &ferryv1.ApplyRequest{
		App: &ferryv1.AppRef{Namespace: "ferry", Name: "waiting"}, Revision: "abc",
		Bundle: &ferryv1.BundleRef{Hash: "sha256-pending"},
	}); err != nil || !ok {
		t.Fatalf("publishing an apply request: %v, %v", ok, err)
	}

	var seen []string
	deleted, err := q.CollectBundles(t.Context(), func(hash string, stored time.Time) bool {
		seen = append(seen, hash)
		if stored.IsZero() || time.Since(stored) < 0 {
			t.Errorf("bundle %s has stored time %s", hash, stored)
		}
		return hash == "sha256-b"
	})
	if err != nil {
		t.Fatal(err)
	}
	if deleted != 2 {
		t.Errorf("deleted %d bundles, want 2", deleted)
	}
	if got, want := storedBundles(t, obs), []string{"sha256-b", "sha256-pending"}; !slices.Equal(got, want) {
		t.Errorf("left %v, want %v: the kept one and the one a waiting apply names", got, want)
	}
	if slices.Contains(seen, "sha256-pending") {
		t.Error("keep was asked about a bundle a waiting apply names")
	}

	t.Run("a second collection finds nothing to delete", func(t *testing.T) {
		n, err := q.CollectBundles(t.Context(), func(hash string, _ time.Time) bool { return hash == "sha256-b" })
		if err != nil || n != 0 {
			t.Errorf("second collection: %d deleted, %v", n, err)
		}
	})
	t.Run("an empty store is not an error", func(t *testing.T) {
		empty := newQueue(t, worker.DefaultConfig())
		if n, err := empty.CollectBundles(t.Context(), func(string, time.Time) bool { return false }); err != nil || n != 0 {
			t.Errorf("got %d, %v", n, err)
		}
	})
}

func TestBundlesExpireUnlessRenewed(t *testing.T) {
	cfg := worker.DefaultConfig()
	cfg.BundleTTL = 4 * time.Second
	q := newQueue(t, cfg)
	obs := bundleStore(t, q)
	for _, h := range []string{"sha256-running", "sha256-rotated"} {
		if _, err := obs.PutBytes(t.Context(), h, []byte(h)); err != nil {
			t.Fatal(err)
		}
	}
	if renewed, err := q.RenewBundle(t.Context(), "sha256-running"); err != nil || renewed {
		t.Fatalf("renewing a fresh bundle: %v, %v; want no renewal", renewed, err)
	}
	before, err := obs.GetInfo(t.Context(), "sha256-running")
	if err != nil {
		t.Fatal(err)
	}
	// Past half the TTL, the bundle an app runs is stored again.
	time.Sleep(cfg.BundleTTL/2 + 200*time.Millisecond)
	if renewed, err := q.RenewBundle(t.Context(), "sha256-running"); err != nil || !renewed {
		t.Fatalf("renewing a bundle past half its TTL: %v, %v; want a renewal", renewed, err)
	}
	after, err := obs.GetInfo(t.Context(), "sha256-running")
	if err != nil {
		t.Fatal(err)
	}
	if !after.ModTime.After(before.ModTime) {
		t.Errorf("renewal kept the stored time %s", after.ModTime)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		_, err := obs.GetInfo(ctx, "sha256-rotated")
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the bundle that was not renewed is still stored after its TTL: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got, err := obs.GetBytes(t.Context(), "sha256-running"); err != nil || string(got) != "sha256-running" {
		t.Errorf("the renewed bundle: %q, %v", got, err)
	}
	if renewed, err := q.RenewBundle(t.Context(), "sha256-gone"); err != nil || renewed {
		t.Errorf("renewing a missing bundle: %v, %v; want nothing and no error", renewed, err)
	}
}
