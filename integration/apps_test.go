package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/ferrycd/ferry/cmd/ferry/cli"
	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/integration/testenv"
	"github.com/ferrycd/ferry/integration/webhook"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

func deploymentWithImage(name, image string) string {
	return strings.NewReplacer("name: web", "name: "+name, "nginx:1.27.0", image, "app: web", "app: "+name, "{app: web}", "{app: "+name+"}").Replace(deployment)
}

// runCLI runs the ferry command line against f's API and returns its
// output. Without FERRY_TOKEN set by the test it reads with the read-only
// token.
func runCLI(t *testing.T, f *ferry, args ...string) (string, error) {
	t.Helper()
	if os.Getenv("FERRY_TOKEN") == "" {
		t.Setenv("FERRY_TOKEN", testReadToken)
	}
	var out, errb bytes.Buffer
	code := cli.Run(t.Context(), append(args, "--server", f.api), &out, &errb)
	if code != 0 {
		return out.String(), fmt.Errorf("ferry %s: exit %d: %s", strings.Join(args, " "), code, errb.String())
	}
	return out.String(), nil
}

func TestApplicationPolicies(t *testing.T) {
	cp := testenv.StartT(t)
	git := gitserver.New(t)
	repo := git.NewRepo(t, "platform/policies")
	repo.WriteFile(t, "apps/manual/deploy.yaml", deploymentWithImage("manual", "ghcr.io/example/blog:1.0.0"))
	repo.WriteFile(t, "apps/auto/config.yaml", configMap("auto", "on"))
	repo.WriteFile(t, "apps/broken/config.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\ndata: [unclosed\n")
	repo.WriteFile(t, "apps/suspended/config.yaml", configMap("suspended", "never"))
	first := repo.Commit(t, "apps")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tok"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FERRY_TOKEN", "tok")
	f := startFerry(t, cp, func(o *cli.ServeOptions) { o.APITokenFile = tokenFile })
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	kube := kubernetes.NewForConfigOrDie(cp.Config)
	createNamespace(t, kube, "policies")
	newApp := func(name string, mutate func(*v1alpha1.Application)) {
		a := &v1alpha1.Application{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ferry"},
			Spec: v1alpha1.ApplicationSpec{
				Source:      &v1alpha1.ApplicationSource{RepoURL: repo.URL(), TargetRevision: "main", Path: "apps/" + name},
				Destination: v1alpha1.Destination{Server: v1alpha1.InClusterServer, Namespace: "policies"},
				SyncPolicy:  &v1alpha1.SyncPolicy{Automated: &v1alpha1.Automated{}},
			},
		}
		if mutate != nil {
			mutate(a)
		}
		createApp(t, dyn, a)
	}
	image := func(name string) string {
		d, err := kube.AppsV1().Deployments("policies").Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return "absent"
		}
		return d.Spec.Template.Spec.Containers[0].Image
	}
	manual := func(a *v1alpha1.Application) { a.Spec.SyncPolicy = nil }
	newApp("manual", manual)
	newApp("auto", nil)
	newApp("suspended", func(a *v1alpha1.Application) { a.Spec.Suspend = true })
	two := int64(2)
	newApp("broken", func(a *v1alpha1.Application) {
		a.Spec.SyncPolicy.Retry = &v1alpha1.Retry{Limit: 2, Backoff: &v1alpha1.Backoff{Duration: "1s", Factor: &two, MaxDuration: "2s"}}
	})
	newApp("elsewhere", func(a *v1alpha1.Application) {
		a.Spec.Destination.Server = "https://prod.example.com:6443"
		a.Spec.Source.Path = "apps/auto"
	})
	eventually(t, "the automated app to sync", func() (bool, string) {
		a := getApp(t, dyn, "ferry", "auto")
		return a.Status.Sync.Status == v1alpha1.SyncStatusSynced, fmt.Sprintf("%+v", a.Status.Sync)
	})

	t.Run("a manual app waits for ferry app sync", func(t *testing.T) {
		if a := getApp(t, dyn, "ferry", "manual"); len(a.Status.History) != 0 || image("manual") != "absent" {
			t.Fatalf("the manual app synced by itself: %+v", a.Status)
		}
		repo.WriteFile(t, "apps/manual/deploy.yaml", deploymentWithImage("manual", "ghcr.io/example/blog:1.0.0")+"# touched\n")
		second := repo.Commit(t, "touch manual")
		resp, err := webhook.Send(t.Context(), f.url+"/webhooks/github", "push", "policies-1", []byte(testSecret), webhook.Push{
			CloneURL: repo.URL(), FullName: "platform/policies", DefaultBranch: "main", Ref: "refs/heads/main",
			Before: first, After: second, Commits: []webhook.Commit{{ID: second, Modified: []string{"apps/manual/deploy.yaml"}}},
		}.Payload())
		if err != nil || resp.Status != 202 {
			t.Fatalf("webhook %v %+v", err, resp)
		}
		eventually(t, "the manual app to show OutOfSync", func() (bool, string) {
			a := getApp(t, dyn, "ferry", "manual")
			return a.Status.Sync.Status == v1alpha1.SyncStatusOutOfSync && a.Status.Sync.Revision == second, fmt.Sprintf("%+v", a.Status.Sync)
		})
		if image("manual") != "absent" {
			t.Fatal("the push synced a manual app")
		}
		out, err := runCLI(t, f, "app", "sync", "manual", "--wait")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "sync succeeded at "+second[:12]) {
			t.Errorf("sync --wait output %q does not report success at %s", out, second[:12])
		}
		if got := image("manual"); got != "ghcr.io/example/blog:1.0.0" {
			t.Fatalf("image %q after manual sync", got)
		}
	})

	t.Run("rollback restores the previous image tag, and is refused while automated", func(t *testing.T) {
		repo.WriteFile(t, "apps/manual/deploy.yaml", deploymentWithImage("manual", "ghcr.io/example/blog:2.0.0"))
		bumped := repo.Commit(t, "bump manual to 2.0.0")
		if _, err := runCLI(t, f, "app", "sync", "manual", "--wait"); err != nil {
			t.Fatal(err)
		}
		if got := image("manual"); got != "ghcr.io/example/blog:2.0.0" {
			t.Fatalf("image %q after the bump", got)
		}
		out, err := runCLI(t, f, "app", "rollback", "manual")
		if err != nil {
			t.Fatal(err)
		}
		if got := image("manual"); got != "ghcr.io/example/blog:1.0.0" {
			t.Fatalf("image %q after rollback, want 1.0.0; output %s", got, out)
		}
		a := getApp(t, dyn, "ferry", "manual")
		last := a.Status.History[len(a.Status.History)-1]
		if last.Trigger != "rollback" || last.Revision == bumped {
			t.Errorf("last history entry %+v, want a rollback away from %s", last, bumped[:12])
		}
		if _, err := runCLI(t, f, "app", "rollback", "auto"); err == nil || !strings.Contains(err.Error(), "automated_sync_enabled") {
			t.Errorf("rollback of an automated app: %v, want refusal automated_sync_enabled", err)
		}
	})

	t.Run("retry backs off and then gives up with a failed status", func(t *testing.T) {
		sawRetry := false
		eventually(t, "the broken app to give up", func() (bool, string) {
			a := getApp(t, dyn, "ferry", "broken")
			if op := a.Status.OperationState; op != nil && op.Phase == v1alpha1.PhaseRunning && strings.Contains(op.Message, "retrying in") {
				sawRetry = true
			}
			n := len(a.Status.History)
			return n > 0 && a.Status.History[n-1].Phase == v1alpha1.PhaseFailed, fmt.Sprintf("%+v", a.Status.OperationState)
		})
		a := getApp(t, dyn, "ferry", "broken")
		if len(a.Status.History) != 1 {
			t.Errorf("history %+v, want one failed entry", a.Status.History)
		}
		msg := a.Status.History[0].Message
		for _, want := range []string{"apps/broken/config.yaml:", "gave up after 3 attempts"} {
			if !strings.Contains(msg, want) {
				t.Errorf("failure %q does not mention %q", msg, want)
			}
		}
		if !sawRetry {
			t.Log("the retrying state was not observed between polls (it lasts 1-2 s)")
		}
	})

	t.Run("a suspended app does nothing, and says so", func(t *testing.T) {
		if _, err := runCLI(t, f, "app", "sync", "suspended"); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the Suspended condition", func() (bool, string) {
			a := getApp(t, dyn, "ferry", "suspended")
			return slices.ContainsFunc(a.Status.Conditions, func(c v1alpha1.Condition) bool { return c.Type == v1alpha1.ConditionSuspended }),
				fmt.Sprintf("%+v", a.Status.Conditions)
		})
		a := getApp(t, dyn, "ferry", "suspended")
		if len(a.Status.History) != 0 {
			t.Errorf("a suspended app synced: %+v", a.Status.History)
		}
		if _, err := kube.CoreV1().ConfigMaps("policies").Get(t.Context(), "suspended", metav1.GetOptions{}); err == nil {
			t.Error("a suspended app's ConfigMap exists")
		}
	})

	t.Run("another cluster as destination is a clear error in status", func(t *testing.T) {
		eventually(t, "the destination error", func() (bool, string) {
			a := getApp(t, dyn, "ferry", "elsewhere")
			return strings.Contains(a.Status.LastError, "not the cluster ferry runs in"), a.Status.LastError
		})
	})

	t.Run("the CRD's schema rejects invalid Applications", func(t *testing.T) {
		bad := map[string]string{
			"no source":            `{"destination":{"namespace":"x"}}`,
			"no destination":       `{"source":{"repoURL":"https://example.com/r.git"}}`,
			"an empty repoURL":     `{"source":{"repoURL":""},"destination":{}}`,
			"a negative retry":     `{"source":{"repoURL":"r"},"destination":{},"syncPolicy":{"retry":{"limit":-5}}}`,
			"a bad duration":       `{"source":{"repoURL":"r"},"destination":{},"syncPolicy":{"retry":{"backoff":{"duration":"soon"}}}}`,
			"prune as a string":    `{"source":{"repoURL":"r"},"destination":{},"syncPolicy":{"automated":{"prune":"yes"}}}`,
			"a parameter nameless": `{"source":{"repoURL":"r","helm":{"parameters":[{"value":"v"}]}},"destination":{}}`,
		}
		for name, spec := range bad {
			var obj map[string]any
			if err := json.Unmarshal([]byte(`{"apiVersion":"ferry.dev/v1alpha1","kind":"Application","metadata":{"name":"invalid","namespace":"ferry"},"spec":`+spec+`}`), &obj); err != nil {
				t.Fatal(err)
			}
			_, err := dyn.Resource(appGVR).Namespace("ferry").Create(t.Context(), &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
			if err == nil {
				t.Errorf("an Application with %s was accepted", name)
				_ = dyn.Resource(appGVR).Namespace("ferry").Delete(t.Context(), "invalid", metav1.DeleteOptions{})
			}
		}
	})

	t.Run("the CLI lists, shows and tells the history of apps", func(t *testing.T) {
		out, err := runCLI(t, f, "app", "list")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"NAMESPACE", "SYNC", "HEALTH", "auto", "Synced", "manual", "(suspended)"} {
			if !strings.Contains(out, want) {
				t.Errorf("app list lacks %q:\n%s", want, out)
			}
		}
		out, err = runCLI(t, f, "app", "get", "manual", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var got v1alpha1.Application
		if err := json.Unmarshal([]byte(out), &got); err != nil || got.Name != "manual" || len(got.Status.Resources) == 0 {
			t.Fatalf("app get -o json: %v %+v", err, got)
		}
		out, err = runCLI(t, f, "app", "get", "manual")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"Sync policy:", "manual", "Deployment", "KIND"} {
			if !strings.Contains(out, want) {
				t.Errorf("app get lacks %q:\n%s", want, out)
			}
		}
		out, err = runCLI(t, f, "app", "history", "manual", "-o", "yaml")
		if err != nil || !strings.Contains(out, "trigger: rollback") || !strings.Contains(out, "traceID:") {
			t.Errorf("history -o yaml: %v\n%s", err, out)
		}
		out, err = runCLI(t, f, "app", "history", "manual")
		if err != nil || !strings.Contains(out, "TRIGGER") || !strings.Contains(out, "rollback") {
			t.Errorf("history table: %v\n%s", err, out)
		}
		if _, err := runCLI(t, f, "app", "get", "nope"); err == nil || !strings.Contains(err.Error(), "not_found") {
			t.Errorf("get of a missing app: %v", err)
		}
	})
}
