package integration

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/integration/testenv"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// TestUnreachableGitServerLosesNothing takes the git server away while an
// app is created: the app must say what it waits for, and sync by itself
// once the server is back.
func TestUnreachableGitServerLosesNothing(t *testing.T) {
	cp := testenv.StartT(t)
	git := gitserver.New(t)
	repo := git.NewRepo(t, "platform/flaky")
	repo.WriteFile(t, "apps/flaky/config.yaml", configMap("flaky", "patient"))
	head := repo.Commit(t, "first")

	target, _ := url.Parse(git.URL())
	proxy := httputil.NewSingleHostReverseProxy(target)
	var down atomic.Bool
	down.Store(true)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "git server down for maintenance", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()

	startFerry(t, cp)
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	kube := kubernetes.NewForConfigOrDie(cp.Config)
	createNamespace(t, kube, "flaky")
	createApp(t, dyn, &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "flaky", Namespace: "ferry"},
		Spec: v1alpha1.ApplicationSpec{
			Source:      &v1alpha1.ApplicationSource{RepoURL: front.URL + "/platform/flaky.git", Path: "apps/flaky"},
			Destination: v1alpha1.Destination{Namespace: "flaky"},
			SyncPolicy:  &v1alpha1.SyncPolicy{Automated: &v1alpha1.Automated{}},
		},
	})
	eventually(t, "the app to say what it waits for", func() (bool, string) {
		a := getApp(t, dyn, "ferry", "flaky")
		op := a.Status.OperationState
		return op != nil && strings.Contains(op.Message, "waiting for a dependency") && strings.Contains(a.Status.LastError, "flaky.git"),
			fmt.Sprintf("%+v lastError=%q", op, a.Status.LastError)
	})
	if a := getApp(t, dyn, "ferry", "flaky"); len(a.Status.History) != 0 {
		t.Errorf("an unreachable git server ended the sync: %+v", a.Status.History)
	}
	down.Store(false)
	eventually(t, "the app to sync once the server is back", func() (bool, string) {
		a := getApp(t, dyn, "ferry", "flaky")
		return a.Status.Sync.Revision == head && a.Status.Sync.Status == v1alpha1.SyncStatusSynced, fmt.Sprintf("%+v", a.Status.Sync)
	})
	cm, err := kube.CoreV1().ConfigMaps("flaky").Get(t.Context(), "flaky", metav1.GetOptions{})
	if err != nil || cm.Data["greeting"] != "patient" {
		t.Fatalf("ConfigMap %v %v", cm, err)
	}
}
