package render

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/google/go-cmp/cmp"
	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/bcrypt"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/registry"
	"helm.sh/helm/v3/pkg/repo"

	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

const (
	repoUser     = "ferry"
	repoPassword = "s3cret-password"
)

// packageChart packages the chart folder src into dir as Helm would, at
// version (the chart's own when empty), and returns the archive's path.
func packageChart(t testing.TB, src, dir, version string) string {
	t.Helper()
	ch, err := loader.LoadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	if version != "" {
		ch.Metadata.Version = version
	}
	p, err := chartutil.Save(ch, dir)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// newChartRepo serves a Helm repository from a temp dir on 127.0.0.1,
// behind basic auth, with the web chart at 0.1.0 and 0.2.0-rc.1.
func newChartRepo(t testing.TB) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join("testdata", "remote-chart", "repo", "web")
	packageChart(t, src, dir, "")
	packageChart(t, src, dir, "0.2.0-rc.1")
	files := http.FileServer(http.Dir(dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != repoUser || p != repoPassword {
			w.Header().Set("WWW-Authenticate", `Basic realm="charts"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	idx, err := repo.IndexDirectory(dir, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := idx.WriteFile(filepath.Join(dir, "index.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	return srv
}

// newRegistry runs a distribution registry in process on 127.0.0.1, with
// htpasswd auth, and returns its host:port.
func newRegistry(t testing.TB) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(repoPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(repoUser+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &configuration.Configuration{}
	cfg.Storage = configuration.Storage{"inmemory": configuration.Parameters{}}
	cfg.Auth = configuration.Auth{"htpasswd": configuration.Parameters{"realm": "ferry-test", "path": htpasswd}}
	cfg.Log.AccessLog.Disabled = true
	cfg.Log.Level = "error"
	// The registry logs every request through logrus' standard logger.
	logrus.SetOutput(io.Discard)
	app := handlers.NewApp(context.Background(), cfg)
	srv := httptest.NewServer(app)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// pushChart pushes an archive to the registry as ref and returns the
// manifest digest.
func pushChart(t testing.TB, archive, ref string) string {
	t.Helper()
	c, err := registry.NewClient(registry.ClientOptPlainHTTP(), registry.ClientOptBasicAuth(repoUser, repoPassword),
		registry.ClientOptCredentialsFile(filepath.Join(t.TempDir(), "none.json")))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Push(data, ref)
	if err != nil {
		t.Fatal(err)
	}
	return res.Manifest.Digest
}

// remoteGolden is what the web chart renders as app web in namespace web:
// `helm template web web --namespace web --include-crds`.
func remoteGolden(t testing.TB) []string {
	t.Helper()
	y, err := os.ReadFile(filepath.Join("testdata", "remote-chart", "remote-chart_expected.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return canonicalYAML(t, y)
}

func bundleJSON(b interface{ GetObjects() [][]byte }) []string {
	var out []string
	for _, js := range b.GetObjects() {
		out = append(out, string(js))
	}
	return out
}

func TestHTTPChartRepository(t *testing.T) {
	srv := newChartRepo(t)
	// Insecure: the test repository is plain http, where credentials go
	// only when their Secret says so.
	creds := NewStaticCredentials(&RepoCredentials{URL: srv.URL, Type: "helm", Username: repoUser, Password: repoPassword, Insecure: true})
	cacheDir := t.TempDir()
	r := newRenderer(t, Options{Credentials: creds, ChartCacheDir: cacheDir})
	webApp := func(version string, h *v1alpha1.HelmSource) *v1alpha1.Application {
		return app("web", "web", v1alpha1.ApplicationSource{RepoURL: srv.URL, Chart: "web", TargetRevision: version, Helm: h})
	}

	t.Run("renders a chart of an exact version as helm template does", func(t *testing.T) {
		b, rev, err := r.Render(t.Context(), Request{App: webApp("0.1.0", nil)})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(remoteGolden(t), bundleJSON(b)); diff != "" {
			t.Errorf("objects (-want +got):\n%s", diff)
		}
		if rev != "0.1.0" {
			t.Errorf("revision = %q; want the chart version", rev)
		}
	})
	t.Run("serves the same chart version from the render cache", func(t *testing.T) {
		before := r.Stats()
		render(t, r, webApp("0.1.0", nil), "")
		if after := r.Stats(); after.CacheHits != before.CacheHits+1 || after.Renders != before.Renders {
			t.Errorf("stats %+v -> %+v; want a cache hit", before, after)
		}
	})
	t.Run("resolves a range to the newest matching version", func(t *testing.T) {
		_, rev, err := r.Render(t.Context(), Request{App: webApp(">=0.2.0-0", nil)})
		if err != nil || rev != "0.2.0-rc.1" {
			t.Errorf("revision %q, error %v; want 0.2.0-rc.1", rev, err)
		}
	})
	t.Run("reads value files from inside the chart", func(t *testing.T) {
		objs := objects(t, render(t, r, webApp("0.1.0", &v1alpha1.HelmSource{ValueFiles: []string{"values-big.yaml"}}), ""))
		if got := findObject(t, objs, "Deployment", "web")["spec"].(map[string]any)["replicas"]; got != float64(5) {
			t.Errorf("replicas = %v; want 5", got)
		}
	})
	t.Run("refuses a value file outside the chart", func(t *testing.T) {
		err := renderErr(t, r, webApp("0.1.0", &v1alpha1.HelmSource{ValueFiles: []string{"../../etc/passwd"}}), "")
		if !errors.Is(err, ErrOutsideChart) {
			t.Errorf("error = %v; want ErrOutsideChart", err)
		}
	})
	t.Run("fails without credentials and never shows the password", func(t *testing.T) {
		anon := newRenderer(t, Options{})
		err := renderErr(t, anon, webApp("0.1.0", nil), "")
		if !strings.Contains(err.Error(), "401") || IsTransient(err) {
			t.Errorf("error = %v; want a terminal 401", err)
		}
		wrong := newRenderer(t, Options{Credentials: NewStaticCredentials(&RepoCredentials{URL: srv.URL, Username: repoUser, Password: "wrong-password", Insecure: true})})
		if err := renderErr(t, wrong, webApp("0.1.0", nil), ""); strings.Contains(err.Error(), "wrong-password") {
			t.Errorf("error shows the password: %v", err)
		}
	})
	t.Run("builds the dependencies of a chart in git from the repository, as helm dependency build", func(t *testing.T) {
		git := gitserver.New(t)
		repo := git.NewRepo(t, "umbrella")
		repo.WriteFile(t, "umbrella/Chart.yaml", "apiVersion: v2\nname: umbrella\nversion: 1.0.0\ndependencies:\n  - name: web\n    version: ~0.1.0\n    repository: "+srv.URL+"\n")
		repo.WriteFile(t, "umbrella/values.yaml", "web:\n  message: from the umbrella\n")
		sha := repo.Commit(t, "umbrella")
		objs := objects(t, render(t, r, app("web", "web", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "umbrella"}), sha))
		if got := findObject(t, objs, "ConfigMap", "web-message")["data"].(map[string]any)["message"]; got != "from the umbrella" {
			t.Errorf("message = %v", got)
		}
	})
	t.Run("serves an exact version from the chart cache once the repository is gone", func(t *testing.T) {
		srv.Close()
		offline := newRenderer(t, Options{ChartCacheDir: cacheDir})
		b, _, err := offline.Render(t.Context(), Request{App: webApp("0.1.0", nil)})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(remoteGolden(t), bundleJSON(b)); diff != "" {
			t.Errorf("objects (-want +got):\n%s", diff)
		}
	})
}

func TestOCIChart(t *testing.T) {
	host := newRegistry(t)
	archive := packageChart(t, filepath.Join("testdata", "remote-chart", "repo", "web"), t.TempDir(), "")
	digest := pushChart(t, archive, host+"/charts/web:0.1.0")
	pushChart(t, packageChart(t, filepath.Join("testdata", "remote-chart", "repo", "web"), t.TempDir(), "0.1.1"), host+"/charts/web:0.1.1")
	creds := NewStaticCredentials(&RepoCredentials{URL: "oci://" + host, Type: "oci", Username: repoUser, Password: repoPassword, ForceHTTP: true})
	r := newRenderer(t, Options{Credentials: creds})
	ociApp := func(repoURL, version string) *v1alpha1.Application {
		return app("web", "web", v1alpha1.ApplicationSource{RepoURL: repoURL, Chart: "web", TargetRevision: version})
	}

	for _, tc := range []struct{ name, repoURL, version, rev string }{
		{"renders a chart pulled by tag", "oci://" + host + "/charts", "0.1.0", "0.1.0"},
		{"renders a chart pulled by digest", "oci://" + host + "/charts", digest, digest},
		{"resolves a range against the registry's tags", "oci://" + host + "/charts", "~0.1.0", "0.1.1"},
		{"takes a registry given without oci://, as Argo CD's enableOCI", host + "/charts", "0.1.0", "0.1.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, rev, err := r.Render(t.Context(), Request{App: ociApp(tc.repoURL, tc.version)})
			if err != nil {
				t.Fatal(err)
			}
			if rev != tc.rev {
				t.Errorf("revision = %q; want %q", rev, tc.rev)
			}
			if tc.rev == "0.1.1" {
				return
			}
			if diff := cmp.Diff(remoteGolden(t), bundleJSON(b)); diff != "" {
				t.Errorf("objects (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("builds an oci:// dependency of a chart in git", func(t *testing.T) {
		git := gitserver.New(t)
		repo := git.NewRepo(t, "umbrella")
		repo.WriteFile(t, "umbrella/Chart.yaml", "apiVersion: v2\nname: umbrella\nversion: 1.0.0\ndependencies:\n  - name: web\n    version: 0.1.0\n    repository: oci://"+host+"/charts\n")
		sha := repo.Commit(t, "umbrella")
		objs := objects(t, render(t, r, app("web", "web", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "umbrella"}), sha))
		findObject(t, objs, "Deployment", "web")
	})
	t.Run("fails without credentials", func(t *testing.T) {
		anon := newRenderer(t, Options{Credentials: NewStaticCredentials(&RepoCredentials{URL: "oci://" + host, ForceHTTP: true})})
		err := renderErr(t, anon, ociApp("oci://"+host+"/charts", "0.1.0"), "")
		if !strings.Contains(err.Error(), "pulling") {
			t.Errorf("error = %v", err)
		}
	})
	t.Run("fails naming a version that is not there", func(t *testing.T) {
		err := renderErr(t, r, ociApp("oci://"+host+"/charts", "9.9.9"), "")
		if !strings.Contains(err.Error(), fmt.Sprintf("%s/charts/web:9.9.9", host)) || IsTransient(err) {
			t.Errorf("error = %v (transient %t)", err, IsTransient(err))
		}
	})
}
