package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/ferrycd/ferry/cmd/ferry/cli"
	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/integration/testenv"
	"github.com/ferrycd/ferry/integration/webhook"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	"github.com/ferrycd/ferry/worker"
)

var appGVR = schema.GroupVersionResource{Group: v1alpha1.Group, Version: v1alpha1.Version, Resource: v1alpha1.Resource}

const testSecret = "it-is-a-secret"

// testReadToken is the read-only API token of every ferry a test starts.
const testReadToken = "read-only-token"

// ferry is a running `ferry serve` for one test.
type ferry struct {
	// url is the webhook listener, api the API listener.
	url   string
	api   string
	info  cli.ServeInfo
	spans *tracetest.InMemoryExporter
}

func startFerry(t *testing.T, cp *testenv.ControlPlane, tweaks ...func(*cli.ServeOptions)) *ferry {
	t.Helper()
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	readTokenFile := filepath.Join(dir, "read-token")
	if err := os.WriteFile(readTokenFile, []byte(testReadToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	ready := make(chan cli.ServeInfo, 1)
	o := cli.DefaultServeOptions()
	o.Listen = "127.0.0.1:0"
	o.APIListen = "127.0.0.1:0"
	o.APIReadTokenFile = readTokenFile
	o.DataDir = filepath.Join(dir, "data")
	o.RestConfig = cp.Config
	o.GitHubWebhookSecretFile = secretFile
	o.TracerProvider = tp
	o.Stderr = t.Output()
	o.LogLevel = "warn"
	o.OnReady = func(i cli.ServeInfo) { ready <- i }
	o.PollInterval = 0
	for _, tweak := range tweaks {
		tweak(&o)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cli.Serve(ctx, o) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ferry serve: %v", err)
		}
	})
	select {
	case info := <-ready:
		return &ferry{url: "http://" + info.HTTPAddr, api: "http://" + info.APIAddr, info: info, spans: spans}
	case err := <-done:
		t.Fatalf("ferry serve exited: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("ferry serve did not become ready")
	}
	return nil
}

// apiGet GETs path from f's API listener with the read-only token.
func (f *ferry) apiGet(t *testing.T, path string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, f.api+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testReadToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// eventsStored is the sequence of the last event stored in the events
// stream; it only grows.
func (f *ferry) eventsStored(t *testing.T) uint64 {
	t.Helper()
	js, err := jetstream.New(f.info.NATS)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), worker.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

func createApp(t *testing.T, dyn dynamic.Interface, app *v1alpha1.Application) {
	t.Helper()
	app.APIVersion, app.Kind = v1alpha1.APIVersion, v1alpha1.Kind
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(app)
	if err != nil {
		t.Fatal(err)
	}
	delete(obj, "status")
	if _, err := dyn.Resource(appGVR).Namespace(app.Namespace).Create(t.Context(), &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating application %s: %v", app.Name, err)
	}
}

func createNamespace(t *testing.T, kube kubernetes.Interface, name string) {
	t.Helper()
	if _, err := kube.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
}

func getApp(t *testing.T, dyn dynamic.Interface, ns, name string) *v1alpha1.Application {
	t.Helper()
	u, err := dyn.Resource(appGVR).Namespace(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	app := &v1alpha1.Application{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, app); err != nil {
		t.Fatal(err)
	}
	return app
}

// eventually polls cond until it returns true or the deadline passes. The
// deadline bounds the test; it is not a speed assertion.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("%s did not happen within 60s; last state: %s", what, last)
}

func configMap(name, value string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata:
  name: %s
data:
  greeting: %q
`, name, value)
}

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 0
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: nginx:1.27.0
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
    - port: 80
`

func TestPushIsSyncedEndToEnd(t *testing.T) {
	cp := testenv.StartT(t)
	git := gitserver.New(t)
	repo := git.NewRepo(t, "platform/gitops")
	repo.WriteFile(t, "components/web/config.yaml", configMap("web-config", "hello"))
	repo.WriteFile(t, "components/web/deployment.yaml", deployment)
	repo.WriteFile(t, "README.md", "the platform\n")
	first := repo.Commit(t, "add web")

	f := startFerry(t, cp)
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	kube := kubernetes.NewForConfigOrDie(cp.Config)
	createNamespace(t, kube, "web")
	createApp(t, dyn, &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ferry"},
		Spec: v1alpha1.ApplicationSpec{
			Source:      &v1alpha1.ApplicationSource{RepoURL: repo.URL(), TargetRevision: "main", Path: "components/web"},
			Destination: v1alpha1.Destination{Server: "https://kubernetes.default.svc", Namespace: "web"},
			SyncPolicy:  &v1alpha1.SyncPolicy{Automated: &v1alpha1.Automated{Prune: true, SelfHeal: true}},
		},
	})
	push := func(t *testing.T, delivery, before, after string, modified ...string) time.Time {
		t.Helper()
		body := webhook.Push{
			CloneURL: repo.URL(), FullName: "platform/gitops", DefaultBranch: "main",
			Ref: "refs/heads/main", Before: before, After: after,
			Commits: []webhook.Commit{{ID: after, Message: "change", Modified: modified}},
		}.Payload()
		sent := time.Now()
		resp, err := webhook.Send(t.Context(), f.url+"/webhooks/github", "push", delivery, []byte(testSecret), body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != 202 {
			t.Fatalf("push webhook: got %d %s, want 202", resp.Status, resp.Body)
		}
		return sent
	}
	waitSynced := func(t *testing.T, revision, greeting string) {
		t.Helper()
		eventually(t, "sync of "+revision[:8], func() (bool, string) {
			app := getApp(t, dyn, "ferry", "web")
			cm, err := kube.CoreV1().ConfigMaps("web").Get(t.Context(), "web-config", metav1.GetOptions{})
			got := ""
			if err == nil {
				got = cm.Data["greeting"]
			}
			return app.Status.Sync.Revision == revision && app.Status.Sync.Status == v1alpha1.SyncStatusSynced && got == greeting,
				fmt.Sprintf("status=%+v lastError=%q greeting=%q", app.Status.Sync, app.Status.LastError, got)
		})
	}

	t.Run("a created app syncs by itself at the head of its branch", func(t *testing.T) {
		waitSynced(t, first, "hello")
	})

	var firstTrace string
	t.Run("applies the objects of the pushed commit", func(t *testing.T) {
		repo.WriteFile(t, "components/web/config.yaml", configMap("web-config", "pushed"))
		repo.WriteFile(t, "components/web/deployment.yaml", strings.Replace(deployment, "nginx:1.27.0", "nginx:1.27.1", 1))
		pushed := repo.Commit(t, "bump nginx")
		sent := push(t, "delivery-1", first, pushed, "components/web/config.yaml", "components/web/deployment.yaml")
		waitSynced(t, pushed, "pushed")
		t.Logf("push to applied: %s", time.Since(sent).Round(time.Millisecond))
		first = pushed
		for _, name := range []string{"web"} {
			d, err := kube.AppsV1().Deployments("web").Get(t.Context(), name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("deployment %s: %v", name, err)
			}
			if img := d.Spec.Template.Spec.Containers[0].Image; img != "nginx:1.27.1" {
				t.Errorf("deployment image = %q, want the pushed nginx:1.27.1", img)
			}
			if d.Annotations[v1alpha1.AnnotationApp] != "ferry/web" {
				t.Errorf("deployment tracking annotation = %q, want ferry/web", d.Annotations[v1alpha1.AnnotationApp])
			}
			if !slices.ContainsFunc(d.ManagedFields, func(m metav1.ManagedFieldsEntry) bool {
				return m.Manager == "ferry" && m.Operation == metav1.ManagedFieldsOperationApply
			}) {
				t.Errorf("deployment is not server-side-applied by field manager ferry: %+v", d.ManagedFields)
			}
		}
		if _, err := kube.CoreV1().Services("web").Get(t.Context(), "web", metav1.GetOptions{}); err != nil {
			t.Errorf("service: %v", err)
		}
		app := getApp(t, dyn, "ferry", "web")
		last := app.Status.History[len(app.Status.History)-1]
		if last.Revision != pushed || last.Trigger != "push" {
			t.Fatalf("last history entry %+v, want revision %s by push", last, pushed)
		}
		firstTrace = last.TraceID
		if firstTrace == "" {
			t.Error("history entry has no trace ID")
		}
	})

	t.Run("one trace holds ingest, dispatch, render and apply", func(t *testing.T) {
		if firstTrace == "" {
			t.Skip("first sync did not record a trace ID")
		}
		want := []string{"ingest.webhook", "dispatch", "render", "git.fetch", "apply", "status"}
		eventually(t, "all spans of the first sync", func() (bool, string) {
			var names []string
			for _, s := range f.spans.GetSpans() {
				if s.SpanContext.TraceID().String() == firstTrace {
					names = append(names, s.Name)
				}
			}
			for _, w := range want {
				if !slices.Contains(names, w) {
					return false, fmt.Sprintf("spans in trace %s: %v", firstTrace, names)
				}
			}
			return true, ""
		})
		// The chain crosses NATS twice: render's parent must be in the
		// same trace as the webhook, and so on; check parents resolve.
		byID := map[string]sdktrace.ReadOnlySpan{}
		spans := f.spans.GetSpans().Snapshots()
		for _, s := range spans {
			byID[s.SpanContext().SpanID().String()] = s
		}
		for _, s := range spans {
			if s.SpanContext().TraceID().String() != firstTrace || !s.Parent().IsValid() {
				continue
			}
			if _, ok := byID[s.Parent().SpanID().String()]; !ok {
				t.Errorf("span %s has a parent %s that is not in the trace", s.Name(), s.Parent().SpanID())
			}
		}
	})

	t.Run("a second commit changing a ConfigMap value is applied", func(t *testing.T) {
		repo.WriteFile(t, "components/web/config.yaml", configMap("web-config", "hello again"))
		second := repo.Commit(t, "change greeting")
		sent := push(t, "delivery-2", first, second, "components/web/config.yaml")
		waitSynced(t, second, "hello again")
		t.Logf("push to applied: %s", time.Since(sent).Round(time.Millisecond))

		t.Run("a late push of the older commit does not roll the app back", func(t *testing.T) {
			before := f.results(t)["web"]
			push(t, "delivery-late", strings.Repeat("0", 40), first, "components/web/config.yaml")
			f.quiet(t)
			app := getApp(t, dyn, "ferry", "web")
			cm, err := kube.CoreV1().ConfigMaps("web").Get(t.Context(), "web-config", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if app.Status.Sync.Revision != second || cm.Data["greeting"] != "hello again" {
				t.Errorf("after a late push of %.8s the app is at %.8s with greeting %q", first, app.Status.Sync.Revision, cm.Data["greeting"])
			}
			if after := f.results(t)["web"]; after != before {
				t.Errorf("the late push synced the app (%d results, want %d)", after, before)
			}
		})
	})

	t.Run("a wrong signature gets 401 and publishes nothing", func(t *testing.T) {
		before := f.eventsStored(t)
		body := webhook.Push{CloneURL: repo.URL(), FullName: "platform/gitops", DefaultBranch: "main",
			Ref: "refs/heads/main", Before: first, After: first}.Payload()
		resp, err := webhook.Send(t.Context(), f.url+"/webhooks/github", "push", "delivery-bad", []byte("not-the-secret"), body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != 401 {
			t.Fatalf("got %d %s, want 401", resp.Status, resp.Body)
		}
		resp, err = webhook.Send(t.Context(), f.url+"/webhooks/github", "push", "delivery-unsigned", nil, body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != 401 {
			t.Fatalf("unsigned: got %d %s, want 401", resp.Status, resp.Body)
		}
		if after := f.eventsStored(t); after != before {
			t.Fatalf("events stream grew from %d to %d after rejected webhooks", before, after)
		}
	})
}
