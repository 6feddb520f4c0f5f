package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/ferrycd/ferry/cmd/ferry/cli"
	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/integration/testenv"
	"github.com/ferrycd/ferry/integration/webhook"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// lockedBuffer is an io.Writer that ferry's logs and the test share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	out io.Writer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	return b.out.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// commitOnBranch clones url, commits content at path on a new branch
// started at from, pushes the branch and returns the commit: a commit the
// repository holds that main never had.
func commitOnBranch(t *testing.T, url, branch, from, path, content string) string {
	t.Helper()
	home := t.TempDir()
	dir := filepath.Join(t.TempDir(), "work")
	env := append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0", "LC_ALL=C",
		"GIT_AUTHOR_NAME="+gitserver.AuthorName, "GIT_AUTHOR_EMAIL="+gitserver.AuthorEmail,
		"GIT_COMMITTER_NAME="+gitserver.AuthorName, "GIT_COMMITTER_EMAIL="+gitserver.AuthorEmail)
	run := func(dir string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("", "clone", "--quiet", url, dir)
	run(dir, "checkout", "--quiet", "-b", branch, from)
	full := filepath.Join(dir, filepath.FromSlash(path))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	run(dir, "add", "--all")
	run(dir, "commit", "--quiet", "--no-verify", "-m", "not on main")
	run(dir, "push", "--quiet", "origin", branch)
	return run(dir, "rev-parse", "HEAD")
}

func TestPushOfACommitNotOnTheTrackedRefAppliesNothing(t *testing.T) {
	cp := testenv.StartT(t)
	git := gitserver.New(t)
	repo := git.NewRepo(t, "platform/replay")
	repo.WriteFile(t, "apps/web/config.yaml", configMap("web-config", "from main"))
	first := repo.Commit(t, "add web")
	foreign := commitOnBranch(t, repo.URL(), "attacker", first, "apps/web/config.yaml", configMap("web-config", "from another branch"))

	logs := &lockedBuffer{out: t.Output()}
	f := startFerry(t, cp, func(o *cli.ServeOptions) { o.Stderr = logs })
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	kube := kubernetes.NewForConfigOrDie(cp.Config)
	createNamespace(t, kube, "replay")
	createApp(t, dyn, &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ferry"},
		Spec: v1alpha1.ApplicationSpec{
			Source:      &v1alpha1.ApplicationSource{RepoURL: repo.URL(), TargetRevision: "main", Path: "apps/web"},
			Destination: v1alpha1.Destination{Server: "https://kubernetes.default.svc", Namespace: "replay"},
			SyncPolicy:  &v1alpha1.SyncPolicy{Automated: &v1alpha1.Automated{Prune: true}},
		},
	})
	push := func(t *testing.T, delivery, before, after string) {
		t.Helper()
		body := webhook.Push{
			CloneURL: repo.URL(), FullName: "platform/replay", DefaultBranch: "main",
			Ref: "refs/heads/main", Before: before, After: after,
			Commits: []webhook.Commit{{ID: after, Message: "change", Modified: []string{"apps/web/config.yaml"}}},
		}.Payload()
		resp, err := webhook.Send(t.Context(), f.url+"/webhooks/github", "push", delivery, []byte(testSecret), body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != 202 {
			t.Fatalf("push webhook: got %d %s, want 202", resp.Status, resp.Body)
		}
	}
	state := func(t *testing.T) (*v1alpha1.Application, string) {
		t.Helper()
		app := getApp(t, dyn, "ferry", "web")
		cm, err := kube.CoreV1().ConfigMaps("replay").Get(t.Context(), "web-config", metav1.GetOptions{})
		if err != nil {
			return app, "<" + err.Error() + ">"
		}
		return app, cm.Data["greeting"]
	}
	waitSynced := func(t *testing.T, revision, greeting string) {
		t.Helper()
		eventually(t, "sync of "+revision[:8], func() (bool, string) {
			app, got := state(t)
			return app.Status.Sync.Revision == revision && app.Status.Sync.Status == v1alpha1.SyncStatusSynced && got == greeting,
				fmt.Sprintf("status=%+v lastError=%q greeting=%q", app.Status.Sync, app.Status.LastError, got)
		})
	}
	waitSynced(t, first, "from main")

	t.Run("a signed push naming a commit of another branch applies nothing", func(t *testing.T) {
		before, _ := state(t)
		push(t, "delivery-foreign", first, foreign)
		eventually(t, "the refusal to be logged", func() (bool, string) {
			return strings.Contains(logs.String(), "delivery-foreign"), "no log line names the delivery"
		})
		f.quiet(t)
		app, got := state(t)
		if app.Status.Sync.Revision != first || got != "from main" {
			t.Errorf("after the foreign push the app is at %.8s with greeting %q, want %.8s and %q", app.Status.Sync.Revision, got, first, "from main")
		}
		if len(app.Status.History) != len(before.Status.History) || app.Status.LastError != "" {
			t.Errorf("the refusal was written into the app's status: history %d entries (was %d), lastError %q",
				len(app.Status.History), len(before.Status.History), app.Status.LastError)
		}
		var line string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "delivery-foreign") {
				line = l
			}
		}
		if !strings.Contains(line, "not on the tracked ref") || !strings.Contains(line, foreign[:12]) {
			t.Errorf("the log line of the refusal does not say why: %s", line)
		}
	})

	t.Run("a later push of a commit on main still syncs", func(t *testing.T) {
		repo.WriteFile(t, "apps/web/config.yaml", configMap("web-config", "main again"))
		second := repo.Commit(t, "change greeting")
		push(t, "delivery-legit", first, second)
		waitSynced(t, second, "main again")
	})
}
