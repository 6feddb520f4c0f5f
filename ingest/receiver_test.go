package ingest_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/ferrycd/ferry/ingest"
	"github.com/ferrycd/ferry/integration/webhook"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
	"github.com/ferrycd/ferry/worker"
)

var secret = []byte("s3cr3t")

func githubPush() []byte {
	return webhook.Push{
		CloneURL: "https://github.com/acme/platform.git", FullName: "acme/platform", DefaultBranch: "main",
		Ref: "refs/heads/main", Before: strings.Repeat("a", 40), After: strings.Repeat("b", 40),
		Commits: []webhook.Commit{{ID: strings.Repeat("b", 40), Message: "bump", Modified: []string{"components/blog/values.yaml"}}},
	}.Payload()
}

func sign256(body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func sign1(body []byte) string {
	m := hmac.New(sha1.New, secret)
	m.Write(body)
	return "sha1=" + hex.EncodeToString(m.Sum(nil))
}

func newGitHub(t testing.TB, opts ingest.ReceiverOptions) (*ingest.Receiver, *ingest.Metrics) {
	t.Helper()
	m := ingest.NewMetrics(prometheus.NewRegistry())
	opts.Metrics = m
	if opts.Secret == nil && !opts.InsecureSkipVerify {
		opts.Secret = secret
	}
	rc, err := ingest.NewGitHub(queue, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rc, m
}

type delivery struct {
	event   string
	id      string
	headers map[string]string
	body    []byte
}

func serve(h http.Handler, d delivery) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/webhooks/github", bytes.NewReader(d.body))
	r.Header.Set("Content-Type", "application/json")
	if d.event != "" {
		r.Header.Set("X-GitHub-Event", d.event)
	}
	r.Header.Set("X-GitHub-Delivery", d.id)
	for k, v := range d.headers {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestGitHubReceiver(t *testing.T) {
	body := githubPush()
	big := append([]byte(`{"ref":"`), bytes.Repeat([]byte("x"), 64<<10)...)
	cases := []struct {
		name      string
		d         delivery
		status    int
		result    string
		published bool
	}{
		{"accepts a signed push", delivery{"push", "d-valid", map[string]string{"X-Hub-Signature-256": sign256(body)}, body}, 202, "accepted", true},
		{"rejects a bad signature", delivery{"push", "d-bad", map[string]string{"X-Hub-Signature-256": "sha256=" + strings.Repeat("0", 64)}, body}, 401, "unauthorized", false},
		{"rejects a missing signature", delivery{"push", "d-missing", nil, body}, 401, "unauthorized", false},
		{"rejects a SHA-1 signature", delivery{"push", "d-sha1", map[string]string{"X-Hub-Signature": sign1(body)}, body}, 401, "unauthorized", false},
		{"rejects a SHA-1 value in the SHA-256 header", delivery{"push", "d-sha1b", map[string]string{"X-Hub-Signature-256": sign1(body)}, body}, 401, "unauthorized", false},
		{"rejects an oversize body", delivery{"push", "d-big", map[string]string{"X-Hub-Signature-256": sign256(big)}, big}, 413, "too_large", false},
		{"rejects a truncated body", delivery{"push", "d-trunc", map[string]string{"X-Hub-Signature-256": sign256(body[:len(body)/2])}, body[:len(body)/2]}, 400, "bad_request", false},
		{"rejects a non-JSON body", delivery{"push", "d-text", map[string]string{"X-Hub-Signature-256": sign256([]byte("hello"))}, []byte("hello")}, 400, "bad_request", false},
		{"rejects an empty body", delivery{"push", "d-empty", map[string]string{"X-Hub-Signature-256": sign256(nil)}, nil}, 400, "bad_request", false},
		{"rejects a delivery without an event header", delivery{"", "d-noevent", map[string]string{"X-Hub-Signature-256": sign256(body)}, body}, 400, "bad_request", false},
		{"answers ping with 200", delivery{"ping", "d-ping", map[string]string{"X-Hub-Signature-256": sign256([]byte(`{"zen":"Keep it logically awesome.","hook_id":1}`))}, []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`)}, 200, "pong", false},
		{"accepts an unknown event with a reason", delivery{"issues", "d-issues", map[string]string{"X-Hub-Signature-256": sign256([]byte(`{}`))}, []byte(`{}`)}, 202, "ignored", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rc, m := newGitHub(t, ingest.ReceiverOptions{MaxBodyBytes: 1024 + int64(len(body))})
			before := lastSeq(t, worker.StreamEvents)
			w := serve(rc, c.d)
			if w.Code != c.status {
				t.Fatalf("status = %d, want %d; body %s", w.Code, c.status, w.Body)
			}
			var resp ingest.Response
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
				t.Fatalf("answer is not JSON: %v: %s", err, w.Body)
			}
			if resp.Status != c.result || resp.DeliveryID != c.d.id {
				t.Errorf("answer = %+v, want status %q and delivery %q", resp, c.result, c.d.id)
			}
			if got := testutil.ToFloat64(m.Webhooks().WithLabelValues("github", c.result)); got != 1 {
				t.Errorf("ferry_webhooks_total{result=%q} = %v, want 1", c.result, got)
			}
			published := lastSeq(t, worker.StreamEvents) > before
			if published != c.published {
				t.Errorf("published = %v, want %v", published, c.published)
			}
		})
	}
}

func TestGitHubReceiverStoresTheNormalisedEvent(t *testing.T) {
	rc, _ := newGitHub(t, ingest.ReceiverOptions{})
	body := githubPush()
	if w := serve(rc, delivery{"push", "d-fields", map[string]string{"X-Hub-Signature-256": sign256(body)}, body}); w.Code != 202 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	m := lastMsg(t, worker.StreamEvents, worker.EventSubject("github"))
	ev := &ferryv1.PushEvent{}
	if err := proto.Unmarshal(m.Data, ev); err != nil {
		t.Fatal(err)
	}
	want := &ferryv1.PushEvent{
		Provider: "github", DeliveryId: "d-fields", RepoUrl: "https://github.com/acme/platform.git",
		Ref: "refs/heads/main", Before: strings.Repeat("a", 40), After: strings.Repeat("b", 40), DefaultBranch: "main",
		AlternateUrls: []string{"git@github.com:acme/platform.git", "https://github.com/acme/platform", "git://github.com/acme/platform.git"},
		Commits:       []*ferryv1.Commit{{Id: strings.Repeat("b", 40), Modified: []string{"components/blog/values.yaml"}, Added: []string{}, Removed: []string{}}},
	}
	ev.ReceivedAt = nil
	if !proto.Equal(ev, want) {
		t.Errorf("stored event\n got %v\nwant %v", ev, want)
	}
	if m.Header.Get("traceparent") == "" {
		t.Error("stored event carries no traceparent header")
	}
}

func TestGitHubReceiverDeduplicatesRedeliveries(t *testing.T) {
	rc, m := newGitHub(t, ingest.ReceiverOptions{})
	body := githubPush()
	d := delivery{"push", "d-dup-1", map[string]string{"X-Hub-Signature-256": sign256(body)}, body}
	if w := serve(rc, d); w.Code != 202 {
		t.Fatalf("first delivery: %d %s", w.Code, w.Body)
	}
	before := lastSeq(t, worker.StreamEvents)
	w := serve(rc, d)
	if w.Code != 202 || !strings.Contains(w.Body.String(), `"duplicate"`) {
		t.Fatalf("redelivery: %d %s, want 202 duplicate", w.Code, w.Body)
	}
	if after := lastSeq(t, worker.StreamEvents); after != before {
		t.Errorf("redelivery stored a second event (seq %d -> %d)", before, after)
	}
	if got := testutil.ToFloat64(m.Webhooks().WithLabelValues("github", "duplicate")); got != 1 {
		t.Errorf("duplicate counter = %v, want 1", got)
	}
}

func TestReceiverRefusesToRunWithoutSecret(t *testing.T) {
	if _, err := ingest.NewGitHub(queue, ingest.ReceiverOptions{}, nil); err == nil {
		t.Fatal("a receiver without secret started")
	}
	if _, err := ingest.NewGitHub(queue, ingest.ReceiverOptions{InsecureSkipVerify: true}, nil); err != nil {
		t.Fatalf("explicit opt-out refused: %v", err)
	}
}

func TestGiteaAndGitLabPushes(t *testing.T) {
	giteaBody := []byte(`{"ref":"refs/heads/main","before":"` + strings.Repeat("0", 40) + `","after":"` + strings.Repeat("c", 40) + `",
	 "commits":[{"id":"` + strings.Repeat("c", 40) + `","message":"x","added":["apps/a.yaml"],"removed":[],"modified":[],"timestamp":"2026-11-25T10:00:00Z"}],
	 "repository":{"id":1,"full_name":"acme/platform","clone_url":"https://gitea.example.com/acme/platform.git","ssh_url":"git@gitea.example.com:acme/platform.git","html_url":"https://gitea.example.com/acme/platform","default_branch":"main"}}`)
	gitlabBody := []byte(`{"object_kind":"push","ref":"refs/heads/main","before":"` + strings.Repeat("d", 40) + `","after":"` + strings.Repeat("e", 40) + `","total_commits_count":1,
	 "project":{"git_http_url":"https://gitlab.example.com/acme/platform.git","git_ssh_url":"git@gitlab.example.com:acme/platform.git","web_url":"https://gitlab.example.com/acme/platform","default_branch":"main"},
	 "commits":[{"id":"` + strings.Repeat("e", 40) + `","message":"x","added":[],"modified":["apps/b.yaml"],"removed":[],"timestamp":"2026-11-25T10:00:00+00:00"}]}`)
	gitea, err := ingest.NewGitea(queue, ingest.ReceiverOptions{Secret: secret}, nil)
	if err != nil {
		t.Fatal(err)
	}
	gitlab, err := ingest.NewGitLab(queue, ingest.ReceiverOptions{Secret: secret}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(giteaBody)
	giteaSig := hex.EncodeToString(mac.Sum(nil))

	send := func(h http.Handler, headers map[string]string, body []byte) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		for k, v := range headers {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	t.Run("a signed Gitea push is stored as a created branch", func(t *testing.T) {
		w := send(gitea, map[string]string{"X-Gitea-Event": "push", "X-Gitea-Delivery": "g-1", "X-Gitea-Signature": giteaSig}, giteaBody)
		if w.Code != 202 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		ev := &ferryv1.PushEvent{}
		if err := proto.Unmarshal(lastMsg(t, worker.StreamEvents, worker.EventSubject("gitea")).Data, ev); err != nil {
			t.Fatal(err)
		}
		if ev.RepoUrl != "https://gitea.example.com/acme/platform.git" || !ev.Created || ev.DeliveryId != "g-1" || len(ev.Commits) != 1 {
			t.Errorf("unexpected event %v", ev)
		}
	})
	t.Run("a Gitea push with a bad signature gets 401", func(t *testing.T) {
		w := send(gitea, map[string]string{"X-Gitea-Event": "push", "X-Gitea-Delivery": "g-2", "X-Gitea-Signature": strings.Repeat("0", 64)}, giteaBody)
		if w.Code != 401 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
	})
	t.Run("a GitLab push with the right token is stored", func(t *testing.T) {
		w := send(gitlab, map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": "l-1", "X-Gitlab-Token": string(secret)}, gitlabBody)
		if w.Code != 202 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		ev := &ferryv1.PushEvent{}
		if err := proto.Unmarshal(lastMsg(t, worker.StreamEvents, worker.EventSubject("gitlab")).Data, ev); err != nil {
			t.Fatal(err)
		}
		if ev.RepoUrl != "https://gitlab.example.com/acme/platform.git" || ev.After != strings.Repeat("e", 40) || ev.DeliveryId != "l-1" {
			t.Errorf("unexpected event %v", ev)
		}
	})
	t.Run("a GitLab push with a wrong token gets 401", func(t *testing.T) {
		w := send(gitlab, map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": "l-2", "X-Gitlab-Token": "nope"}, gitlabBody)
		if w.Code != 401 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
	})
}

// unavailablePublisher is JetStream after its server went away: a second,
// real embedded server that the test shuts down.
func TestReceiverAnswers503WhenJetStreamIsDown(t *testing.T) {
	dir := t.TempDir()
	emb, err := worker.StartEmbedded(t.Context(), worker.EmbeddedOptions{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := emb.Connect("down-test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	q, err := worker.New(t.Context(), nc, worker.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	emb.Shutdown()
	rc, err := ingest.NewGitHub(q, ingest.ReceiverOptions{Secret: secret, PublishTimeout: 500 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	body := githubPush()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/webhooks/github", bytes.NewReader(body))
	r.Header.Set("X-GitHub-Event", "push")
	r.Header.Set("X-GitHub-Delivery", "d-down")
	r.Header.Set("X-Hub-Signature-256", sign256(body))
	w := httptest.NewRecorder()
	rc.ServeHTTP(w, r)
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status = %d, want 503: %s", w.Code, w.Body)
	}
}
