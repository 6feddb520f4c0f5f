package integration

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/ferrycd/ferry/ingest"
	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/integration/testenv"
	"github.com/ferrycd/ferry/integration/webhook"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	"github.com/ferrycd/ferry/worker"
)

func TestBundlesNoAppReferencesAreCollected(t *testing.T) {
	cp := testenv.StartT(t)
	git := gitserver.New(t)
	repo := git.NewRepo(t, "platform/bundles")
	repo.WriteFile(t, "apps/web/config.yaml", configMap("web-config", "one"))
	first := repo.Commit(t, "one")

	f := startFerry(t, cp)
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	kube := kubernetes.NewForConfigOrDie(cp.Config)
	createNamespace(t, kube, "bundles")
	createApp(t, dyn, &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ferry"},
		Spec: v1alpha1.ApplicationSpec{
			Source:      &v1alpha1.ApplicationSource{RepoURL: repo.URL(), TargetRevision: "main", Path: "apps/web"},
			Destination: v1alpha1.Destination{Server: "https://kubernetes.default.svc", Namespace: "bundles"},
			SyncPolicy:  &v1alpha1.SyncPolicy{Automated: &v1alpha1.Automated{Prune: true, SelfHeal: true}},
		},
	})
	greeting := func() string {
		cm, err := kube.CoreV1().ConfigMaps("bundles").Get(t.Context(), "web-config", metav1.GetOptions{})
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return cm.Data["greeting"]
	}
	waitSynced := func(revision, want string) {
		t.Helper()
		eventually(t, "sync of "+revision[:8], func() (bool, string) {
			app := getApp(t, dyn, "ferry", "web")
			got := greeting()
			return app.Status.Sync.Revision == revision && app.Status.Sync.Status == v1alpha1.SyncStatusSynced && got == want,
				fmt.Sprintf("status=%+v greeting=%q", app.Status.Sync, got)
		})
	}
	waitSynced(first, "one")
	repo.WriteFile(t, "apps/web/config.yaml", configMap("web-config", "two"))
	second := repo.Commit(t, "two")
	body := webhook.Push{
		CloneURL: repo.URL(), FullName: "platform/bundles", DefaultBranch: "main",
		Ref: "refs/heads/main", Before: first, After: second,
		Commits: []webhook.Commit{{ID: second, Message: "two", Modified: []string{"apps/web/config.yaml"}}},
	}.Payload()
	if resp, err := webhook.Send(t.Context(), f.url+"/webhooks/github", "push", "delivery-two", []byte(testSecret), body); err != nil || resp.Status != 202 {
		t.Fatalf("push webhook: %+v %v", resp, err)
	}
	waitSynced(second, "two")
	f.quiet(t)

	app := getApp(t, dyn, "ferry", "web")
	var hashes []string
	for _, h := range app.Status.History {
		if h.BundleHash == "" {
			t.Fatalf("history entry %d (%.8s) names no bundle", h.ID, h.Revision)
		}
		hashes = append(hashes, h.BundleHash)
	}
	if len(hashes) != 2 || hashes[0] == hashes[1] || hashes[1] != app.Status.Sync.BundleHash {
		t.Fatalf("history bundles %v, sync bundle %s: want two different ones, the last the one running", hashes, app.Status.Sync.BundleHash)
	}

	js, err := jetstream.New(f.info.NATS)
	if err != nil {
		t.Fatal(err)
	}
	obs, err := js.ObjectStore(t.Context(), worker.BucketBundles)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutBytes(t.Context(), "sha256-nobody", []byte("a bundle no app names")); err != nil {
		t.Fatal(err)
	}
	stored := func(hash string) bool {
		_, err := obs.GetInfo(t.Context(), hash)
		if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}

	// The collector as `ferry serve` runs it, over ferry's own queue and
	// an app store of its own.
	q, err := worker.New(t.Context(), f.info.NATS, worker.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	store := ingest.NewAppStore(dyn, "ferry")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = store.Start(ctx) }()
	if err := store.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}

	t.Run("a bundle no app names goes; those of the history stay", func(t *testing.T) {
		gc := ingest.NewBundleGC(store, q, ingest.BundleGCOptions{Grace: time.Nanosecond})
		if _, err := gc.Collect(t.Context()); err != nil {
			t.Fatal(err)
		}
		if stored("sha256-nobody") {
			t.Error("the unreferenced bundle is still stored")
		}
		for _, h := range hashes {
			if !stored(h) {
				t.Errorf("bundle %s of the history was deleted", h)
			}
		}
	})

	t.Run("past the last N entries a bundle goes, and the running one still self-heals", func(t *testing.T) {
		gc := ingest.NewBundleGC(store, q, ingest.BundleGCOptions{Grace: time.Nanosecond, History: 1})
		if _, err := gc.Collect(t.Context()); err != nil {
			t.Fatal(err)
		}
		if stored(hashes[0]) || !stored(hashes[1]) {
			t.Fatalf("with one history entry kept: first bundle stored %v, running bundle stored %v", stored(hashes[0]), stored(hashes[1]))
		}
		if err := kube.CoreV1().ConfigMaps("bundles").Delete(t.Context(), "web-config", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "self-heal from the kept bundle", func() (bool, string) {
			got := greeting()
			return got == "two", "greeting " + got
		})
	})
}
