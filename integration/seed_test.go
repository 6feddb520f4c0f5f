package integration

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/integration/testenv"
	"github.com/ferrycd/ferry/integration/webhook"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// writeSeed commits integration/testdata/seed/components to repo, with
// {{REPO_URL}} replaced; argo rewrites the Application documents the way an
// Argo CD repository spells them.
func writeSeed(t *testing.T, repo *gitserver.Repo, argo bool) string {
	t.Helper()
	root := filepath.Join("testdata", "seed")
	err := filepath.WalkDir(filepath.Join(root, "components"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		text := strings.ReplaceAll(string(b), "{{REPO_URL}}", repo.URL())
		if argo && strings.Contains(text, "kind: Application") {
			text = strings.NewReplacer(
				"apiVersion: ferry.dev/v1alpha1", "apiVersion: argoproj.io/v1alpha1",
				"namespace: ferry\n", "namespace: argocd\n",
				"ferry.dev/resources-finalizer", "resources-finalizer.argocd.argoproj.io",
				"spec:\n", "spec:\n  project: default\n  revisionHistoryLimit: 3\n",
			).Replace(text)
		}
		rel, _ := filepath.Rel(root, p)
		repo.WriteFile(t, filepath.ToSlash(rel), text)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return repo.Commit(t, "the platform")
}

func createRoot(t *testing.T, dyn dynamic.Interface, repoURL string) {
	t.Helper()
	createSeedKey(t, dyn)
	b, err := os.ReadFile(filepath.Join("testdata", "seed", "root.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var app v1alpha1.Application
	if err := yaml.Unmarshal([]byte(strings.ReplaceAll(string(b), "{{REPO_URL}}", repoURL)), &app); err != nil {
		t.Fatal(err)
	}
	createApp(t, dyn, &app)
}

// createSeedKey puts the seed's throwaway age key in ferry's key Secret,
// as an operator puts theirs.
func createSeedKey(t *testing.T, dyn dynamic.Interface) {
	t.Helper()
	key, err := os.ReadFile(filepath.Join("testdata", "seed-key", "demo.agekey"))
	if err != nil {
		t.Fatal(err)
	}
	secret := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Secret",
		"metadata":   map[string]any{"name": "ferry-sops", "namespace": "ferry"},
		"stringData": map[string]any{"demo.agekey": string(key)},
	}}
	if _, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "secrets"}).Namespace("ferry").Create(t.Context(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// clusterState lists the objects ferry manages, as kind/namespace/name.
func clusterState(t *testing.T, dyn dynamic.Interface) []string {
	t.Helper()
	var out []string
	for _, gvr := range []schema.GroupVersionResource{
		{Version: "v1", Resource: "namespaces"}, {Version: "v1", Resource: "services"}, {Version: "v1", Resource: "configmaps"},
		{Version: "v1", Resource: "secrets"},
		{Group: "apps", Version: "v1", Resource: "deployments"}, {Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"},
		{Group: "certs.example.com", Version: "v1", Resource: "certificates"}, appGVR,
	} {
		list, err := dyn.Resource(gvr).List(t.Context(), metav1.ListOptions{LabelSelector: v1alpha1.LabelManaged + "=true"})
		if err != nil {
			continue // the Certificate kind may not exist yet
		}
		for _, u := range list.Items {
			out = append(out, fmt.Sprintf("%s/%s/%s", u.GetKind(), u.GetNamespace(), u.GetName()))
		}
	}
	sort.Strings(out)
	return out
}

var seedState = []string{
	"Application/ferry/blog", "Application/ferry/certs", "Application/ferry/ingress",
	"Certificate/certs/blog-tls",
	"ConfigMap/ingress/edge-proxy-config-",
	"CustomResourceDefinition//certificates.certs.example.com",
	"Deployment/blog/blog", "Deployment/ingress/edge-proxy",
	"Namespace//blog", "Namespace//certs", "Namespace//ingress",
	"Secret/ingress/edge-basic-auth",
	"Service/blog/blog", "Service/ingress/edge-proxy",
}

// matchesSeed compares a cluster state with seedState; the generated
// ConfigMap's hash suffix is not compared.
func matchesSeed(state []string) bool {
	got := slices.Clone(state)
	for i, s := range got {
		if strings.HasPrefix(s, "ConfigMap/ingress/edge-proxy-config-") {
			got[i] = "ConfigMap/ingress/edge-proxy-config-"
		}
	}
	return slices.Equal(got, seedState)
}

func waitSeed(t *testing.T, dyn dynamic.Interface, revision string) {
	t.Helper()
	eventually(t, "the seed repository to sync completely", func() (bool, string) {
		for _, name := range []string{"root", "blog", "ingress", "certs"} {
			u, err := dyn.Resource(appGVR).Namespace("ferry").Get(t.Context(), name, metav1.GetOptions{})
			if err != nil {
				return false, name + ": " + err.Error()
			}
			var a v1alpha1.Application
			_ = runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &a)
			if a.Status.Sync.Revision != revision || a.Status.Sync.Status != v1alpha1.SyncStatusSynced {
				return false, fmt.Sprintf("%s: %+v %s", name, a.Status.Sync, a.Status.LastError)
			}
		}
		state := clusterState(t, dyn)
		return matchesSeed(state), fmt.Sprint(state)
	})
}

func blogImage(t *testing.T, kube kubernetes.Interface) string {
	d, err := kube.AppsV1().Deployments("blog").Get(t.Context(), "blog", metav1.GetOptions{})
	if err != nil {
		return "absent"
	}
	return d.Spec.Template.Spec.Containers[0].Image
}

func TestSeedRepository(t *testing.T) {
	cp := testenv.StartT(t)
	git := gitserver.New(t)
	repo := git.NewRepo(t, "platform/seed")
	first := writeSeed(t, repo, false)
	f := startFerry(t, cp)
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	kube := kubernetes.NewForConfigOrDie(cp.Config)
	createRoot(t, dyn, repo.URL())

	t.Run("syncs completely from one root Application", func(t *testing.T) {
		waitSeed(t, dyn, first)
		if img := blogImage(t, kube); img != "ghcr.io/example/blog:1.0.0" {
			t.Errorf("blog image %q", img)
		}
		if _, err := kube.CoreV1().ConfigMaps("ingress").Get(t.Context(), "must-not-exist", metav1.GetOptions{}); err == nil {
			t.Error("a file the kustomization does not list was deployed")
		}
		s, err := kube.CoreV1().Secrets("ingress").Get(t.Context(), "edge-basic-auth", metav1.GetOptions{})
		if err != nil || string(s.Data["username"]) != "admin" || string(s.Data["password"]) != "correct-horse-battery-staple" {
			t.Errorf("the KSOPS Secret is not in the cluster decrypted: %v", err)
		}
	})

	t.Run("an image-tag bump reaches only the blog app", func(t *testing.T) {
		f.quiet(t)
		before := f.results(t)
		values := "replicaCount: 0\nimage:\n  repository: ghcr.io/example/blog\n  tag: \"1.1.0\"\nservice:\n  port: 80\n"
		repo.WriteFile(t, "components/apps/blog/values.yaml", values)
		bump := repo.Commit(t, "ci: bump blog to 1.1.0")
		resp, err := webhook.Send(t.Context(), f.url+"/webhooks/github", "push", "seed-bump", []byte(testSecret), webhook.Push{
			CloneURL: repo.URL(), FullName: "platform/seed", DefaultBranch: "main", Ref: "refs/heads/main",
			Before: first, After: bump, Commits: []webhook.Commit{{ID: bump, Modified: []string{"components/apps/blog/values.yaml"}}},
		}.Payload())
		if err != nil || resp.Status != 202 {
			t.Fatalf("webhook %v %+v", err, resp)
		}
		eventually(t, "the new tag in the cluster", func() (bool, string) {
			img := blogImage(t, kube)
			return img == "ghcr.io/example/blog:1.1.0", img
		})
		f.quiet(t)
		after := f.results(t)
		for _, app := range []string{"root", "blog", "ingress", "certs"} {
			want := 0
			if app == "blog" {
				want = 1
			}
			if got := after[app] - before[app]; got != want {
				t.Errorf("%s synced %d times for the bump, want %d", app, got, want)
			}
		}
		first = bump
	})

	t.Run("removing a child app from Git removes it, and its resources only with the finalizer", func(t *testing.T) {
		repo.Remove(t, "components/ingress.yaml") // no finalizer
		repo.Remove(t, "components/blog.yaml")    // ferry.dev/resources-finalizer
		gone := repo.Commit(t, "retire ingress and blog")
		resp, err := webhook.Send(t.Context(), f.url+"/webhooks/github", "push", "seed-remove", []byte(testSecret), webhook.Push{
			CloneURL: repo.URL(), FullName: "platform/seed", DefaultBranch: "main", Ref: "refs/heads/main",
			Before: first, After: gone, Commits: []webhook.Commit{{ID: gone, Removed: []string{"components/ingress.yaml", "components/blog.yaml"}}},
		}.Payload())
		if err != nil || resp.Status != 202 {
			t.Fatalf("webhook %v %+v", err, resp)
		}
		eventually(t, "both child apps to be deleted", func() (bool, string) {
			var left []string
			for _, name := range []string{"ingress", "blog"} {
				if _, err := dyn.Resource(appGVR).Namespace("ferry").Get(t.Context(), name, metav1.GetOptions{}); err == nil {
					left = append(left, name)
				}
			}
			return len(left) == 0, fmt.Sprint(left)
		})
		eventually(t, "the blog's resources to be deleted", func() (bool, string) {
			return blogImage(t, kube) == "absent", blogImage(t, kube)
		})
		if _, err := kube.AppsV1().Deployments("ingress").Get(t.Context(), "edge-proxy", metav1.GetOptions{}); err != nil {
			t.Errorf("the ingress app had no finalizer, yet its Deployment went: %v", err)
		}
	})
}

func TestSeedRepositoryWrittenForArgoCD(t *testing.T) {
	cp := testenv.StartT(t)
	git := gitserver.New(t)
	repo := git.NewRepo(t, "platform/seed-argo")
	head := writeSeed(t, repo, true)
	startFerry(t, cp)
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	createRoot(t, dyn, repo.URL())
	waitSeed(t, dyn, head)
	for _, gvr := range []schema.GroupVersionResource{{Group: "argoproj.io", Version: "v1alpha1", Resource: "applications"}} {
		if _, err := dyn.Resource(gvr).List(t.Context(), metav1.ListOptions{}); err == nil {
			t.Errorf("%s exists in the cluster: argoproj.io objects must never be applied", gvr)
		}
	}
	u, err := dyn.Resource(appGVR).Namespace("ferry").Get(t.Context(), "blog", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if fins := u.GetFinalizers(); !slices.Equal(fins, []string{v1alpha1.ResourcesFinalizer}) {
		t.Errorf("finalizers %v, want Argo CD's mapped to %s", fins, v1alpha1.ResourcesFinalizer)
	}
	if spec, _, _ := unstructured.NestedString(u.Object, "spec", "project"); spec != "default" {
		t.Errorf("project %q, want it kept", spec)
	}
	eventually(t, "the unsupported field to be reported in the app's conditions", func() (bool, string) {
		a := getApp(t, dyn, "ferry", "blog")
		return slices.ContainsFunc(a.Status.Conditions, func(c v1alpha1.Condition) bool {
			return c.Type == v1alpha1.ConditionUnsupportedFields && strings.Contains(c.Message, "spec.revisionHistoryLimit")
		}), fmt.Sprintf("%+v", a.Status.Conditions)
	})
}
