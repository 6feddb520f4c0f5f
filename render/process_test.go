package render

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/integration/hostile"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// TestMain lets this test binary serve as the render processes the tests
// start.
func TestMain(m *testing.M) {
	RunRenderProcess()
	os.Exit(m.Run())
}

// processRenderer returns a renderer whose cache misses render in child
// processes of this test binary, with limit bytes each.
func processRenderer(t testing.TB, opts Options, limit int64) *Renderer {
	t.Helper()
	opts.Processes = &ProcessOptions{MemoryLimit: limit, Processes: 2}
	return newRenderer(t, opts)
}

// TestProcessRendersMatch renders every golden case in render processes
// and here: the bundles, revisions and recorded inputs must be the same,
// and a second render of each is a cache hit that starts no process.
func TestProcessRendersMatch(t *testing.T) {
	repos := goldenRepos(t)
	here := newRenderer(t, Options{})
	isolated := processRenderer(t, Options{}, DefaultMemoryLimit)
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			rp := repos[c.dir]
			a := c.app(rp.url)
			want, err := here.RenderWithInputs(t.Context(), request(a, rp.sha))
			if err != nil {
				t.Fatal(err)
			}
			got, err := isolated.RenderWithInputs(t.Context(), request(a, rp.sha))
			if err != nil {
				t.Fatal(err)
			}
			if got.CacheHit || got.Bundle.Hash != want.Bundle.Hash || got.Revision != want.Revision {
				t.Fatalf("render process: bundle %s at %s (cache hit %t); here: %s at %s", got.Bundle.Hash, got.Revision, got.CacheHit, want.Bundle.Hash, want.Revision)
			}
			if fmt.Sprint(got.Inputs) != fmt.Sprint(want.Inputs) {
				t.Errorf("inputs differ: render process %v, here %v", got.Inputs, want.Inputs)
			}
			again, err := isolated.RenderWithInputs(t.Context(), request(a, rp.sha))
			if err != nil {
				t.Fatal(err)
			}
			if !again.CacheHit || again.Bundle.Hash != want.Bundle.Hash {
				t.Errorf("second render: cache hit %t, bundle %s; want a hit on %s", again.CacheHit, again.Bundle.Hash, want.Bundle.Hash)
			}
		})
	}
	st := isolated.Stats()
	if st.Renders != int64(len(goldenCases)) || st.CacheHits != int64(len(goldenCases)) {
		t.Errorf("stats %+v; want %d renders and as many hits", st, len(goldenCases))
	}
}

// TestProcessRenderLimits renders hostile repositories in render processes
// with a small memory limit: each render fails naming the limit it passed,
// and the next render of a good app succeeds.
func TestProcessRenderLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates up to the memory limit in child processes")
	}
	srv := gitserver.New(t)
	repo := srv.NewRepo(t, "hostile")
	repo.WriteFile(t, "good/cm.yaml", cmYAML("good"))
	repo.WriteFile(t, "kustomize-alias/kustomization.yaml", "resources:\n  - bomb.yaml\n")
	repo.WriteFile(t, "kustomize-alias/bomb.yaml", hostile.AliasBombConfigMap())
	repo.WriteFile(t, "directory-alias/bomb.yaml", hostile.AliasBombConfigMap())
	repo.WriteFile(t, "helm-alias/Chart.yaml", hostile.Chart("bomb"))
	repo.WriteFile(t, "helm-alias/values.yaml", hostile.AliasBomb(""))
	repo.WriteFile(t, "helm-alias/templates/cm.yaml", hostile.ValuesTemplate)
	repo.WriteFile(t, "helm-repeat/Chart.yaml", hostile.Chart("repeat"))
	repo.WriteFile(t, "helm-repeat/templates/cm.yaml", hostile.RepeatTemplate)
	repo.WriteFile(t, "helm-endless/Chart.yaml", hostile.Chart("endless"))
	repo.WriteFile(t, "helm-endless/templates/cm.yaml", hostile.EndlessTemplate)
	sha := repo.Commit(t, "hostile")

	const limit = 256 << 20
	r := processRenderer(t, Options{Timeout: 5 * time.Second}, limit)
	good := app("good", "default", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "good"})
	for _, c := range []struct {
		path string
		want string // in the error
	}{
		// The YAML decoder refuses the directory and Helm values alias
		// bombs itself, before they grow.
		{"kustomize-alias", "memory limit of 256 MiB"},
		{"directory-alias", "excessive aliasing"},
		{"helm-alias", "excessive aliasing"},
		{"helm-repeat", "memory limit of 256 MiB"},
		{"helm-endless", "timed out after 5s"},
	} {
		t.Run(c.path, func(t *testing.T) {
			a := app(c.path, "default", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: c.path})
			err := renderErr(t, r, a, sha)
			t.Logf("%s: %v", c.path, err)
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q; want one naming the %q", err, c.want)
			}
			if IsTransient(err) {
				t.Errorf("error %q is transient; the same input fails the same way", err)
			}
			if b := render(t, r, good, sha); len(b.Objects) != 1 {
				t.Errorf("the good app after %s rendered %d objects", c.path, len(b.Objects))
			}
		})
	}
}

// TestProcessDeaths checks how a render process that dies is reported: a
// crash with Go's reason is the input's fault and final; a process killed
// without a word (the kernel's OOM killer) is worth another try.
func TestProcessDeaths(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.NewRepo(t, "deaths")
	repo.WriteFile(t, "good/cm.yaml", cmYAML("good"))
	sha := repo.Commit(t, "good")
	a := app("good", "default", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "good"})
	for _, c := range []struct {
		name, script, want string
		transient          bool
	}{
		{"a crash names Go's reason", "echo 'fatal error: stack overflow' >&2; sleep 0.2; exit 2", "crashed: fatal error: stack overflow", false},
		{"a silent kill is transient", "sleep 0.2; kill -9 $$", "before it answered", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRenderer(t, Options{Processes: &ProcessOptions{MemoryLimit: DefaultMemoryLimit, Processes: 1, Command: []string{"/bin/sh", "-c", c.script}}})
			err := renderErr(t, r, a, sha)
			if !strings.Contains(err.Error(), c.want) || IsTransient(err) != c.transient || !strings.Contains(err.Error(), "ferry/good") {
				t.Errorf("error %q (transient %t); want one naming the app and %q, transient %t", err, IsTransient(err), c.want, c.transient)
			}
		})
	}
}
