package integration

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/integration/testenv"
	"github.com/ferrycd/ferry/integration/webhook"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

func TestAnAppProjectFromGitBoundsItsApps(t *testing.T) {
	cp := testenv.StartT(t)
	git := gitserver.New(t)
	repo := git.NewRepo(t, "platform/tenants")
	repo.WriteFile(t, "root/project.yaml", `apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata:
  name: team
  namespace: argocd
spec:
  sourceRepos: ['*']
  destinations:
    - server: https://kubernetes.default.svc
      namespace: team-ns
`)
	repo.WriteFile(t, "root/web.yaml", `apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: team-web
  namespace: argocd
spec:
  project: team
  source: {repoURL: `+repo.URL()+`, targetRevision: main, path: web}
  destination: {server: https://kubernetes.default.svc, namespace: team-ns}
  syncPolicy: {automated: {prune: true}}
`)
	repo.WriteFile(t, "web/config.yaml", configMap("team-config", "hello"))
	repo.WriteFile(t, "web/admin.yaml", `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: team-is-admin
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: ServiceAccount, name: default, namespace: team-ns}]
`)
	first := repo.Commit(t, "a tenant")

	f := startFerry(t, cp)
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	kube := kubernetes.NewForConfigOrDie(cp.Config)
	createNamespace(t, kube, "team-ns")
	createApp(t, dyn, &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "tenants", Namespace: "ferry"},
		Spec: v1alpha1.ApplicationSpec{
			Source:      &v1alpha1.ApplicationSource{RepoURL: repo.URL(), TargetRevision: "main", Path: "root"},
			Destination: v1alpha1.Destination{Namespace: "ferry"},
			SyncPolicy:  &v1alpha1.SyncPolicy{Automated: &v1alpha1.Automated{Prune: true}},
		},
	})

	t.Run("the child's sync is refused whole, naming the object and the rule", func(t *testing.T) {
		eventually(t, "team-web refused", func() (bool, string) {
			if _, err := dyn.Resource(v1alpha1.ProjectsResource).Namespace("ferry").Get(t.Context(), "team", metav1.GetOptions{}); err != nil {
				return false, "project: " + err.Error()
			}
			u, err := dyn.Resource(appGVR).Namespace("ferry").Get(t.Context(), "team-web", metav1.GetOptions{})
			if err != nil {
				return false, "child app: " + err.Error()
			}
			msg, _, _ := unstructured.NestedString(u.Object, "status", "lastError")
			return strings.Contains(msg, "ClusterRoleBinding.rbac.authorization.k8s.io/team-is-admin") &&
				strings.Contains(msg, "clusterResourceWhitelist"), msg
		})
		if _, err := kube.CoreV1().ConfigMaps("team-ns").Get(t.Context(), "team-config", metav1.GetOptions{}); err == nil {
			t.Error("an allowed object of the refused sync was applied")
		}
		if _, err := kube.RbacV1().ClusterRoleBindings().Get(t.Context(), "team-is-admin", metav1.GetOptions{}); err == nil {
			t.Fatal("the ClusterRoleBinding reached the cluster")
		}
	})

	t.Run("once Git drops what the project forbids, the app syncs", func(t *testing.T) {
		repo.Remove(t, "web/admin.yaml")
		fixed := repo.Commit(t, "no cluster-admin for the team")
		body := webhook.Push{
			CloneURL: repo.URL(), FullName: "platform/tenants", DefaultBranch: "main",
			Ref: "refs/heads/main", Before: first, After: fixed,
			Commits: []webhook.Commit{{ID: fixed, Message: "fix", Removed: []string{"web/admin.yaml"}}},
		}.Payload()
		if resp, err := webhook.Send(t.Context(), f.url+"/webhooks/github", "push", "tenants-1", []byte(testSecret), body); err != nil || resp.Status != 202 {
			t.Fatalf("push webhook: %v %+v", err, resp)
		}
		eventually(t, "team-web synced", func() (bool, string) {
			app := getApp(t, dyn, "ferry", "team-web")
			_, err := kube.CoreV1().ConfigMaps("team-ns").Get(t.Context(), "team-config", metav1.GetOptions{})
			return app.Status.Sync.Revision == fixed && err == nil, app.Status.LastError
		})
	})
}
