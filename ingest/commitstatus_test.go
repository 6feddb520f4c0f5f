package ingest_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrycd/ferry/ingest"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
)

// statusAPI is a stand-in for GitHub's REST API that speaks the documented
// shape of POST /repos/{owner}/{repo}/statuses/{sha}, and can answer with a
// rate limit first.
type statusAPI struct {
	mu         sync.Mutex
	got        []map[string]any
	paths      []string
	rateLimits int
	attempts   int
}

func (s *statusAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts++
	if r.Method != http.MethodPost || !strings.Contains(r.URL.Path, "/statuses/") || r.Header.Get("Authorization") != "Bearer gh-token" {
		http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
		return
	}
	if s.rateLimits > 0 {
		s.rateLimits--
		w.Header().Set("X-RateLimit-Limit", "5000")
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Used", "5000")
		w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(time.Second).Unix(), 10))
		w.Header().Set("X-RateLimit-Resource", "core")
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"message":"API rate limit exceeded for installation.","documentation_url":"https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"}`))
		return
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.got = append(s.got, body)
	s.paths = append(s.paths, r.URL.Path)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	body["id"] = len(s.got)
	_ = json.NewEncoder(w).Encode(body)
}

func (s *statusAPI) posted() ([]map[string]any, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.got...), append([]string(nil), s.paths...)
}

func TestCommitStatus(t *testing.T) {
	sha := strings.Repeat("ab", 20)
	start := func(t *testing.T, api *statusAPI) *ingest.CommitStatus {
		srv := httptest.NewServer(api)
		t.Cleanup(srv.Close)
		cs, err := ingest.NewCommitStatus(ingest.CommitStatusOptions{
			APIURL: srv.URL + "/", Token: "gh-token", GitHost: "github.com",
			ExternalURL: "https://ferry.example.com", HTTPClient: srv.Client(), MaxRateLimitWait: 30 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = cs.Start(t.Context()) }()
		return cs
	}
	waitPosted := func(t *testing.T, api *statusAPI, n int) ([]map[string]any, []string) {
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if got, paths := api.posted(); len(got) >= n {
				return got, paths
			}
			time.Sleep(20 * time.Millisecond)
		}
		got, _ := api.posted()
		t.Fatalf("%d statuses posted, want %d", len(got), n)
		return nil, nil
	}

	t.Run("posts pending, then success, with the app's context and dashboard URL", func(t *testing.T) {
		api := &statusAPI{}
		cs := start(t, api)
		cs.Report("ferry", "blog", "git@github.com:acme/platform.git", sha, ingest.StatePending, "syncing")
		cs.Report("ferry", "blog", "https://github.com/acme/platform.git", sha, ingest.StateSuccess, "applied 3 objects")
		got, paths := waitPosted(t, api, 2)
		for i, want := range []string{"pending", "success"} {
			if got[i]["state"] != want || got[i]["context"] != "ferry/blog" || got[i]["target_url"] != "https://ferry.example.com/apps/ferry/blog" {
				t.Errorf("status %d = %v", i, got[i])
			}
			if paths[i] != "/repos/acme/platform/statuses/"+sha {
				t.Errorf("path %d = %s", i, paths[i])
			}
		}
	})

	t.Run("a 403 rate-limit answer is retried after the reset", func(t *testing.T) {
		api := &statusAPI{rateLimits: 1}
		cs := start(t, api)
		cs.Report("ferry", "blog", "https://github.com/acme/platform.git", sha, ingest.StateFailure, strings.Repeat("x", 300))
		got, _ := waitPosted(t, api, 1)
		if got[0]["state"] != "failure" || len(got[0]["description"].(string)) > 140 {
			t.Errorf("status = %v", got[0])
		}
		api.mu.Lock()
		defer api.mu.Unlock()
		if api.attempts != 2 {
			t.Errorf("%d requests, want 2 (the rate-limited one, then the retry)", api.attempts)
		}
	})

	t.Run("dispatch sets pending, and the sync's result sets the final state", func(t *testing.T) {
		api := &statusAPI{}
		cs := start(t, api)
		r := uniqueRepo(t)
		d := ingest.NewDispatcher(apps{app("blog", v1alpha1.ApplicationSource{RepoURL: r, Path: "a"})}, queue, ingest.DispatchOptions{Statuses: cs})
		ev := push("a/x.yaml")
		ev.RepoUrl = r
		if err := d.Dispatch(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		ref := &ferryv1.AppRef{Namespace: "ferry", Name: "blog"}
		cs.ReportResult(&ferryv1.SyncResult{App: ref, RepoUrl: r, Revision: ev.After, Phase: ferryv1.SyncPhase_SYNC_PHASE_SUCCEEDED,
			Trigger: ferryv1.Trigger_TRIGGER_PUSH, Resources: []*ferryv1.ResourceResult{{Kind: "ConfigMap", Name: "a", Action: "created"}, {Kind: "ConfigMap", Name: "b", Action: "pruned"}}})
		got, paths := waitPosted(t, api, 2)
		if got[0]["state"] != "pending" || got[1]["state"] != "success" || got[1]["description"] != "synced 1 objects" {
			t.Fatalf("statuses %v, want pending then success", got)
		}
		if want := "/repos/acme/" + r[len("https://github.com/acme/"):len(r)-len(".git")] + "/statuses/" + ev.After; paths[0] != want {
			t.Errorf("posted to %s, want %s", paths[0], want)
		}
	})

	t.Run("a failed sync reports failure; a self-heal or PostSync success reports nothing", func(t *testing.T) {
		api := &statusAPI{}
		cs := start(t, api)
		ref := &ferryv1.AppRef{Namespace: "ferry", Name: "blog"}
		ok := ferryv1.SyncPhase_SYNC_PHASE_SUCCEEDED
		cs.ReportResult(&ferryv1.SyncResult{App: ref, RepoUrl: repo, Revision: sha, Phase: ok, Trigger: ferryv1.Trigger_TRIGGER_DRIFT})
		cs.ReportResult(&ferryv1.SyncResult{App: ref, RepoUrl: repo, Revision: sha, Phase: ok, Trigger: ferryv1.Trigger_TRIGGER_APP_CHANGED, PostSync: true})
		cs.ReportResult(&ferryv1.SyncResult{App: ref, RepoUrl: repo, Revision: sha, Phase: ferryv1.SyncPhase_SYNC_PHASE_FAILED, Message: "ConfigMap/x: invalid"})
		got, _ := waitPosted(t, api, 1)
		time.Sleep(100 * time.Millisecond)
		if got, _ = api.posted(); len(got) != 1 || got[0]["state"] != "failure" || got[0]["description"] != "ConfigMap/x: invalid" {
			t.Errorf("posted %v, want only the failure", got)
		}
	})

	t.Run("other hosts and non-SHA revisions are left alone", func(t *testing.T) {
		api := &statusAPI{}
		cs := start(t, api)
		cs.Report("ferry", "blog", "https://gitlab.example.com/acme/platform.git", sha, ingest.StatePending, "")
		cs.Report("ferry", "blog", "https://github.com/acme/platform.git", "main", ingest.StatePending, "")
		cs.Report("ferry", "blog", "https://github.com/acme/platform.git", sha, ingest.StatePending, "marker")
		got, _ := waitPosted(t, api, 1)
		time.Sleep(100 * time.Millisecond)
		if got, _ = api.posted(); len(got) != 1 || got[0]["description"] != "marker" {
			t.Errorf("posted %v, want only the marker", got)
		}
	})
}
