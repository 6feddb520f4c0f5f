package integration

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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

// TestHTTPSurface checks the two listeners and the two tokens of a real
// ferry: the webhook listener serves webhooks and probes only, the API
// listener serves the API and metrics only, reads need a token, and only
// the admin token mutates.
func TestHTTPSurface(t *testing.T) {
	cp := testenv.StartT(t)
	git := gitserver.New(t)
	repo := git.NewRepo(t, "platform/surface")
	repo.WriteFile(t, "apps/surface/config.yaml", configMap("surface", "hi"))
	head := repo.Commit(t, "first")
	const adminToken = "admin-token"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := startFerry(t, cp, func(o *cli.ServeOptions) { o.APITokenFile = tokenFile })
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	createNamespace(t, kubernetes.NewForConfigOrDie(cp.Config), "surface")
	createApp(t, dyn, &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "surface", Namespace: "ferry"},
		Spec: v1alpha1.ApplicationSpec{
			Source:      &v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "apps/surface"},
			Destination: v1alpha1.Destination{Namespace: "surface"},
		},
	})

	call := func(method, url, token string) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	appURL := f.api + "/api/v1/apps/ferry/surface"
	eventually(t, "the API to see the app", func() (bool, string) {
		resp := call(http.MethodGet, appURL, testReadToken)
		return resp.StatusCode == 200, resp.Status
	})

	cases := []struct {
		name   string
		method string
		url    string
		token  string
		status int
	}{
		{"a read without a token gets 401", http.MethodGet, appURL, "", 401},
		{"a read with a wrong token gets 401", http.MethodGet, f.api + "/api/v1/apps", "nope", 401},
		{"a read with the read-only token gets 200", http.MethodGet, f.api + "/api/v1/apps", testReadToken, 200},
		{"a read with the admin token gets 200", http.MethodGet, appURL + "/history", adminToken, 200},
		{"metrics without a token get 401", http.MethodGet, f.api + "/metrics", "", 401},
		{"metrics with the read-only token get 200", http.MethodGet, f.api + "/metrics", testReadToken, 200},
		{"a sync with the read-only token gets 403", http.MethodPost, appURL + "/sync", testReadToken, 403},
		{"a rollback with the read-only token gets 403", http.MethodPost, appURL + "/rollback", testReadToken, 403},
		{"a sync without a token gets 401", http.MethodPost, appURL + "/sync", "", 401},
		{"a sync with the admin token gets 202", http.MethodPost, appURL + "/sync", adminToken, 202},
		{"the webhook listener does not serve the API", http.MethodGet, f.url + "/api/v1/apps", adminToken, 404},
		{"the webhook listener does not serve a mutation", http.MethodPost, f.url + "/api/v1/apps/ferry/surface/sync", adminToken, 404},
		{"the webhook listener does not serve metrics", http.MethodGet, f.url + "/metrics", adminToken, 404},
		{"the webhook listener serves probes", http.MethodGet, f.url + "/healthz", "", 200},
		{"the API listener does not serve webhooks", http.MethodPost, f.api + "/webhooks/github", "", 404},
		{"GitLab, which has no token, is not served", http.MethodPost, f.url + "/webhooks/gitlab", "", 404},
		{"Gitea, which has no secret, is not served", http.MethodPost, f.url + "/webhooks/gitea", "", 404},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := call(c.method, c.url, c.token)
			if resp.StatusCode != c.status {
				t.Fatalf("%s %s: %s, want %d", c.method, c.url, resp.Status, c.status)
			}
			if c.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}

	t.Run("a signed push to the API listener is not stored, to the webhook listener it is", func(t *testing.T) {
		body := webhook.Push{CloneURL: repo.URL(), FullName: "platform/surface", DefaultBranch: "main",
			Ref: "refs/heads/main", Before: head, After: head}.Payload()
		before := f.eventsStored(t)
		resp, err := webhook.Send(t.Context(), f.api+"/webhooks/github", "push", "surface-api", []byte(testSecret), body)
		if err != nil || resp.Status != 404 {
			t.Fatalf("API listener: %+v %v, want 404", resp, err)
		}
		if f.eventsStored(t) != before {
			t.Fatal("a push sent to the API listener was stored")
		}
		resp, err = webhook.Send(t.Context(), f.url+"/webhooks/github", "push", "surface-hook", []byte(testSecret), body)
		if err != nil || resp.Status != 202 {
			t.Fatalf("webhook listener: %+v %v, want 202", resp, err)
		}
	})

	t.Run("a client's traceparent does not parent ferry's spans", func(t *testing.T) {
		const foreignTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		body := webhook.Push{CloneURL: repo.URL(), FullName: "platform/surface", DefaultBranch: "main",
			Ref: "refs/heads/main", Before: head, After: head}.Payload()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, f.url+"/webhooks/github", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-GitHub-Delivery", "surface-traced")
		req.Header.Set("X-Hub-Signature-256", "sha256="+strings.Repeat("0", 64))
		req.Header.Set("traceparent", "00-"+foreignTrace+"-00f067aa0ba902b7-01")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("a wrongly signed push got %s", resp.Status)
		}
		var webhookSpans int
		for _, s := range f.spans.GetSpans() {
			if s.SpanContext.TraceID().String() == foreignTrace {
				t.Fatalf("span %q joined the client's trace", s.Name)
			}
			if s.Name == "POST /webhooks/github" {
				webhookSpans++
			}
		}
		if webhookSpans == 0 {
			t.Error("no webhook span was recorded at all")
		}
	})
}
