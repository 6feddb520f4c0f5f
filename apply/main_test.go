package apply

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/ferrycd/ferry/integration/testenv"
)

// One control plane (etcd, kube-apiserver, kube-controller-manager) for
// every test of the package; tests use unique names.
var (
	testCfg *rest.Config
	testDyn dynamic.Interface
)

// inventoryNS is ferry's namespace in the tests.
const inventoryNS = "ferry"

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	opts := testenv.DefaultOptions()
	opts.BuildOutput = os.Stderr
	cp, err := testenv.Start(ctx, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "apply tests: control plane did not start: %v\n", err)
		return 1
	}
	defer func() {
		if err := cp.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "apply tests: %v\n", err)
		}
	}()
	testCfg = rest.CopyConfig(cp.Config)
	testCfg.QPS, testCfg.Burst = -1, 0 // no client-side throttling
	testDyn = dynamic.NewForConfigOrDie(testCfg)
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": inventoryNS}}}
	if _, err := testDyn.Resource(namespaces).Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		fmt.Fprintf(os.Stderr, "apply tests: creating namespace %s: %v\n", inventoryNS, err)
		return 1
	}
	return m.Run()
}

// requestLog records the requests an Applier makes.
type requestLog struct {
	mu   sync.Mutex
	reqs []string
}

func (l *requestLog) add(method, path string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reqs = append(l.reqs, method+" "+path)
}

func (l *requestLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reqs = nil
}

// all returns every request since the last reset.
func (l *requestLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.reqs...)
}

// writes returns the requests that can change the cluster.
func (l *requestLog) writes() []string {
	var out []string
	for _, r := range l.all() {
		if !strings.HasPrefix(r, http.MethodGet+" ") {
			out = append(out, r)
		}
	}
	return out
}

// index returns the position of the first request matching re, or -1.
func (l *requestLog) index(re string) int {
	rx := regexp.MustCompile(re)
	for i, r := range l.all() {
		if rx.MatchString(r) {
			return i
		}
	}
	return -1
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// countingConfig returns a copy of the test config whose requests go
// into log.
func countingConfig(log *requestLog) *rest.Config {
	cfg := rest.CopyConfig(testCfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			path := r.URL.Path
			if r.URL.Query().Has("dryRun") {
				path += "?dryRun"
			}
			log.add(r.Method, path)
			return rt.RoundTrip(r)
		})
	})
	return cfg
}

// newApplier returns an Applier for the test control plane with short
// waits, and the log of its requests.
func newApplier(t *testing.T) (*Applier, *requestLog) {
	t.Helper()
	log := &requestLog{}
	a, err := New(countingConfig(log), Options{
		InventoryNamespace: inventoryNS, HookTimeout: 30 * time.Second, CRDTimeout: 30 * time.Second, PollInterval: 100 * time.Millisecond,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a, log
}

var nameSeq atomic.Int64

// uniqueName returns a DNS label unique in this test binary, readable
// from the test's name.
func uniqueName(t *testing.T) string {
	t.Helper()
	base := strings.ToLower(regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(t.Name(), "-"))
	if len(base) > 40 {
		base = base[len(base)-40:]
	}
	return strings.Trim(fmt.Sprintf("%s-%d", strings.Trim(base, "-"), nameSeq.Add(1)), "-")
}

// newNamespace creates a namespace for the test and deletes it after.
func newNamespace(t *testing.T) string {
	t.Helper()
	name := uniqueName(t)
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": name}}}
	if _, err := testDyn.Resource(namespaces).Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = testDyn.Resource(namespaces).Delete(context.Background(), name, metav1.DeleteOptions{}) })
	return name
}

// objects parses YAML documents separated by "---".
func objects(t *testing.T, docs ...string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, doc := range docs {
		for _, part := range strings.Split(doc, "\n---\n") {
			if strings.TrimSpace(part) == "" {
				continue
			}
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(part), &u.Object); err != nil {
				t.Fatalf("bad test YAML: %v\n%s", err, part)
			}
			out = append(out, u)
		}
	}
	return out
}

func configMap(name string, data map[string]string, annotations map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n", name)
	if len(annotations) > 0 {
		b.WriteString("  annotations:\n")
		for k, v := range annotations {
			fmt.Fprintf(&b, "    %s: %q\n", k, v)
		}
	}
	if len(data) > 0 {
		b.WriteString("data:\n")
		for k, v := range data {
			fmt.Fprintf(&b, "  %s: %q\n", k, v)
		}
	}
	return b.String()
}

func deployment(name string, replicas string, image string) string {
	rep := ""
	if replicas != "" {
		rep = "  replicas: " + replicas + "\n"
	}
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
spec:
%[2]s  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
      containers:
      - name: app
        image: %[3]s
`, name, rep, image)
}

func service(name string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: %[1]s
spec:
  selector: {app: %[1]s}
  ports:
  - port: 80
`, name)
}

var (
	cmGVR     = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	deployGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	jobGVR    = schema.GroupVersionResource{Group: "batch", Version: "v1", Resource: "jobs"}
)

// get returns the live object, or nil when it does not exist.
func get(t *testing.T, gvr schema.GroupVersionResource, ns, name string) *unstructured.Unstructured {
	t.Helper()
	var ri dynamic.ResourceInterface = testDyn.Resource(gvr)
	if ns != "" {
		ri = testDyn.Resource(gvr).Namespace(ns)
	}
	u, err := ri.Get(t.Context(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// eventually polls cond until it holds, failing the test after a bounded
// deadline with the last message cond gave.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		select {
		case <-t.Context().Done():
			t.Fatalf("%s: %v", what, t.Context().Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("%s: not reached within the deadline; last: %s", what, last)
}

// actions maps each object of a result to its action.
func actions(res *Result) map[string]Action {
	out := map[string]Action{}
	for _, o := range res.Objects {
		out[o.Ref.String()] = o.Action
	}
	return out
}

// mustSync runs a sync that must succeed as an outcome too.
func mustSync(t *testing.T, a *Applier, opts SyncOptions, objs []*unstructured.Unstructured) *Result {
	t.Helper()
	res, err := a.Sync(t.Context(), opts, objs)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if res.Err != nil {
		t.Fatalf("Sync failed: %v", res.Err)
	}
	return res
}

func diffActions(t *testing.T, want map[string]Action, res *Result) {
	t.Helper()
	if d := cmp.Diff(want, actions(res)); d != "" {
		t.Errorf("actions (-want +got):\n%s", d)
	}
}
