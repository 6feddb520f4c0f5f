package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func TestBinDir(t *testing.T) {
	t.Run("uses FERRY_CONTROLPLANE_DIR when set", func(t *testing.T) {
		want := t.TempDir()
		t.Setenv(BinDirEnv, want)
		got, err := BinDir()
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("BinDir() = %q, want %q", got, want)
		}
	})
	t.Run("defaults to .bin/controlplane at the repository root", func(t *testing.T) {
		t.Setenv(BinDirEnv, "")
		got, err := BinDir()
		if err != nil {
			t.Fatal(err)
		}
		root := filepath.Dir(filepath.Dir(got))
		if filepath.Base(got) != "controlplane" || filepath.Base(filepath.Dir(got)) != ".bin" {
			t.Errorf("BinDir() = %q, want <root>/.bin/controlplane", got)
		}
		if _, err := os.Stat(filepath.Join(root, "integration", "testenv", "testenv.go")); err != nil {
			t.Errorf("BinDir() = %q is not under the ferry repository root: %v", got, err)
		}
	})
}

func TestControlPlane(t *testing.T) {
	c := StartT(t)
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("reports server version v1.37.2", func(t *testing.T) {
		v, err := cs.Discovery().ServerVersion()
		if err != nil {
			t.Fatal(err)
		}
		if v.GitVersion != "v1.37.2" {
			t.Errorf("server version = %q, want v1.37.2", v.GitVersion)
		}
	})

	t.Run("writes an admin kubeconfig that works", func(t *testing.T) {
		cfg, err := clientcmd.BuildConfigFromFlags("", c.AdminKubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		admin, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.CoreV1().Namespaces().Get(t.Context(), "kube-system", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("runs kube-controller-manager so a Deployment becomes Available", func(t *testing.T) {
		ctx := t.Context()
		ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "testenv-"},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		labels := map[string]string{"app": "idle"}
		_, err = cs.AppsV1().Deployments(ns.Name).Create(ctx, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "idle"},
			Spec: appsv1.DeploymentSpec{
				Replicas: new(int32(0)),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{
						Name:  "idle",
						Image: "registry.k8s.io/pause:3.10",
					}}},
				},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}

		// A bounded wait for the deployment controller, not a timing check.
		deadline := time.Now().Add(60 * time.Second)
		var last *appsv1.Deployment
		for time.Now().Before(deadline) {
			last, err = cs.AppsV1().Deployments(ns.Name).Get(ctx, "idle", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, cond := range last.Status.Conditions {
				if cond.Type == appsv1.DeploymentAvailable && cond.Status == corev1.ConditionTrue {
					return
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("Deployment %s/idle did not become Available within 60s; status: %+v", ns.Name, last.Status)
	})

	t.Run("Stop kills kube-controller-manager", func(t *testing.T) {
		pid := c.kcm.Process.Pid
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("kube-controller-manager (pid %d) still exists after Stop: kill(pid, 0) = %v", pid, err)
		}
		if _, err := os.Stat(c.AdminKubeconfig); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("admin kubeconfig %s still exists after Stop: %v", c.AdminKubeconfig, err)
		}
		if _, err := cs.Discovery().ServerVersion(); err == nil {
			t.Error("kube-apiserver still answers after Stop")
		}
	})
}
