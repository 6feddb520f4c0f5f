package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/integration/hostile"
	"github.com/ferrycd/ferry/integration/testenv"
	"github.com/ferrycd/ferry/integration/webhook"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// TestHostileRendersNeverTakeFerryDown runs ferry's own binary with a
// 256 MiB render memory limit and a 10 s render timeout, and pushes, in one
// commit, five hostile apps and ten good ones. Each hostile app fails with
// a message naming the limit it passed (or the YAML decoder's own alias
// limit), the ten good apps sync, ferry's process is the one that started,
// and its peak RSS stays under the render limit plus a 256 MiB margin:
// what runs away is a render process, never ferry.
func TestHostileRendersNeverTakeFerryDown(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs ferry's binary")
	}
	cp := testenv.StartT(t)
	git := gitserver.New(t)
	repo := git.NewRepo(t, "platform/hostile")
	bad := map[string]string{ // path: what its error must name
		"kustomize-alias": "memory limit of 256 MiB",
		"directory-alias": "excessive aliasing",
		"helm-alias":      "excessive aliasing",
		"helm-repeat":     "memory limit of 256 MiB",
		"helm-endless":    "timed out after 10s",
	}
	writeHostile := func(salt string) {
		// salt changes every file, so that every app's inputs change.
		comment := "# " + salt + "\n"
		repo.WriteFile(t, "kustomize-alias/kustomization.yaml", "resources:\n  - bomb.yaml\n")
		repo.WriteFile(t, "kustomize-alias/bomb.yaml", hostile.AliasBombConfigMap()+comment)
		repo.WriteFile(t, "directory-alias/bomb.yaml", hostile.AliasBombConfigMap()+comment)
		repo.WriteFile(t, "helm-alias/Chart.yaml", hostile.Chart("bomb"))
		repo.WriteFile(t, "helm-alias/values.yaml", hostile.AliasBomb("")+comment)
		repo.WriteFile(t, "helm-alias/templates/cm.yaml", hostile.ValuesTemplate)
		repo.WriteFile(t, "helm-repeat/Chart.yaml", hostile.Chart("repeat"))
		repo.WriteFile(t, "helm-repeat/templates/cm.yaml", hostile.RepeatTemplate+comment)
		repo.WriteFile(t, "helm-endless/Chart.yaml", hostile.Chart("endless"))
		repo.WriteFile(t, "helm-endless/templates/cm.yaml", hostile.EndlessTemplate+comment)
	}
	const good = 10
	writeGood := func(value string) {
		for i := range good {
			repo.WriteFile(t, fmt.Sprintf("good-%d/config.yaml", i), configMap(fmt.Sprintf("good-%d", i), value))
		}
	}
	writeHostile("one")
	writeGood("one")
	first := repo.Commit(t, "apps, five of them hostile")

	f := startFerryBinary(t, cp, "--render-memory-limit=256Mi", "--render-timeout=10s")
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	kube := kubernetes.NewForConfigOrDie(cp.Config)
	createNamespace(t, kube, "hostile")
	newApp := func(name string) *v1alpha1.Application {
		return &v1alpha1.Application{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ferry"},
			Spec: v1alpha1.ApplicationSpec{
				Source:      &v1alpha1.ApplicationSource{RepoURL: repo.URL(), TargetRevision: "main", Path: name},
				Destination: v1alpha1.Destination{Namespace: "hostile"},
				SyncPolicy:  &v1alpha1.SyncPolicy{Automated: &v1alpha1.Automated{Prune: true}},
			},
		}
	}
	for path := range bad {
		createApp(t, dyn, newApp(path))
	}
	for i := range good {
		createApp(t, dyn, newApp(fmt.Sprintf("good-%d", i)))
	}
	eventually(t, "the good apps synced at the first commit", func() (bool, string) {
		return allAt(t, dyn, good, first)
	})

	// One push touches every app, hostile and good, at once.
	writeHostile("two")
	writeGood("two")
	second := repo.Commit(t, "touch everything")
	body := webhook.Push{
		CloneURL: repo.URL(), FullName: "platform/hostile", DefaultBranch: "main",
		Ref: "refs/heads/main", Before: first, After: second,
		Commits: []webhook.Commit{{ID: second, Message: "touch everything", Modified: touched(bad, good)}},
	}.Payload()
	if resp, err := webhook.Send(t.Context(), f.url+"/webhooks/github", "push", "hostile-2", []byte(testSecret), body); err != nil || resp.Status != 202 {
		t.Fatalf("push webhook: %v %+v", err, resp)
	}
	eventually(t, "the ten good apps synced at the push", func() (bool, string) {
		return allAt(t, dyn, good, second)
	})
	for path, want := range bad {
		eventually(t, path+" failed naming its limit", func() (bool, string) {
			app := getApp(t, dyn, "ferry", path)
			return strings.Contains(app.Status.LastError, want), app.Status.LastError
		})
		if app := getApp(t, dyn, "ferry", path); app.Status.Sync.Revision == second {
			t.Errorf("%s is at the push's revision %s although its render failed", path, second)
		}
	}
	f.checkAlive(t)
	peak := f.peakRSS(t)
	t.Logf("ferry's peak RSS: %d MiB (render memory limit 256 MiB)", peak>>20)
	if limit := int64(256+256) << 20; peak > limit {
		t.Errorf("ferry's peak RSS %d MiB passed the render memory limit plus its margin, %d MiB", peak>>20, limit>>20)
	}
}

