package ingest_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ferrycd/ferry/ingest"
)

// fuzzReceiver checks what must hold for any delivery: the answer is one of
// the receiver's codes, and nothing unverified or refused is stored.
func fuzzReceiver(t *testing.T, h http.Handler, pub *memEvents, headers map[string]string, body []byte, verified bool) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/webhooks/fuzz", bytes.NewReader(body))
	for k, v := range headers {
		r.Header.Set(k, v)
	}
	before := pub.stored()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	switch w.Code {
	case 200, 202, 400, 401, 413:
	default:
		t.Fatalf("unexpected status %d for headers %v: %s", w.Code, headers, w.Body)
	}
	stored := pub.stored() != before
	if stored && !verified {
		t.Fatal("an unverified delivery was stored")
	}
	if stored && w.Code != 202 {
		t.Fatalf("a delivery answered %d was stored", w.Code)
	}
}

func FuzzGitHubWebhook(f *testing.F) {
	f.Add(githubPush(), "push", true)
	f.Add([]byte(`{"zen":"x"}`), "ping", true)
	f.Add([]byte(`{"ref":1}`), "push", true)
	f.Add([]byte("\x00\xff"), "push", false)
	pub := newMemEvents()
	rc, err := ingest.NewGitHub(pub, ingest.ReceiverOptions{Secret: secret, MaxBodyBytes: 1 << 16}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, event string, signed bool) {
		headers := map[string]string{"X-GitHub-Event": event, "X-GitHub-Delivery": "fuzz"}
		if signed {
			headers["X-Hub-Signature-256"] = sign256(body)
		}
		fuzzReceiver(t, rc, pub, headers, body, signed)
	})
}

func FuzzGiteaWebhook(f *testing.F) {
	push := []byte(`{"ref":"refs/heads/main","before":"` + strings.Repeat("0", 40) + `","after":"` + strings.Repeat("c", 40) + `",` +
		`"commits":[{"id":"c","added":["a.yaml"]}],"repository":{"clone_url":"https://gitea.example.com/acme/p.git","default_branch":"main"}}`)
	f.Add(push, "push", true)
	f.Add([]byte(`{"ref":"refs/heads/main","repository":null}`), "push", true)
	f.Add([]byte(`{"commits":[null]}`), "push", true)
	f.Add([]byte(`{}`), "create", true)
	f.Add([]byte("not json"), "push", false)
	pub := newMemEvents()
	rc, err := ingest.NewGitea(pub, ingest.ReceiverOptions{Secret: secret, MaxBodyBytes: 1 << 16}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, event string, signed bool) {
		headers := map[string]string{"X-Gitea-Event": event, "X-Gitea-Delivery": "fuzz"}
		if signed {
			headers["X-Gitea-Signature"] = strings.TrimPrefix(sign256(body), "sha256=")
		}
		fuzzReceiver(t, rc, pub, headers, body, signed)
	})
}

func FuzzGitLabWebhook(f *testing.F) {
	push := []byte(`{"object_kind":"push","ref":"refs/heads/main","before":"` + strings.Repeat("d", 40) + `","after":"` + strings.Repeat("e", 40) + `",` +
		`"total_commits_count":1,"project":{"git_http_url":"https://gitlab.example.com/acme/p.git"},"commits":[{"id":"e","modified":["b.yaml"]}]}`)
	f.Add(push, "Push Hook", string(secret))
	f.Add([]byte(`{"object_kind":"tag_push","ref":"refs/tags/v1"}`), "Tag Push Hook", string(secret))
	f.Add([]byte(`{"object_kind":"push"}`), "System Hook", string(secret))
	f.Add([]byte(`{"total_commits_count":"x"}`), "Push Hook", string(secret))
	f.Add(push, "Push Hook", "wrong")
	pub := newMemEvents()
	rc, err := ingest.NewGitLab(pub, ingest.ReceiverOptions{Secret: secret, MaxBodyBytes: 1 << 16}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, event, token string) {
		headers := map[string]string{"X-Gitlab-Event": event, "X-Gitlab-Event-UUID": "fuzz", "X-Gitlab-Token": token}
		fuzzReceiver(t, rc, pub, headers, body, token == string(secret))
	})
}
