package render

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
)

// testTimeout bounds every render a test does; no test waits longer.
const testTimeout = 60 * time.Second

// newRenderer returns a renderer with its caches in the test's temp dir.
func newRenderer(t testing.TB, opts Options, gitOpts ...GitCacheOption) *Renderer {
	t.Helper()
	gc, err := NewGitCache(t.TempDir(), gitOpts...)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Timeout == 0 {
		opts.Timeout = testTimeout
	}
	if opts.Processes == nil && os.Getenv("FERRY_TEST_RENDER_PROCESSES") != "" {
		// The whole suite again, every render in a render process.
		opts.Processes = &ProcessOptions{MemoryLimit: DefaultMemoryLimit, Processes: 2}
	}
	r, err := New(gc, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// pushDir writes every file under local (a testdata folder) into repo at
// prefix, without committing.
func pushDir(t testing.TB, repo *gitserver.Repo, local, prefix string) {
	t.Helper()
	err := filepath.WalkDir(local, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(local, p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		repo.WriteFile(t, filepath.ToSlash(filepath.Join(prefix, rel)), string(data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// app returns an Application named name in namespace ferry with sources.
func app(name, namespace string, sources ...v1alpha1.ApplicationSource) *v1alpha1.Application {
	a := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ferry"},
		Spec:       v1alpha1.ApplicationSpec{Destination: v1alpha1.Destination{Namespace: namespace}},
	}
	if len(sources) == 1 {
		a.Spec.Source = &sources[0]
	} else {
		a.Spec.Sources = sources
	}
	return a
}

// request pins the app's first source to revision, as a push to its
// repository would.
func request(a *v1alpha1.Application, revision string) Request {
	return Request{App: a, RepoURL: a.Spec.AllSources()[0].RepoURL, Revision: revision}
}

func render(t testing.TB, r *Renderer, a *v1alpha1.Application, revision string) *ferryv1.Bundle {
	t.Helper()
	b, _, err := r.Render(t.Context(), request(a, revision))
	if err != nil {
		t.Fatalf("render of %s failed: %v", a.Name, err)
	}
	return b
}

func renderErr(t testing.TB, r *Renderer, a *v1alpha1.Application, revision string) error {
	t.Helper()
	_, _, err := r.Render(t.Context(), request(a, revision))
	if err == nil {
		t.Fatalf("render of %s succeeded; want an error", a.Name)
	}
	return err
}

// objects decodes a bundle's objects.
func objects(t testing.TB, b *ferryv1.Bundle) []map[string]any {
	t.Helper()
	out := make([]map[string]any, len(b.Objects))
	for i, js := range b.Objects {
		if err := json.Unmarshal(js, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func objectNames(objs []map[string]any) []string {
	var names []string
	for _, o := range objs {
		meta, _ := o["metadata"].(map[string]any)
		names = append(names, o["kind"].(string)+"/"+meta["name"].(string))
	}
	return names
}

func findObject(t testing.TB, objs []map[string]any, kind, name string) map[string]any {
	t.Helper()
	for _, o := range objs {
		meta, _ := o["metadata"].(map[string]any)
		if o["kind"] == kind && meta["name"] == name {
			return o
		}
	}
	t.Fatalf("no %s/%s among %v", kind, name, objectNames(objs))
	return nil
}

func annotations(o map[string]any) map[string]any {
	meta, _ := o["metadata"].(map[string]any)
	ann, _ := meta["annotations"].(map[string]any)
	return ann
}

// workClone is a clone of a served repository that the test commits to
// with the git CLI, for what gitserver cannot write: symbolic links.
type workClone struct {
	dir string
	env []string
}

func cloneRepo(t testing.TB, url string) *workClone {
	t.Helper()
	home := t.TempDir()
	w := &workClone{dir: filepath.Join(t.TempDir(), "work"), env: append(os.Environ(),
		"HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "GIT_CONFIG_NOSYSTEM=1",
		"GIT_TERMINAL_PROMPT=0", "LC_ALL=C",
		"GIT_AUTHOR_NAME=Ferry Test", "GIT_AUTHOR_EMAIL=ferry-test@example.com",
		"GIT_COMMITTER_NAME=Ferry Test", "GIT_COMMITTER_EMAIL=ferry-test@example.com",
	)}
	w.git(t, "", "clone", "--quiet", url, w.dir)
	w.git(t, w.dir, "checkout", "--quiet", "-B", gitserver.Branch)
	return w
}

func (w *workClone) git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = w.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("git %s: %v: %s", strings.Join(args, " "), err, out.String())
	}
	return strings.TrimSpace(out.String())
}

func (w *workClone) write(t testing.TB, p, content string) {
	t.Helper()
	full := filepath.Join(w.dir, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (w *workClone) symlink(t testing.TB, p, target string) {
	t.Helper()
	full := filepath.Join(w.dir, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, full); err != nil {
		t.Fatal(err)
	}
}

// commit commits everything and pushes it, returning the commit.
func (w *workClone) commit(t testing.TB, msg string) string {
	t.Helper()
	w.git(t, w.dir, "add", "--all")
	w.git(t, w.dir, "commit", "--quiet", "--no-verify", "-m", msg)
	w.git(t, w.dir, "push", "--quiet", "origin", "HEAD:refs/heads/"+gitserver.Branch)
	return w.git(t, w.dir, "rev-parse", "HEAD")
}