func touched(bad map[string]string, good int) []string {
	var out []string
	for path := range bad {
		out = append(out, path+"/")
	}
	for i := range good {
		out = append(out, fmt.Sprintf("good-%d/config.yaml", i))
	}
	return out
}

// allAt reports whether the good apps are synced at revision.
func allAt(t *testing.T, dyn dynamic.Interface, good int, revision string) (bool, string) {
	for i := range good {
		app := getApp(t, dyn, "ferry", fmt.Sprintf("good-%d", i))
		if app.Status.Sync.Revision != revision || app.Status.Sync.Status != v1alpha1.SyncStatusSynced {
			return false, fmt.Sprintf("%s: %s at %s, last error %q", app.Name, app.Status.Sync.Status, app.Status.Sync.Revision, app.Status.LastError)
		}
	}
	return true, ""
}

// ferryProcess is ferry's binary, running `ferry serve` for a test.
type ferryProcess struct {
	cmd    *exec.Cmd
	url    string
	exited chan struct{}
	// output keeps what ferry logged.
	mu     sync.Mutex
	output bytes.Buffer
}

// startFerryBinary builds ferry's binary and runs `ferry serve` against
// cp with an embedded NATS, on loopback ports, with extra flags.
func startFerryBinary(t *testing.T, cp *testenv.ControlPlane, flags ...string) *ferryProcess {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "ferry")
	build := exec.CommandContext(t.Context(), goTool(), "build", "-o", bin, "./cmd/ferry")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building ferry: %v\n%s", err, out)
	}
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	listen, apiListen := freePort(t), freePort(t)
	args := append([]string{"serve",
		"--listen=" + listen, "--api-listen=" + apiListen, "--data-dir=" + filepath.Join(dir, "data"),
		"--kubeconfig=" + cp.AdminKubeconfig, "--github-webhook-secret-file=" + secretFile,
		"--poll-interval=0", "--log-level=warn",
	}, flags...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &ferryProcess{cmd: cmd, url: "http://" + listen, exited: make(chan struct{})}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.output.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			p.mu.Lock()
			t.Logf("ferry's log:\n%s", p.output.String())
			p.mu.Unlock()
		}
	})
	eventually(t, "ferry ready", func() (bool, string) {
		select {
		case <-p.exited:
			t.Fatalf("ferry exited before it was ready:\n%s", p.log())
		default:
		}
		resp, err := http.Get(p.url + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	return p
}

func (p *ferryProcess) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

// checkAlive fails the test when ferry's process has exited.
func (p *ferryProcess) checkAlive(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
		t.Fatalf("ferry exited: %v\n%s", p.cmd.ProcessState, p.log())
	default:
	}
	if strings.Contains(p.log(), "panic:") || strings.Contains(p.log(), "fatal error:") {
		t.Errorf("ferry's log shows a crash:\n%s", p.log())
	}
}

// peakRSS reads the process's peak resident set size (VmHWM).
func (p *ferryProcess) peakRSS(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// freePort returns a loopback address nobody listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// goTool finds the go command that runs these tests.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}
