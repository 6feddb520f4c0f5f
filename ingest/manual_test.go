package ingest_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ferrycd/ferry/ingest"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
	"github.com/ferrycd/ferry/worker"
)

func (a apps) GetApplication(_ context.Context, ns, name string) (*v1alpha1.Application, error) {
	for _, x := range a {
		if x.Namespace == ns && x.Name == name {
			return x, nil
		}
	}
	return nil, ingest.ErrAppNotFound
}

func TestManualSync(t *testing.T) {
	list := apps{app("manual-app", v1alpha1.ApplicationSource{RepoURL: repo, Path: "a"})}
	mux := http.NewServeMux()
	mux.Handle("POST /api/v1/apps/{namespace}/{name}/sync", ingest.NewManualSync(list, queue, ingest.NewAuthorizer([]byte("tok"), []byte("ro"), false), nil))
	disabled := http.NewServeMux()
	disabled.Handle("POST /api/v1/apps/{namespace}/{name}/sync", ingest.NewManualSync(list, queue, ingest.NewAuthorizer(nil, []byte("ro"), false), nil))

	call := func(h http.Handler, path, token, body string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	cases := []struct {
		name   string
		h      http.Handler
		path   string
		token  string
		body   string
		status int
		code   string
	}{
		{"refuses a call without a token", mux, "/api/v1/apps/ferry/manual-app/sync", "", "", 401, `"unauthorized"`},
		{"refuses a wrong token", mux, "/api/v1/apps/ferry/manual-app/sync", "nope", "", 401, `"unauthorized"`},
		{"forbids the read-only token", mux, "/api/v1/apps/ferry/manual-app/sync", "ro", "", 403, `"forbidden"`},
		{"refuses every call when no token is configured", disabled, "/api/v1/apps/ferry/manual-app/sync", "tok", "", 403, `"mutations_disabled"`},
		{"answers 404 for an unknown app", mux, "/api/v1/apps/ferry/missing/sync", "tok", "", 404, `"not_found"`},
		{"rejects a body that is not JSON", mux, "/api/v1/apps/ferry/manual-app/sync", "tok", "revision=abc", 400, `"bad_request"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			seq := lastSeq(t, worker.StreamSync)
			w := call(c.h, c.path, c.token, c.body)
			if w.Code != c.status || !strings.Contains(w.Body.String(), c.code) {
				t.Fatalf("got %d %s, want %d with code %s", w.Code, w.Body, c.status, c.code)
			}
			if lastSeq(t, worker.StreamSync) != seq {
				t.Fatal("a refused call enqueued a sync")
			}
		})
	}
	t.Run("enqueues a manual sync at the requested revision", func(t *testing.T) {
		w := call(mux, "/api/v1/apps/ferry/manual-app/sync", "tok", `{"revision":"`+strings.Repeat("9", 40)+`"}`)
		if w.Code != 202 {
			t.Fatalf("got %d %s", w.Code, w.Body)
		}
		req := &ferryv1.SyncRequest{}
		if err := proto.Unmarshal(lastMsg(t, worker.StreamSync, worker.SyncSubject("ferry", "manual-app")).Data, req); err != nil {
			t.Fatal(err)
		}
		if req.GetTrigger() != ferryv1.Trigger_TRIGGER_MANUAL || req.GetRevision() != strings.Repeat("9", 40) || req.GetRepoUrl() != repo {
			t.Errorf("request %v", req)
		}
	})
}
