package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/ferrycd/ferry/cmd/ferry/cli"
	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/integration/testenv"
	"github.com/ferrycd/ferry/integration/webhook"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	"github.com/ferrycd/ferry/worker"
)

// quiet waits until no job is pending or running on the dispatch, render
// and apply consumers.
func (f *ferry) quiet(t *testing.T) {
	t.Helper()
	js, err := jetstream.New(f.info.NATS)
	if err != nil {
		t.Fatal(err)
	}
	consumers := [][2]string{{worker.StreamEvents, worker.ConsumerDispatch}, {worker.StreamSync, worker.ConsumerRender}, {worker.StreamApply, worker.ConsumerApply}}
	eventually(t, "the queues to drain", func() (bool, string) {
		for _, c := range consumers {
			cons, err := js.Consumer(t.Context(), c[0], c[1])
			if err != nil {
				return false, err.Error()
			}
			info, err := cons.Info(t.Context())
			if err != nil {
				return false, err.Error()
			}
			if info.NumPending > 0 || info.NumAckPending > 0 {
				return false, fmt.Sprintf("%s: %d pending, %d running", c[1], info.NumPending, info.NumAckPending)
			}
		}
		return true, ""
	})
}

// results counts the sync results published per app.
func (f *ferry) results(t *testing.T) map[string]int {
	t.Helper()
	js, err := jetstream.New(f.info.NATS)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), worker.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter("ferry.results.>"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for subj, n := range info.State.Subjects {
		out[strings.TrimPrefix(subj, "ferry.results.ferry.")] = int(n)
	}
	return out
}

func TestPushSyncsExactlyTheAppsItTouches(t *testing.T) {
	cp := testenv.StartT(t)
	git := gitserver.New(t)
	repo := git.NewRepo(t, "platform/fifty")
	const n = 50
	for i := range n {
		repo.WriteFile(t, fmt.Sprintf("apps/app-%02d/config.yaml", i), configMap(fmt.Sprintf("app-%02d", i), "v1"))
	}
	first := repo.Commit(t, "fifty apps")
	writes := &writeCounter{}
	f := startFerry(t, cp, func(o *cli.ServeOptions) { o.RestConfig = writes.config(cp.Config) })
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	kube := kubernetes.NewForConfigOrDie(cp.Config)
	createNamespace(t, kube, "fifty")
	for i := range n {
		createApp(t, dyn, &v1alpha1.Application{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%02d", i), Namespace: "ferry"},
			Spec: v1alpha1.ApplicationSpec{
				Source:      &v1alpha1.ApplicationSource{RepoURL: repo.URL(), TargetRevision: "main", Path: fmt.Sprintf("apps/app-%02d", i)},
				Destination: v1alpha1.Destination{Namespace: "fifty"},
				SyncPolicy:  &v1alpha1.SyncPolicy{Automated: &v1alpha1.Automated{}},
			},
		})
	}
	time.Sleep(500 * time.Millisecond)
	send := func(delivery string, p webhook.Push) {
		t.Helper()
		p.CloneURL, p.FullName, p.DefaultBranch, p.Ref = repo.URL(), "platform/fifty", "main", "refs/heads/main"
		resp, err := webhook.Send(t.Context(), f.url+"/webhooks/github", "push", delivery, []byte(testSecret), p.Payload())
		if err != nil || resp.Status != 202 {
			t.Fatalf("webhook: %v %+v", err, resp)
		}
	}
	// The branch is new to ferry: the payload cannot tell what changed, so
	// every app on it syncs.
	send("fifty-1", webhook.Push{Before: strings.Repeat("0", 40), After: first, Created: true,
		Commits: []webhook.Commit{{ID: first, Added: []string{"apps/app-00/config.yaml"}}}})
	eventually(t, "all 50 apps synced", func() (bool, string) {
		synced := 0
		for i := range n {
			if a := getApp(t, dyn, "ferry", fmt.Sprintf("app-%02d", i)); a.Status.Sync.Revision == first {
				synced++
			}
		}
		return synced == n, fmt.Sprintf("%d of %d synced", synced, n)
	})
	f.quiet(t)
	// Created apps sync by themselves, and the push may have reached some
	// before that: count from here.
	base := f.results(t)

	repo.WriteFile(t, "apps/app-07/config.yaml", configMap("app-07", "v2"))
	repo.WriteFile(t, "docs/notes.md", "not an input of any app\n")
	second := repo.Commit(t, "bump app-07")
	send("fifty-2", webhook.Push{Before: first, After: second,
		Commits: []webhook.Commit{{ID: second, Modified: []string{"apps/app-07/config.yaml"}, Added: []string{"docs/notes.md"}}}})
	eventually(t, "app-07 synced at the second commit", func() (bool, string) {
		a := getApp(t, dyn, "ferry", "app-07")
		return a.Status.Sync.Revision == second, fmt.Sprintf("%+v", a.Status.Sync)
	})
	f.quiet(t)

	got := f.results(t)
	for i := range n {
		name := fmt.Sprintf("app-%02d", i)
		want := 0
		if i == 7 {
			want = 1
		}
		if got[name]-base[name] != want {
			t.Errorf("%s was synced %d times by the push, want %d", name, got[name]-base[name], want)
		}
	}
	cm, err := kube.CoreV1().ConfigMaps("fifty").Get(t.Context(), "app-07", metav1.GetOptions{})
	if err != nil || cm.Data["greeting"] != "v2" {
		t.Errorf("app-07's ConfigMap: %v %v", cm.Data, err)
	}

	t.Run("a push that touches no app's inputs costs no API write and no render", func(t *testing.T) {
		f.quiet(t)
		w0, r0 := writes.count(), f.results(t)
		repo.WriteFile(t, "docs/notes.md", "still not an input\n")
		third := repo.Commit(t, "docs only")
		send("fifty-3", webhook.Push{Before: second, After: third,
			Commits: []webhook.Commit{{ID: third, Modified: []string{"docs/notes.md"}}}})
		f.quiet(t)
		if w := writes.count() - w0; w != 0 {
			t.Errorf("%d API writes for a push touching no app", w)
		}
		r1 := f.results(t)
		for k, v := range r1 {
			if v != r0[k] {
				t.Errorf("%s synced again (%d -> %d)", k, r0[k], v)
			}
		}
		second = third
	})

	t.Run("a redelivered push changes nothing", func(t *testing.T) {
		send("fifty-2", webhook.Push{Before: first, After: second,
			Commits: []webhook.Commit{{ID: second, Modified: []string{"apps/app-07/config.yaml"}}}})
		send("fifty-2-redelivered-later", webhook.Push{Before: first, After: second,
			Commits: []webhook.Commit{{ID: second, Modified: []string{"apps/app-07/config.yaml"}}}})
		f.quiet(t)
		if got := f.results(t)["app-07"]; got != base["app-07"]+1 {
			t.Errorf("app-07 synced %d times, want still %d", got, base["app-07"]+1)
		}
	})
}

