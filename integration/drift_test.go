package integration

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/ferrycd/ferry/cmd/ferry/cli"
	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/integration/testenv"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

func TestDriftHealthAndSelfHeal(t *testing.T) {
	cp := testenv.StartT(t)
	git := gitserver.New(t)
	repo := git.NewRepo(t, "platform/drift")
	repo.WriteFile(t, "apps/healed/config.yaml", configMap("healed", "from git"))
	repo.WriteFile(t, "apps/healed/deployment.yaml", deploymentWithImage("healed", "nginx:1.27.0"))
	repo.WriteFile(t, "apps/reported/config.yaml", configMap("reported", "from git"))
	repo.Commit(t, "apps")
	f := startFerry(t, cp, func(o *cli.ServeOptions) {})
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	kube := kubernetes.NewForConfigOrDie(cp.Config)
	createNamespace(t, kube, "drift")
	for name, selfHeal := range map[string]bool{"healed": true, "reported": false} {
		createApp(t, dyn, &v1alpha1.Application{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ferry"},
			Spec: v1alpha1.ApplicationSpec{
				Source:      &v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "apps/" + name},
				Destination: v1alpha1.Destination{Namespace: "drift"},
				SyncPolicy:  &v1alpha1.SyncPolicy{Automated: &v1alpha1.Automated{Prune: true, SelfHeal: selfHeal}},
			},
		})
	}
	for _, name := range []string{"healed", "reported"} {
		eventually(t, name+" synced and healthy", func() (bool, string) {
			a := getApp(t, dyn, "ferry", name)
			return a.Status.Sync.Status == v1alpha1.SyncStatusSynced && a.Status.Health.Status == "Healthy", fmt.Sprintf("%+v %+v", a.Status.Sync, a.Status.Health)
		})
	}
	greeting := func(name string) string {
		cm, err := kube.CoreV1().ConfigMaps("drift").Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return "absent"
		}
		return cm.Data["greeting"]
	}
	edit := func(name string) {
		t.Helper()
		patch := []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"` + name + `"},"data":{"greeting":"edited by hand"}}`)
		force := true
		if _, err := kube.CoreV1().ConfigMaps("drift").Patch(t.Context(), name, types.ApplyPatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-edit", Force: &force}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("an edit by another manager is reverted with selfHeal", func(t *testing.T) {
		edit("healed")
		eventually(t, "the edit to be reverted", func() (bool, string) {
			return greeting("healed") == "from git", greeting("healed")
		})
		eventually(t, "a self-heal entry in the history", func() (bool, string) {
			a := getApp(t, dyn, "ferry", "healed")
			return slices.ContainsFunc(a.Status.History, func(h v1alpha1.SyncHistory) bool { return h.Trigger == "drift" }), fmt.Sprintf("%+v", a.Status.History)
		})
	})

	t.Run("a deleted object is recreated", func(t *testing.T) {
		if err := kube.AppsV1().Deployments("drift").Delete(t.Context(), "healed", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the deployment to come back", func() (bool, string) {
			_, err := kube.AppsV1().Deployments("drift").Get(t.Context(), "healed", metav1.GetOptions{})
			return err == nil, fmt.Sprint(err)
		})
	})

	t.Run("without selfHeal the edit is only reported, with the object named", func(t *testing.T) {
		edit("reported")
		eventually(t, "the app to be OutOfSync", func() (bool, string) {
			a := getApp(t, dyn, "ferry", "reported")
			named := slices.ContainsFunc(a.Status.Conditions, func(c v1alpha1.Condition) bool {
				return strings.Contains(c.Message, "ConfigMap") && strings.Contains(c.Message, "reported")
			})
			return a.Status.Sync.Status == v1alpha1.SyncStatusOutOfSync && named, fmt.Sprintf("%+v %+v", a.Status.Sync, a.Status.Conditions)
		})
		if g := greeting("reported"); g != "edited by hand" {
			t.Errorf("greeting %q: the edit was reverted without selfHeal", g)
		}
		out, err := runCLI(t, f, "app", "diff", "reported")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "edited by hand") || !strings.Contains(out, "from git") {
			t.Errorf("diff does not show the edit:\n%s", out)
		}
	})
}
