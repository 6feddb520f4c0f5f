package ingest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ferrycd/ferry/ingest"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
	"github.com/ferrycd/ferry/worker"
)

func TestRefMatches(t *testing.T) {
	cases := []struct {
		target, ref, defaultBranch string
		want                       bool
	}{
		{"main", "refs/heads/main", "main", true},
		{"main", "refs/heads/dev", "main", false},
		{"", "refs/heads/main", "main", true},
		{"HEAD", "refs/heads/main", "main", true},
		{"HEAD", "refs/heads/dev", "main", false},
		{"HEAD", "refs/heads/main", "", false},
		{"v1.2.0", "refs/tags/v1.2.0", "main", true},
		{"refs/heads/release", "refs/heads/release", "main", true},
		{"refs/heads/release", "refs/tags/release", "main", false},
		{strings.Repeat("a", 40), "refs/heads/main", "main", false},
		{strings.Repeat("A", 40), "refs/heads/" + strings.Repeat("A", 40), "main", false},
	}
	for _, c := range cases {
		if got := ingest.RefMatches(c.target, c.ref, c.defaultBranch); got != c.want {
			t.Errorf("RefMatches(%q, %q, %q) = %v, want %v", c.target, c.ref, c.defaultBranch, got, c.want)
		}
	}
}

func app(name string, sources ...v1alpha1.ApplicationSource) *v1alpha1.Application {
	a := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Namespace: "ferry", Name: name}}
	a.Spec.SyncPolicy = &v1alpha1.SyncPolicy{Automated: &v1alpha1.Automated{}}
	if len(sources) == 1 {
		a.Spec.Source = &sources[0]
	} else {
		a.Spec.Sources = sources
	}
	return a
}

const repo = "https://github.com/acme/platform.git"

func push(paths ...string) *ferryv1.PushEvent {
	return &ferryv1.PushEvent{
		Provider: "github", RepoUrl: repo, Ref: "refs/heads/main", DefaultBranch: "main",
		Before: strings.Repeat("1", 40), After: strings.Repeat("2", 40),
		AlternateUrls: []string{"git@github.com:acme/platform.git"},
		Commits:       []*ferryv1.Commit{{Id: strings.Repeat("2", 40), Modified: paths}},
	}
}

func TestTouches(t *testing.T) {
	blog := app("blog", v1alpha1.ApplicationSource{RepoURL: repo, TargetRevision: "main", Path: "components/apps/blog"})
	sshBlog := app("ssh-blog", v1alpha1.ApplicationSource{RepoURL: "git@github.com:Acme/platform", Path: "components/apps/blog"})
	otherRepo := app("other", v1alpha1.ApplicationSource{RepoURL: "https://github.com/acme/other.git", Path: "components/apps/blog"})
	pinned := app("pinned", v1alpha1.ApplicationSource{RepoURL: repo, TargetRevision: strings.Repeat("f", 40), Path: "components/apps/blog"})
	whole := app("whole", v1alpha1.ApplicationSource{RepoURL: repo, Path: "."})
	multi := app("multi",
		v1alpha1.ApplicationSource{RepoURL: "https://charts.example.com", Chart: "blog", TargetRevision: "1.2.3",
			Helm: &v1alpha1.HelmSource{ValueFiles: []string{"$values/envs/prod/blog.yaml"}}},
		v1alpha1.ApplicationSource{RepoURL: repo, TargetRevision: "main", Ref: "values"})
	withDeps := app("with-deps", v1alpha1.ApplicationSource{RepoURL: repo, Path: "charts/api"})
	withDeps.Status.Inputs = []v1alpha1.InputPath{{RepoURL: repo, Path: "charts/common"}}

	cases := []struct {
		name  string
		app   *v1alpha1.Application
		ev    *ferryv1.PushEvent
		known bool
		want  bool
	}{
		{"a change under the app's path touches it", blog, push("components/apps/blog/values.yaml"), true, true},
		{"a change elsewhere does not", blog, push("components/apps/shop/values.yaml"), true, false},
		{"a sibling folder sharing a prefix does not", blog, push("components/apps/blog-v2/values.yaml"), true, false},
		{"the ssh spelling of the repository matches", sshBlog, push("components/apps/blog/x.yaml"), true, true},
		{"another repository does not", otherRepo, push("components/apps/blog/x.yaml"), true, false},
		{"an app pinned to a commit is never triggered", pinned, push("components/apps/blog/x.yaml"), true, false},
		{"a push to another branch does not", blog, func() *ferryv1.PushEvent {
			e := push("components/apps/blog/x.yaml")
			e.Ref = "refs/heads/dev"
			return e
		}(), true, false},
		{"a repository-root app is touched by any change", whole, push("README.md"), true, true},
		{"a $ref value file touches the multi-source app", multi, push("envs/prod/blog.yaml"), true, true},
		{"another value file does not", multi, push("envs/staging/blog.yaml"), true, false},
		{"a rename out of the path touches the app", blog, func() *ferryv1.PushEvent {
			e := push()
			e.Commits = []*ferryv1.Commit{{Removed: []string{"components/apps/blog/old.yaml"}, Added: []string{"attic/old.yaml"}}}
			return e
		}(), true, true},
		{"a rename into the path touches the app", blog, func() *ferryv1.PushEvent {
			e := push()
			e.Commits = []*ferryv1.Commit{{Removed: []string{"attic/new.yaml"}, Added: []string{"components/apps/blog/new.yaml"}}}
			return e
		}(), true, true},
		{"a recorded input (local chart dependency) touches the app", withDeps, push("charts/common/templates/_helpers.tpl"), true, true},
		{"unknown paths touch every app on the repository and ref", blog, push(), false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			changed, known := ingest.ChangedPaths(c.ev)
			if !c.known {
				changed, known = nil, false
			}
			if got := ingest.Touches(c.app, c.ev, changed, known); got != c.want {
				t.Errorf("Touches = %v, want %v (changed %v)", got, c.want, changed)
			}
		})
	}
}