func TestPollerPicksUpACommitWithoutWebhook(t *testing.T) {
	cp := testenv.StartT(t)
	git := gitserver.New(t)
	repo := git.NewRepo(t, "platform/polled")
	repo.WriteFile(t, "apps/polled/config.yaml", configMap("polled", "one"))
	repo.Commit(t, "first")
	f := startFerry(t, cp, func(o *cli.ServeOptions) { o.PollInterval = 300 * time.Millisecond })
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	kube := kubernetes.NewForConfigOrDie(cp.Config)
	createNamespace(t, kube, "polled")
	createApp(t, dyn, &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "polled", Namespace: "ferry"},
		Spec: v1alpha1.ApplicationSpec{
			Source:      &v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "apps/polled"},
			Destination: v1alpha1.Destination{Namespace: "polled"},
			SyncPolicy:  &v1alpha1.SyncPolicy{Automated: &v1alpha1.Automated{}},
		},
	})
	waitGreeting := func(revision, greeting string) {
		t.Helper()
		eventually(t, "the poller to sync "+revision[:8], func() (bool, string) {
			a := getApp(t, dyn, "ferry", "polled")
			cm, _ := kube.CoreV1().ConfigMaps("polled").Get(t.Context(), "polled", metav1.GetOptions{})
			got := ""
			if cm != nil {
				got = cm.Data["greeting"]
			}
			return a.Status.Sync.Revision == revision && got == greeting, fmt.Sprintf("%+v %q", a.Status.Sync, got)
		})
	}
	waitGreeting(repo.Head(t), "one")
	repo.WriteFile(t, "apps/polled/config.yaml", configMap("polled", "two"))
	second := repo.Commit(t, "second, with no webhook")
	waitGreeting(second, "two")
	f.quiet(t)
	before := f.results(t)["polled"]

	// The webhook for the revision the poller already dispatched is late:
	// it must not sync again.
	resp, err := webhook.Send(t.Context(), f.url+"/webhooks/github", "push", "late", []byte(testSecret), webhook.Push{
		CloneURL: repo.URL(), FullName: "platform/polled", DefaultBranch: "main", Ref: "refs/heads/main",
		Before: strings.Repeat("1", 40), After: second, Commits: []webhook.Commit{{ID: second, Modified: []string{"apps/polled/config.yaml"}}},
	}.Payload())
	if err != nil || resp.Status != 202 {
		t.Fatalf("webhook: %v %+v", err, resp)
	}
	f.quiet(t)
	if after := f.results(t)["polled"]; after != before {
		t.Errorf("the late webhook synced again: %d results, want %d", after, before)
	}
}
