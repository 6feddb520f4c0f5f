package integration

import (
	"bytes"
	"fmt"
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
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

func TestManualSyncThroughTheCLI(t *testing.T) {
	cp := testenv.StartT(t)
	git := gitserver.New(t)
	repo := git.NewRepo(t, "platform/manual")
	repo.WriteFile(t, "apps/manual/config.yaml", configMap("manual", "by hand"))
	head := repo.Commit(t, "first")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("api-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := startFerry(t, cp, func(o *cli.ServeOptions) { o.APITokenFile = tokenFile })
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	kube := kubernetes.NewForConfigOrDie(cp.Config)
	createNamespace(t, kube, "manual")
	createApp(t, dyn, &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "manual", Namespace: "ferry"},
		Spec: v1alpha1.ApplicationSpec{
			Source:      &v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "apps/manual"},
			Destination: v1alpha1.Destination{Namespace: "manual"},
		},
	})
	eventually(t, "ferry to see the app", func() (bool, string) {
		var out, errb bytes.Buffer
		t.Setenv("FERRY_TOKEN", "api-token")
		code := cli.Run(t.Context(), []string{"app", "sync", "manual", "--server", f.api}, &out, &errb)
		return code == 0, errb.String()
	})

	t.Run("the CLI refuses without the token, naming the problem", func(t *testing.T) {
		t.Setenv("FERRY_TOKEN", "wrong")
		var out, errb bytes.Buffer
		if code := cli.Run(t.Context(), []string{"app", "sync", "manual", "--server", f.api}, &out, &errb); code == 0 {
			t.Fatal("sync with a wrong token succeeded")
		}
		if !strings.Contains(errb.String(), "unauthorized") {
			t.Errorf("error output %q does not say unauthorized", errb.String())
		}
	})

	eventually(t, "the manual sync to apply", func() (bool, string) {
		a := getApp(t, dyn, "ferry", "manual")
		n := len(a.Status.History)
		return a.Status.Sync.Revision == head && n > 0 && a.Status.History[n-1].Trigger == "manual",
			fmt.Sprintf("%+v %+v", a.Status.Sync, a.Status.History)
	})
	cm, err := kube.CoreV1().ConfigMaps("manual").Get(t.Context(), "manual", metav1.GetOptions{})
	if err != nil || cm.Data["greeting"] != "by hand" {
		t.Fatalf("ConfigMap %v %v", cm, err)
	}
}