func TestChangedPathsKnowsWhenThePayloadCannotTell(t *testing.T) {
	many := push("a")
	for i := range 19 {
		many.Commits = append(many.Commits, &ferryv1.Commit{Id: fmt.Sprint(i), Added: []string{"b"}})
	}
	cases := map[string]*ferryv1.PushEvent{
		"20 commits (GitHub truncates)": many,
		"a forced push":                 func() *ferryv1.PushEvent { e := push("a"); e.Forced = true; return e }(),
		"a created branch":              func() *ferryv1.PushEvent { e := push("a"); e.Created = true; return e }(),
		"a truncated commit list":       func() *ferryv1.PushEvent { e := push("a"); e.CommitsTruncated = true; return e }(),
		"no commits":                    {RepoUrl: repo},
	}
	for name, ev := range cases {
		if _, known := ingest.ChangedPaths(ev); known {
			t.Errorf("%s: paths reported as known", name)
		}
	}
	paths, known := ingest.ChangedPaths(&ferryv1.PushEvent{Commits: []*ferryv1.Commit{
		{Added: []string{"b", "a"}, Modified: []string{"c"}}, {Removed: []string{"a", "d"}},
	}})
	if !known || !slices.Equal(paths, []string{"a", "b", "c", "d"}) {
		t.Errorf("ChangedPaths = %v, %v; want the sorted union", paths, known)
	}
}

// apps is a fixed list of Applications.
type apps []*v1alpha1.Application

func (a apps) ListApplications(context.Context) ([]*v1alpha1.Application, error) { return a, nil }

// warnings records the warnings put on apps.
type warnings struct {
	mu  sync.Mutex
	got []string
}

func (w *warnings) Warn(_ context.Context, ns, name, reason, msg string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.got = append(w.got, ns+"/"+name+" "+reason)
	return nil
}

func (w *warnings) OutOfSync(_ context.Context, ns, name, revision string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.got = append(w.got, ns+"/"+name+" OutOfSync@"+revision[:4])
	return nil
}

// syncsSince returns the sync requests stored after seq.
func syncsSince(t *testing.T, seq uint64) []*ferryv1.SyncRequest {
	t.Helper()
	s, err := queue.JetStream().Stream(t.Context(), worker.StreamSync)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []*ferryv1.SyncRequest
	for i := seq + 1; i <= info.State.LastSeq; i++ {
		m, err := s.GetMsg(t.Context(), i)
		if err != nil {
			continue // replaced by a newer request for the same app
		}
		req := &ferryv1.SyncRequest{}
		if err := proto.Unmarshal(m.Data, req); err != nil {
			t.Fatal(err)
		}
		out = append(out, req)
	}
	return out
}

