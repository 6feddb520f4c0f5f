package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ferrycd/ferry/ingest"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	"github.com/ferrycd/ferry/worker"
)

var _ ingest.BundleStore = (*worker.Queue)(nil)

// putBundles stores each hash in the queue's real bundle store.
func putBundles(t *testing.T, hashes ...string) jetstream.ObjectStore {
	t.Helper()
	obs, err := queue.JetStream().ObjectStore(t.Context(), worker.BucketBundles)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hashes {
		if _, err := obs.PutBytes(t.Context(), h, []byte("bundle "+h)); err != nil {
			t.Fatal(err)
		}
	}
	return obs
}

// present returns which of hashes the bundle store still holds.
func present(t *testing.T, obs jetstream.ObjectStore, hashes ...string) []string {
	t.Helper()
	var out []string
	for _, h := range hashes {
		_, err := obs.GetInfo(t.Context(), h)
		switch {
		case err == nil:
			out = append(out, h)
		case !errors.Is(err, jetstream.ErrObjectNotFound):
			t.Fatal(err)
		}
	}
	return out
}

func appWithBundles(name, current string, history ...string) *v1alpha1.Application {
	app := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Namespace: "ferry", Name: name}}
	app.Status.Sync = v1alpha1.SyncStatus{Status: v1alpha1.SyncStatusSynced, Revision: "abc", BundleHash: current}
	for i, h := range history {
		app.Status.History = append(app.Status.History, v1alpha1.SyncHistory{ID: int64(i), Revision: "abc", BundleHash: h})
	}
	return app
}

// notSynced is an app lister whose informer has not synced: its empty
// list must not read as "no bundle is referenced".
type notSynced struct{ apps }

func (notSynced) Synced() bool { return false }

// failing is an app lister that cannot list.
type failing struct{}

func (failing) ListApplications(context.Context) ([]*v1alpha1.Application, error) {
	return nil, errors.New("API server unreachable")
}

func TestBundleGC(t *testing.T) {
	p := func(s string) string { return "sha256-gc-" + s }

	t.Run("keeps what status and the last history entries name, deletes the rest", func(t *testing.T) {
		all := []string{p("web-now"), p("web-h0"), p("web-h1"), p("web-h2"), p("web-h3"), p("web-h4"), p("api-now"), p("orphan")}
		obs := putBundles(t, all...)
		list := apps{
			appWithBundles("web", p("web-now"), p("web-h0"), p("web-h1"), p("web-h2"), p("web-h3"), p("web-h4")),
			appWithBundles("api", p("api-now")),
			appWithBundles("never-synced", ""),
		}
		gc := ingest.NewBundleGC(list, queue, ingest.BundleGCOptions{Grace: time.Nanosecond, History: 3})
		if _, err := gc.Collect(t.Context()); err != nil {
			t.Fatal(err)
		}
		want := []string{p("web-now"), p("web-h2"), p("web-h3"), p("web-h4"), p("api-now")}
		if got := present(t, obs, all...); !slices.Equal(got, want) {
			t.Errorf("left %v, want %v", got, want)
		}
	})

	t.Run("the default keeps every history entry the status holds", func(t *testing.T) {
		var hist []string
		for i := range v1alpha1.HistoryLimit {
			hist = append(hist, p(fmt.Sprintf("full-h%d", i)))
		}
		obs := putBundles(t, append([]string{p("full-gone")}, hist...)...)
		opts := ingest.DefaultBundleGCOptions()
		opts.Grace = time.Nanosecond
		gc := ingest.NewBundleGC(apps{appWithBundles("full", hist[len(hist)-1], hist...)}, queue, opts)
		if _, err := gc.Collect(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := present(t, obs, append([]string{p("full-gone")}, hist...)...); !slices.Equal(got, hist) {
			t.Errorf("left %v, want the %d history bundles", got, len(hist))
		}
	})

	t.Run("a bundle younger than the grace period stays, referenced or not", func(t *testing.T) {
		obs := putBundles(t, p("young"))
		gc := ingest.NewBundleGC(apps{}, queue, ingest.BundleGCOptions{Grace: time.Hour})
		if _, err := gc.Collect(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := present(t, obs, p("young")); len(got) != 1 {
			t.Fatal("a bundle stored a moment ago was deleted within the grace period")
		}
		// Once past its grace, the same bundle goes.
		time.Sleep(20 * time.Millisecond)
		gc = ingest.NewBundleGC(apps{}, queue, ingest.BundleGCOptions{Grace: 10 * time.Millisecond})
		if _, err := gc.Collect(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := present(t, obs, p("young")); len(got) != 0 {
			t.Error("an unreferenced bundle past its grace period was kept")
		}
	})

	t.Run("deletes nothing when the apps cannot be listed or are not all known yet", func(t *testing.T) {
		obs := putBundles(t, p("unlisted"))
		for _, lister := range []ingest.AppLister{failing{}, notSynced{}} {
			gc := ingest.NewBundleGC(lister, queue, ingest.BundleGCOptions{Grace: time.Nanosecond})
			if n, err := gc.Collect(t.Context()); err == nil || n != 0 {
				t.Errorf("%T: collected %d, err %v; want an error and nothing deleted", lister, n, err)
			}
		}
		if got := present(t, obs, p("unlisted")); len(got) != 1 {
			t.Error("a bundle was deleted while the apps were unknown")
		}
	})

	t.Run("Start collects every interval until its context ends", func(t *testing.T) {
		obs := putBundles(t, p("ticked"))
		ctx, cancel := context.WithCancel(t.Context())
		gc := ingest.NewBundleGC(apps{}, queue, ingest.BundleGCOptions{Interval: 10 * time.Millisecond, Grace: time.Nanosecond})
		done := make(chan error, 1)
		go func() { done <- gc.Start(ctx) }()
		deadline := time.Now().Add(30 * time.Second)
		for len(present(t, obs, p("ticked"))) != 0 {
			if time.Now().After(deadline) {
				t.Fatal("Start never collected the unreferenced bundle")
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start returned %v", err)
		}
	})
}
