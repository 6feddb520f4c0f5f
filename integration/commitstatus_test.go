package integration

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/ferrycd/ferry/cmd/ferry/cli"
	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/integration/testenv"
	"github.com/ferrycd/ferry/integration/webhook"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// gitHost stands in for a Git host with GitHub's REST API on one address:
// POST /repos/{owner}/{repo}/statuses/{sha} is recorded, as GitHub
// documents it, and everything else is the real git server behind it.
type gitHost struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []string // "<sha[:8]> <state> <description>"
}

func newGitHost(t *testing.T, git *gitserver.Server) *gitHost {
	t.Helper()
	target, err := url.Parse(git.URL())
	if err != nil {
		t.Fatal(err)
	}
	h := &gitHost{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
		if r.Method != http.MethodPost || len(parts) != 5 || parts[0] != "repos" || parts[3] != "statuses" {
			proxy.ServeHTTP(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer gh-token" {
			http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
			return
		}
		var st struct{ State, Description, Context string }
		if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.got = append(h.got, parts[4][:8]+" "+st.State+" "+st.Context+" "+st.Description)
		h.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"id":1}`))
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *gitHost) statuses() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.got...)
}

func TestCommitStatusesFollowTheSync(t *testing.T) {
	cp := testenv.StartT(t)
	git := gitserver.New(t)
	repo := git.NewRepo(t, "platform/status")
	repo.WriteFile(t, "web/config.yaml", configMap("web-config", "hello"))
	first := repo.Commit(t, "add web")
	host := newGitHost(t, git)
	repoURL := host.srv.URL + strings.TrimPrefix(repo.URL(), git.URL())

	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("gh-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := startFerry(t, cp, func(o *cli.ServeOptions) {
		o.GitHubTokenFile = token
		o.CommitStatusAPIURL = host.srv.URL + "/"
	})
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	createNamespace(t, kubernetes.NewForConfigOrDie(cp.Config), "status-web")
	createApp(t, dyn, &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "status-web", Namespace: "ferry"},
		Spec: v1alpha1.ApplicationSpec{
			Source:      &v1alpha1.ApplicationSource{RepoURL: repoURL, TargetRevision: "main", Path: "web"},
			Destination: v1alpha1.Destination{Namespace: "status-web"},
			SyncPolicy:  &v1alpha1.SyncPolicy{Automated: &v1alpha1.Automated{Prune: true}},
		},
	})
	eventually(t, "the first sync", func() (bool, string) {
		app := getApp(t, dyn, "ferry", "status-web")
		return app.Status.Sync.Revision == first, app.Status.LastError
	})
	push := func(t *testing.T, delivery, before, after string) {
		t.Helper()
		body := webhook.Push{
			CloneURL: repoURL, FullName: "platform/status", DefaultBranch: "main",
			Ref: "refs/heads/main", Before: before, After: after,
			Commits: []webhook.Commit{{ID: after, Message: "change", Modified: []string{"web/config.yaml"}}},
		}.Payload()
		resp, err := webhook.Send(t.Context(), f.url+"/webhooks/github", "push", delivery, []byte(testSecret), body)
		if err != nil || resp.Status != http.StatusAccepted {
			t.Fatalf("push webhook: %v %+v", err, resp)
		}
	}

	t.Run("a push is pending at dispatch and a success once applied", func(t *testing.T) {
		repo.WriteFile(t, "web/config.yaml", configMap("web-config", "pushed"))
		pushed := repo.Commit(t, "change the greeting")
		push(t, "status-1", first, pushed)
		want := []string{
			pushed[:8] + " pending ferry/status-web ferry is syncing status-web",
			pushed[:8] + " success ferry/status-web synced 1 objects",
		}
		eventually(t, "pending, then success", func() (bool, string) {
			var got []string
			for _, st := range host.statuses() {
				if strings.HasPrefix(st, pushed[:8]) {
					got = append(got, st)
				}
			}
			return strings.Join(got, "\n") == strings.Join(want, "\n"), strings.Join(got, " | ")
		})
		first = pushed
	})

	t.Run("a render that fails for good is a failure on the commit", func(t *testing.T) {
		repo.WriteFile(t, "web/config.yaml", "apiVersion: v1\nkind: [unclosed\n")
		broken := repo.Commit(t, "break the YAML")
		push(t, "status-2", first, broken)
		eventually(t, "a failure status", func() (bool, string) {
			got := host.statuses()
			last := got[len(got)-1]
			return strings.HasPrefix(last, broken[:8]+" failure ferry/status-web render failed"), strings.Join(got, " | ")
		})
	})
}
