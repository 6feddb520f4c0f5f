package render

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// BenchmarkRender times one app's render by ferry next to the reference
// CLI on the same input in the same run, and reports the ratio:
//
//	ns/op       ferry's render of the app, render cache off, git objects
//	            already fetched (as after the first push)
//	cli-ns/op   `helm template` or `kustomize build` on the same files on
//	            disk, process start included, as Argo CD runs them
//	ferry/cli   the ratio of the two; below 1 means ferry is faster
//
// and the time of a render cache hit. Run it with `go tool task
// bench:render`, which builds the CLIs first.
func BenchmarkRender(b *testing.B) {
	helmApp, kustApp, sha := benchApps(b)

	uncached := newRenderer(b, Options{})
	uncached.noCache = true
	cached := newRenderer(b, Options{})
	for _, a := range []*v1alpha1.Application{helmApp, kustApp} {
		render(b, uncached, a, sha)
		render(b, cached, a, sha)
	}

	b.Run("helm-chart-30-objects", func(b *testing.B) {
		benchAgainstCLI(b, uncached, helmApp, sha, "helm",
			[]string{"template", "shop", "chart", "--namespace", "shop", "--include-crds"},
			filepath.Join("testdata", "bench", "repo"))
	})
	b.Run("kustomize-overlay", func(b *testing.B) {
		benchAgainstCLI(b, uncached, kustApp, sha, "kustomize",
			[]string{"build", "overlays/prod"},
			filepath.Join("testdata", "kustomize-overlay", "repo"))
	})
	b.Run("cache-hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := cached.Render(b.Context(), request(helmApp, sha)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchApps serves the benchmarks' repository and returns its Helm app
// (a 30-object chart) and Kustomize app (an overlay), and its commit.
func benchApps(b *testing.B) (helmApp, kustApp *v1alpha1.Application, sha string) {
	srv := gitserver.New(b)
	repo := srv.NewRepo(b, "bench")
	pushDir(b, repo, filepath.Join("testdata", "bench", "repo"), "")
	pushDir(b, repo, filepath.Join("testdata", "kustomize-overlay", "repo"), "kustomize")
	sha = repo.Commit(b, "bench")
	helmApp = app("shop", "shop", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "chart"})
	kustApp = app("web", "prod", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "kustomize/overlays/prod"})
	return helmApp, kustApp, sha
}

// benchAgainstCLI times ferry's render of a, then the CLI on dir, and
// reports both and their ratio.
func benchAgainstCLI(b *testing.B, r *Renderer, a *v1alpha1.Application, sha, cli string, args []string, dir string) {
	b.ReportAllocs()
	start := time.Now()
	n := 0
	for b.Loop() {
		if _, _, err := r.Render(b.Context(), request(a, sha)); err != nil {
			b.Fatal(err)
		}
		n++
	}
	ferry := float64(time.Since(start).Nanoseconds()) / float64(n)

	bin := refCLI(cli)
	if bin == "" {
		b.Logf("%s is not built, so there is no ratio: run bash integration/refclis/build.sh (go tool task bench:render does)", cli)
		return
	}
	home := b.TempDir()
	runs := 10
	elapsed := time.Duration(0)
	for range runs {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = dir
		cmd.Env = []string{"HOME=" + home, "HELM_CACHE_HOME=" + home, "HELM_CONFIG_HOME=" + home, "HELM_DATA_HOME=" + home}
		t0 := time.Now()
		err := cmd.Run()
		elapsed += time.Since(t0)
		cancel()
		if err != nil {
			b.Fatalf("%s %v: %v", cli, args, err)
		}
	}
	cliNs := float64(elapsed.Nanoseconds()) / float64(runs)
	b.ReportMetric(cliNs, "cli-ns/op")
	b.ReportMetric(ferry/cliNs, "ferry/cli")
}

// BenchmarkRenderIsolation times what rendering in a render process costs,
// next to the same render in this process in the same run:
//
//	ns/op             the render in a render process (cache off, the
//	                  process already started), as `ferry serve` renders
//	in-process-ns/op  the same render in this process
//	added-µs/op       the difference: the pipes, encoding, and the
//	                  process's own reads of the git objects
//	process/in        their ratio
//
// and a cache hit with render processes on, which never leaves ferry. Run
// it with `go tool task bench:render`.
func BenchmarkRenderIsolation(b *testing.B) {
	helmApp, kustApp, sha := benchApps(b)
	apps := map[string]*v1alpha1.Application{"helm-chart-30-objects": helmApp, "kustomize-overlay": kustApp}
	here := newRenderer(b, Options{})
	here.noCache = true
	isolated := processRenderer(b, Options{}, DefaultMemoryLimit)
	isolated.noCache = true
	cached := processRenderer(b, Options{}, DefaultMemoryLimit)
	for _, a := range apps {
		render(b, here, a, sha)
		render(b, isolated, a, sha)
		render(b, cached, a, sha)
	}
	for _, name := range []string{"helm-chart-30-objects", "kustomize-overlay"} {
		a := apps[name]
		b.Run(name, func(b *testing.B) {
			n := 0
			for b.Loop() {
				render(b, isolated, a, sha)
				n++
			}
			processNs := float64(b.Elapsed().Nanoseconds()) / float64(n)
			start := time.Now()
			for range n {
				render(b, here, a, sha)
			}
			hereNs := float64(time.Since(start).Nanoseconds()) / float64(n)
			b.ReportMetric(hereNs, "in-process-ns/op")
			b.ReportMetric((processNs-hereNs)/1e3, "added-µs/op")
			b.ReportMetric(processNs/hereNs, "process/in")
		})
	}
	b.Run("cache-hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if res, err := cached.RenderWithInputs(b.Context(), request(apps["helm-chart-30-objects"], sha)); err != nil || !res.CacheHit {
				b.Fatalf("want a cache hit: %v", err)
			}
		}
	})
}