func names(reqs []*ferryv1.SyncRequest) []string {
	var out []string
	for _, r := range reqs {
		out = append(out, r.GetApp().GetName())
	}
	slices.Sort(out)
	return out
}

// uniqueRepo gives each test its own repository so that heads and pending
// requests of one test do not meet another's.
func uniqueRepo(t *testing.T) string {
	return "https://github.com/acme/" + strings.ReplaceAll(strings.ToLower(t.Name()), "/", "-") + ".git"
}

func TestDispatch(t *testing.T) {
	t.Run("syncs exactly the apps a push touches", func(t *testing.T) {
		r := uniqueRepo(t)
		list := apps{}
		for i := range 50 {
			list = append(list, app(fmt.Sprintf("app-%02d", i), v1alpha1.ApplicationSource{RepoURL: r, Path: fmt.Sprintf("apps/app-%02d", i)}))
		}
		d := ingest.NewDispatcher(list, queue, ingest.DispatchOptions{Heads: queue.Heads()})
		seq := lastSeq(t, worker.StreamSync)
		ev := push("apps/app-07/deployment.yaml", "docs/readme.md")
		ev.RepoUrl = r
		if err := d.Dispatch(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		reqs := syncsSince(t, seq)
		if got := names(reqs); !slices.Equal(got, []string{"app-07"}) {
			t.Fatalf("synced %v, want [app-07]", got)
		}
		req := reqs[0]
		if req.GetRevision() != ev.After || req.GetTrigger() != ferryv1.Trigger_TRIGGER_PUSH || req.GetRef() != "refs/heads/main" {
			t.Errorf("request %v", req)
		}
	})

	t.Run("a revision is dispatched once, even when redelivered beyond the dedup window", func(t *testing.T) {
		r := uniqueRepo(t)
		list := apps{app("a", v1alpha1.ApplicationSource{RepoURL: r, Path: "a"})}
		d := ingest.NewDispatcher(list, queue, ingest.DispatchOptions{Heads: queue.Heads()})
		ev := push("a/x.yaml")
		ev.RepoUrl = r
		seq := lastSeq(t, worker.StreamSync)
		for range 3 {
			if err := d.Dispatch(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
		}
		if n := lastSeq(t, worker.StreamSync) - seq; n != 1 {
			t.Fatalf("%d sync requests stored, want 1", n)
		}
	})

	t.Run("an app already synced at the revision is skipped", func(t *testing.T) {
		r := uniqueRepo(t)
		a := app("a", v1alpha1.ApplicationSource{RepoURL: r, Path: "a"})
		ev := push("a/x.yaml")
		ev.RepoUrl = r
		a.Status.Sync = v1alpha1.SyncStatus{Status: v1alpha1.SyncStatusSynced, Revision: ev.After}
		d := ingest.NewDispatcher(apps{a}, queue, ingest.DispatchOptions{})
		seq := lastSeq(t, worker.StreamSync)
		if err := d.Dispatch(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		if n := lastSeq(t, worker.StreamSync) - seq; n != 0 {
			t.Fatalf("%d sync requests stored, want 0", n)
		}
	})

	t.Run("manual and suspended apps are marked out of sync, not synced", func(t *testing.T) {
		r := uniqueRepo(t)
		manual := app("manual", v1alpha1.ApplicationSource{RepoURL: r, Path: "a"})
		manual.Spec.SyncPolicy = nil
		suspended := app("suspended", v1alpha1.ApplicationSource{RepoURL: r, Path: "a"})
		suspended.Spec.Suspend = true
		auto := app("auto", v1alpha1.ApplicationSource{RepoURL: r, Path: "a"})
		w := &warnings{}
		d := ingest.NewDispatcher(apps{manual, suspended, auto}, queue, ingest.DispatchOptions{Warner: w})
		ev := push("a/x.yaml")
		ev.RepoUrl = r
		seq := lastSeq(t, worker.StreamSync)
		if err := d.Dispatch(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		if got := names(syncsSince(t, seq)); !slices.Equal(got, []string{"auto"}) {
			t.Fatalf("synced %v, want [auto]", got)
		}
		if !slices.Equal(w.got, []string{"ferry/manual OutOfSync@2222", "ferry/suspended OutOfSync@2222"}) {
			t.Fatalf("marks %v", w.got)
		}
	})

	t.Run("a deleted branch syncs nothing and warns its apps", func(t *testing.T) {
		r := uniqueRepo(t)
		list := apps{app("a", v1alpha1.ApplicationSource{RepoURL: r, Path: "a"}), app("b", v1alpha1.ApplicationSource{RepoURL: r, TargetRevision: "dev", Path: "a"})}
		w := &warnings{}
		d := ingest.NewDispatcher(list, queue, ingest.DispatchOptions{Warner: w})
		ev := push()
		ev.RepoUrl, ev.Deleted, ev.After, ev.Commits = r, true, strings.Repeat("0", 40), nil
		seq := lastSeq(t, worker.StreamSync)
		if err := d.Dispatch(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		if n := lastSeq(t, worker.StreamSync) - seq; n != 0 {
			t.Fatalf("%d sync requests stored, want 0", n)
		}
		if !slices.Equal(w.got, []string{"ferry/a RefDeleted"}) {
			t.Fatalf("warnings %v, want [ferry/a RefDeleted]", w.got)
		}
	})

	t.Run("a forced push asks GitHub's Compare API for the changed files", func(t *testing.T) {
		r := "https://github.com/acme/compare-test.git"
		list := apps{app("a", v1alpha1.ApplicationSource{RepoURL: r, Path: "a"}), app("b", v1alpha1.ApplicationSource{RepoURL: r, Path: "b"})}
		var asked []string
		api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			asked = append(asked, req.URL.Path)
			// GitHub's documented compare response, trimmed to what ferry reads.
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{
				"status": "diverged", "ahead_by": 1, "behind_by": 1, "total_commits": 1,
				"files": []map[string]any{
					{"sha": "x", "filename": "b/new.yaml", "status": "renamed", "previous_filename": "attic/old.yaml"},
				},
			})
		}))
		defer api.Close()
		cmp, err := ingest.NewGitHubCompare(api.URL+"/", "token", "github.com", api.Client())
		if err != nil {
			t.Fatal(err)
		}
		d := ingest.NewDispatcher(list, queue, ingest.DispatchOptions{Comparer: cmp})
		ev := push("a/ignored-because-forced.yaml")
		ev.RepoUrl, ev.Forced = r, true
		seq := lastSeq(t, worker.StreamSync)
		if err := d.Dispatch(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		want := "/repos/acme/compare-test/compare/" + ev.Before + "..." + ev.After
		if len(asked) != 1 || asked[0] != want {
			t.Fatalf("compare API asked %v, want [%s]", asked, want)
		}
		if got := names(syncsSince(t, seq)); !slices.Equal(got, []string{"b"}) {
			t.Fatalf("synced %v, want [b]", got)
		}
	})

	t.Run("when the Compare API fails every app on the ref syncs", func(t *testing.T) {
		r := "https://github.com/acme/compare-fail.git"
		list := apps{app("a", v1alpha1.ApplicationSource{RepoURL: r, Path: "a"}), app("b", v1alpha1.ApplicationSource{RepoURL: r, Path: "b"})}
		api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"message":"API rate limit exceeded","documentation_url":"https://docs.github.com/rest"}`))
		}))
		defer api.Close()
		cmp, err := ingest.NewGitHubCompare(api.URL+"/", "", "github.com", api.Client())
		if err != nil {
			t.Fatal(err)
		}
		d := ingest.NewDispatcher(list, queue, ingest.DispatchOptions{Comparer: cmp})
		ev := push()
		ev.RepoUrl, ev.Forced = r, true
		seq := lastSeq(t, worker.StreamSync)
		if err := d.Dispatch(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		if got := names(syncsSince(t, seq)); !slices.Equal(got, []string{"a", "b"}) {
			t.Fatalf("synced %v, want [a b]", got)
		}
	})
}
