package render

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"helm.sh/helm/v3/pkg/repo"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// witness is a loopback HTTP listener that records every request it
// gets: the path and the Authorization header. A test that expects nothing
// to leave checks that it saw nothing.
type witness struct {
	*httptest.Server
	mu   sync.Mutex
	seen []witnessed
}

type witnessed struct{ path, auth string }

// newWitness serves next (404 when nil) and records every request.
func newWitness(t testing.TB, next http.Handler) *witness {
	t.Helper()
	w := &witness{}
	w.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		w.seen = append(w.seen, witnessed{path: r.URL.Path, auth: r.Header.Get("Authorization")})
		w.mu.Unlock()
		if next == nil {
			http.NotFound(rw, r)
			return
		}
		next.ServeHTTP(rw, r)
	}))
	t.Cleanup(w.Close)
	return w
}

func (w *witness) requests() []witnessed {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]witnessed(nil), w.seen...)
}

func (w *witness) reset() {
	w.mu.Lock()
	w.seen = nil
	w.mu.Unlock()
}

func (w *witness) wantNone(t testing.TB) {
	t.Helper()
	if got := w.requests(); len(got) > 0 {
		t.Errorf("the loopback listener got %d requests %v; want none", len(got), got)
	}
}

// TestKustomizeFetchesNothing is the SSRF test: every field of a
// kustomization, or of a generator or transformer configuration, that
// names a file names an http URL of a loopback listener. Each render
// fails naming the URL, and the listener sees no request.
func TestKustomizeFetchesNothing(t *testing.T) {
	cmContent := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fetched\n"
	w := newWitness(t, http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { fmt.Fprint(rw, cmContent) }))
	u := w.URL + "/leak"

	srv := gitserver.New(t)
	repo := srv.NewRepo(t, "ssrf")
	write := func(p, content string) { repo.WriteFile(t, p, content) }
	cm := cmYAML("base")
	cases := []struct {
		name, dir, wantFile string
	}{
		{"a generator configuration file naming a URL in files", "gen-file", "gen-file/gen.yaml"},
		{"a generator entry that is a URL", "gen-url", "gen-url/kustomization.yaml"},
		{"an inline generator configuration naming a URL in envs", "gen-inline", "gen-inline/kustomization.yaml"},
		{"a generator directory whose resource names a URL", "gen-dir", "gen-dir/gens/secret.yaml"},
		{"a configMapGenerator files entry", "cm-files", "cm-files/kustomization.yaml"},
		{"a configMapGenerator files entry with a key", "cm-files-key", "cm-files-key/kustomization.yaml"},
		{"a secretGenerator envs entry", "secret-envs", "secret-envs/kustomization.yaml"},
		{"a patch path", "patch-path", "patch-path/kustomization.yaml"},
		{"a patchesStrategicMerge entry", "psm", "psm/kustomization.yaml"},
		{"a transformer configuration naming a URL as its patch path", "tr-file", "tr-file/tr.yaml"},
		{"a strategic merge transformer configuration in a List", "tr-list", "tr-list/tr.yaml"},
		{"a replacement transformer configuration", "tr-repl", "tr-repl/tr.yaml"},
		{"a components entry", "components", "components/kustomization.yaml"},
		{"a crds entry", "crds", "crds/kustomization.yaml"},
		{"an openapi path", "openapi", "openapi/kustomization.yaml"},
		{"a configurations entry", "configurations", "configurations/kustomization.yaml"},
	}
	for _, tc := range cases {
		write(tc.dir+"/cm.yaml", cm)
	}
	write("gen-file/kustomization.yaml", "resources:\n  - cm.yaml\ngenerators:\n  - gen.yaml\n")
	write("gen-file/gen.yaml", "apiVersion: builtin\nkind: ConfigMapGenerator\nmetadata:\n  name: leak\nfiles:\n  - "+u+"\n")
	write("gen-url/kustomization.yaml", "resources:\n  - cm.yaml\ngenerators:\n  - "+u+"\n")
	write("gen-inline/kustomization.yaml", "resources:\n  - cm.yaml\ngenerators:\n  - |\n    apiVersion: builtin\n    kind: SecretGenerator\n    metadata:\n      name: leak\n    envs:\n      - "+u+"\n")
	write("gen-dir/kustomization.yaml", "resources:\n  - cm.yaml\ngenerators:\n  - gens\n")
	write("gen-dir/gens/kustomization.yaml", "resources:\n  - secret.yaml\n")
	write("gen-dir/gens/secret.yaml", "apiVersion: builtin\nkind: SecretGenerator\nmetadata:\n  name: leak\nFiles:\n  - key="+u+"\n")
	write("cm-files/kustomization.yaml", "resources:\n  - cm.yaml\nconfigMapGenerator:\n  - name: leak\n    files:\n      - "+u+"\n")
	write("cm-files-key/kustomization.yaml", "resources:\n  - cm.yaml\nconfigMapGenerator:\n  - name: leak\n    files:\n      - data="+u+"\n")
	write("secret-envs/kustomization.yaml", "resources:\n  - cm.yaml\nsecretGenerator:\n  - name: leak\n    envs:\n      - "+u+"\n")
	write("patch-path/kustomization.yaml", "resources:\n  - cm.yaml\npatches:\n  - path: "+u+"\n")
	write("psm/kustomization.yaml", "resources:\n  - cm.yaml\npatchesStrategicMerge:\n  - "+u+"\n")
	write("tr-file/kustomization.yaml", "resources:\n  - cm.yaml\ntransformers:\n  - tr.yaml\n")
	write("tr-file/tr.yaml", "apiVersion: builtin\nkind: PatchTransformer\nmetadata:\n  name: leak\npath: "+u+"\n")
	write("tr-list/kustomization.yaml", "resources:\n  - cm.yaml\ntransformers:\n  - tr.yaml\n")
	write("tr-list/tr.yaml", "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: builtin\n    kind: PatchStrategicMergeTransformer\n    metadata:\n      name: leak\n    paths:\n      - "+u+"\n")
	write("tr-repl/kustomization.yaml", "resources:\n  - cm.yaml\ntransformers:\n  - tr.yaml\n")
	write("tr-repl/tr.yaml", "apiVersion: builtin\nkind: ReplacementTransformer\nmetadata:\n  name: leak\nreplacements:\n  - path: "+u+"\n")
	write("components/kustomization.yaml", "resources:\n  - cm.yaml\ncomponents:\n  - "+u+"\n")
	write("crds/kustomization.yaml", "resources:\n  - cm.yaml\ncrds:\n  - "+u+"\n")
	write("openapi/kustomization.yaml", "resources:\n  - cm.yaml\nopenapi:\n  path: "+u+"\n")
	write("configurations/kustomization.yaml", "resources:\n  - cm.yaml\nconfigurations:\n  - "+u+"\n")
	// A transformer whose inline patch mentions a URL fetches nothing, and
	// is not refused.
	write("benign/kustomization.yaml", "resources:\n  - cm.yaml\ntransformers:\n  - tr.yaml\n")
	write("benign/cm.yaml", cm)
	write("benign/tr.yaml", "apiVersion: builtin\nkind: PatchTransformer\nmetadata:\n  name: ok\npatch: |\n  apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: base\n    annotations:\n      docs: "+u+"\n")
	sha := repo.Commit(t, "ssrf")
	r := newRenderer(t, Options{})

	for _, tc := range cases {
		t.Run("refuses "+tc.name+" before any request", func(t *testing.T) {
			w.reset()
			err := renderErr(t, r, app("x", "default", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: tc.dir}), sha)
			t.Logf("error: %v", err)
			if !errors.Is(err, ErrRemoteBase) || IsTransient(err) {
				t.Errorf("error = %v (transient %t); want a terminal ErrRemoteBase", err, IsTransient(err))
			}
			for _, want := range []string{tc.wantFile, u} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error = %v; want it to name %s", err, want)
				}
			}
			w.wantNone(t)
		})
	}
	t.Run("renders a transformer whose inline patch only mentions a URL", func(t *testing.T) {
		w.reset()
		objs := objects(t, render(t, r, app("x", "default", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "benign"}), sha))
		if got := annotations(findObject(t, objs, "ConfigMap", "base"))["docs"]; got != u {
			t.Errorf("annotation docs = %v; want %s", got, u)
		}
		w.wantNone(t)
	})
	t.Run("lets kustomize fetch the generator's file when remote bases are on", func(t *testing.T) {
		// The same listener is reachable: the zero counts above are the
		// check's doing, not a listener nobody could reach.
		w.reset()
		on := newRenderer(t, Options{KustomizeRemoteBases: true})
		objs := objects(t, render(t, on, app("x", "default", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "gen-file"}), sha))
		findObject(t, objs, "ConfigMap", "base")
		if len(w.requests()) == 0 {
			t.Error("the listener saw no request; want kustomize's fetch")
		}
	})
	t.Run("refuses a remote file on a host outside the allowed hosts even with remote bases on", func(t *testing.T) {
		w.reset()
		on := newRenderer(t, Options{KustomizeRemoteBases: true, AllowedHosts: []string{"github.com"}})
		err := renderErr(t, on, app("x", "default", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "gen-file"}), sha)
		if !errors.Is(err, ErrHostNotAllowed) || !strings.Contains(err.Error(), strings.TrimPrefix(w.URL, "http://")) {
			t.Errorf("error = %v; want ErrHostNotAllowed naming the host", err)
		}
		w.wantNone(t)
	})
}

// newOpenChartRepo serves a Helm repository without authentication under
// both /org and /other of a witness, with relative chart URLs, and records
// the Authorization header of every request.
func newOpenChartRepo(t testing.TB) *witness {
	t.Helper()
	dir := t.TempDir()
	packageChart(t, filepath.Join("testdata", "remote-chart", "repo", "web"), dir, "")
	idx, err := repo.IndexDirectory(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := idx.WriteFile(filepath.Join(dir, "index.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	files := http.FileServer(http.Dir(dir))
	mux := http.NewServeMux()
	mux.Handle("/org/", http.StripPrefix("/org", files))
	mux.Handle("/other/", http.StripPrefix("/other", files))
	return newWitness(t, mux)
}

// TestChartCredentialsOverHTTP checks where chart repository credentials
// go. Over plain http, a Secret without insecure makes the render fail,
// before any request, rather than go on anonymously: the operator asked
// for authenticated access, and quietly dropping it would hide that the
// repository is reached unencrypted (a private repository would fail with a
// 401 anyway, a public one would be fetched unauthenticated from a URL the
// operator believes is protected).
func TestChartCredentialsOverHTTP(t *testing.T) {
	w := newOpenChartRepo(t)
	chartApp := func(repoURL string) *v1alpha1.Application {
		return app("web", "web", v1alpha1.ApplicationSource{RepoURL: repoURL, Chart: "web", TargetRevision: "0.1.0"})
	}
	wantAuth := "Basic " + basicAuth(repoUser, repoPassword)

	t.Run("refuses to send credentials over http without insecure, before any request", func(t *testing.T) {
		w.reset()
		creds := NewStaticCredentials(&RepoCredentials{URL: w.URL + "/org", Type: "helm", Username: repoUser, Password: repoPassword})
		err := renderErr(t, newRenderer(t, Options{Credentials: creds}), chartApp(w.URL+"/org"), "")
		t.Logf("error: %v", err)
		if !errors.Is(err, ErrPlainHTTPCredentials) || IsTransient(err) || !strings.Contains(err.Error(), `insecure: "true"`) {
			t.Errorf("error = %v; want a terminal ErrPlainHTTPCredentials saying how to allow it", err)
		}
		if strings.Contains(err.Error(), repoPassword) {
			t.Errorf("error shows the password: %v", err)
		}
		w.wantNone(t)
	})
	t.Run("sends them over http when the Secret says insecure", func(t *testing.T) {
		w.reset()
		creds := NewStaticCredentials(&RepoCredentials{URL: w.URL + "/org", Type: "helm", Username: repoUser, Password: repoPassword, Insecure: true})
		render(t, newRenderer(t, Options{Credentials: creds}), chartApp(w.URL+"/org"), "")
		got := w.requests()
		if len(got) == 0 {
			t.Fatal("no request")
		}
		for _, req := range got {
			if req.auth != wantAuth {
				t.Errorf("request %s had Authorization %q; want the credentials", req.path, req.auth)
			}
		}
	})
	t.Run("does not use a credential for /org on /other of the same host", func(t *testing.T) {
		w.reset()
		creds := NewStaticCredentials(&RepoCredentials{URL: w.URL + "/org", Type: "helm", Username: repoUser, Password: repoPassword, Insecure: true})
		render(t, newRenderer(t, Options{Credentials: creds}), chartApp(w.URL+"/other"), "")
		got := w.requests()
		if len(got) == 0 {
			t.Fatal("no request")
		}
		for _, req := range got {
			if req.auth != "" {
				t.Errorf("request %s had Authorization %q; want none", req.path, req.auth)
			}
		}
	})
	t.Run("does not use an https credential for the same host over http", func(t *testing.T) {
		w.reset()
		httpsURL := strings.Replace(w.URL, "http://", "https://", 1) + "/org"
		creds := NewStaticCredentials(&RepoCredentials{URL: httpsURL, Type: "helm", Username: repoUser, Password: repoPassword})
		render(t, newRenderer(t, Options{Credentials: creds}), chartApp(w.URL+"/org"), "")
		for _, req := range w.requests() {
			if req.auth != "" {
				t.Errorf("request %s had Authorization %q; want none", req.path, req.auth)
			}
		}
	})
}

func basicAuth(user, password string) string {
	req, _ := http.NewRequest(http.MethodGet, "http://x", nil)
	req.SetBasicAuth(user, password)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

func TestCredentialScope(t *testing.T) {
	org := &RepoCredentials{URL: "https://git.example.com/org", Password: "org"}
	plain := &RepoCredentials{URL: "http://git.example.com/plain", Password: "plain"}
	ssh := &RepoCredentials{URL: "git@git.example.com:org", SSHPrivateKey: []byte("k")}
	reg := &RepoCredentials{URL: "registry.example.com:5000/charts", Password: "reg"}
	s := NewStaticCredentials(org, plain, ssh, reg)
	for _, tc := range []struct {
		url  string
		want *RepoCredentials
	}{
		{"https://git.example.com/org/repo.git", org},
		{"https://git.example.com:443/ORG/repo", org},
		{"http://git.example.com/org/repo.git", nil},
		{"https://git.example.com/other/repo.git", nil},
		{"https://git.example.com/organisation/repo", nil},
		{"https://git.example.com:8443/org/repo", nil},
		{"https://evil.example.com/org/repo", nil},
		{"http://git.example.com/plain/repo", plain},
		{"https://git.example.com/plain/repo", nil},
		{"ssh://git@git.example.com/org/repo.git", ssh},
		{"git@git.example.com:org/repo.git", ssh},
		{"oci://registry.example.com:5000/charts/web", reg},
		{"registry.example.com:5000/charts", reg},
		{"oci://registry.example.com/charts", nil},
	} {
		t.Run(tc.url, func(t *testing.T) {
			got, err := s.Lookup(t.Context(), tc.url)
			if err != nil || got != tc.want {
				t.Errorf("Lookup = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// TestRepoURLWithCredentials refuses a repoURL carrying credentials, for
// git, Helm repository and OCI sources, before any request, and keeps the
// password out of the error, the logs and the span.
func TestRepoURLWithCredentials(t *testing.T) {
	const password = "hunter2-in-url"
	w := newWitness(t, nil)
	host := strings.TrimPrefix(w.URL, "http://")
	var logs bytes.Buffer
	gc, err := NewGitCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(gc, Options{Timeout: testTimeout}, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })

	for _, tc := range []struct {
		name string
		src  v1alpha1.ApplicationSource
	}{
		{"a git URL with user and password", v1alpha1.ApplicationSource{RepoURL: "http://user:" + password + "@" + host + "/x.git", Path: "."}},
		{"a git URL with a token as the user", v1alpha1.ApplicationSource{RepoURL: "https://" + password + "@" + host + "/x.git", Path: "."}},
		{"an scp-like git address with a password", v1alpha1.ApplicationSource{RepoURL: "git:" + password + "@" + "127.0.0.1:org/x.git", Path: "."}},
		{"a Helm repository URL", v1alpha1.ApplicationSource{RepoURL: "http://user:" + password + "@" + host + "/charts", Chart: "web", TargetRevision: "0.1.0"}},
		{"an oci:// registry", v1alpha1.ApplicationSource{RepoURL: "oci://user:" + password + "@" + host + "/charts", Chart: "web", TargetRevision: "0.1.0"}},
		{"a registry without a scheme", v1alpha1.ApplicationSource{RepoURL: "user:" + password + "@" + host + "/charts", Chart: "web", TargetRevision: "0.1.0"}},
		{"a URL that does not parse", v1alpha1.ApplicationSource{RepoURL: "http://user:" + password + " x@" + host + "/x.git", Path: "."}},
	} {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			w.reset()
			logs.Reset()
			ctx, span := tp.Tracer("test").Start(t.Context(), "render")
			_, _, err := r.Render(ctx, Request{App: app("x", "default", tc.src)})
			span.End()
			if err == nil {
				t.Fatal("render succeeded")
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, ErrCredentialsInURL) || IsTransient(err) || !strings.Contains(err.Error(), "credentials belong in a repository Secret, not in the URL") {
				t.Errorf("error = %v; want a terminal ErrCredentialsInURL", err)
			}
			var shown []string
			shown = append(shown, err.Error(), logs.String())
			for _, s := range rec.Ended() {
				shown = append(shown, s.Status().Description)
				for _, a := range s.Attributes() {
					shown = append(shown, string(a.Key)+"="+a.Value.Emit())
				}
			}
			for _, s := range shown {
				if strings.Contains(s, password) {
					t.Errorf("the password shows in %q", s)
				}
			}
			w.wantNone(t)
		})
	}
	t.Run("refuses it when the poller lists refs", func(t *testing.T) {
		_, _, err := gc.Refs(t.Context(), "http://user:"+password+"@"+host+"/x.git")
		if !errors.Is(err, ErrCredentialsInURL) || strings.Contains(err.Error(), password) {
			t.Errorf("error = %v", err)
		}
		w.wantNone(t)
	})
	t.Run("keeps the SSH user of a git address", func(t *testing.T) {
		for _, u := range []string{"git@github.com:org/repo.git", "ssh://git@github.com/org/repo.git"} {
			if err := checkURLCredentials(u, false); err != nil {
				t.Errorf("%s: %v", u, err)
			}
		}
	})
}

// TestAllowedHosts refuses git and chart sources on a host outside the
// allowed hosts before any request, and renders those inside them.
func TestAllowedHosts(t *testing.T) {
	w := newOpenChartRepo(t)
	wHost := strings.TrimPrefix(w.URL, "http://")
	srv := gitserver.New(t)
	repo := srv.NewRepo(t, "allowed")
	repo.WriteFile(t, "apps/cm.yaml", cmYAML("allowed"))
	sha := repo.Commit(t, "allowed")
	gitApp := func(repoURL string) *v1alpha1.Application {
		return app("x", "default", v1alpha1.ApplicationSource{RepoURL: repoURL, Path: "apps"})
	}
	chartApp := func(repoURL string) *v1alpha1.Application {
		return app("web", "web", v1alpha1.ApplicationSource{RepoURL: repoURL, Chart: "web", TargetRevision: "0.1.0"})
	}
	only := []string{"git.example.com", "*.charts.example.com"}

	t.Run("refuses a git host that is not allowed, before any request", func(t *testing.T) {
		w.reset()
		r := newRenderer(t, Options{AllowedHosts: only}, WithAllowedHosts(only...))
		err := renderErr(t, r, gitApp(w.URL+"/org/x.git"), "")
		t.Logf("error: %v", err)
		if !errors.Is(err, ErrHostNotAllowed) || IsTransient(err) || !strings.Contains(err.Error(), wHost) || !strings.Contains(err.Error(), "--allowed-hosts") {
			t.Errorf("error = %v; want a terminal ErrHostNotAllowed naming the host and the option", err)
		}
		w.wantNone(t)
		if _, _, err := r.git.Refs(t.Context(), w.URL+"/org/x.git"); !errors.Is(err, ErrHostNotAllowed) {
			t.Errorf("Refs error = %v", err)
		}
		w.wantNone(t)
	})
	t.Run("refuses a chart repository that is not allowed, before any request", func(t *testing.T) {
		w.reset()
		r := newRenderer(t, Options{AllowedHosts: only}, WithAllowedHosts(only...))
		for _, u := range []string{w.URL + "/org", "oci://" + wHost + "/charts", wHost + "/charts"} {
			err := renderErr(t, r, chartApp(u), "")
			if !errors.Is(err, ErrHostNotAllowed) || IsTransient(err) || !strings.Contains(err.Error(), wHost) {
				t.Errorf("%s: error = %v; want a terminal ErrHostNotAllowed naming the host", u, err)
			}
		}
		w.wantNone(t)
	})
	t.Run("renders from allowed hosts", func(t *testing.T) {
		w.reset()
		loopback := []string{"127.0.0.1:*"}
		r := newRenderer(t, Options{AllowedHosts: loopback}, WithAllowedHosts(loopback...))
		render(t, r, gitApp(repo.URL()), sha)
		render(t, r, chartApp(w.URL+"/org"), "")
	})
	t.Run("refuses a chart archive on a host the index points to that is not allowed", func(t *testing.T) {
		other := newWitness(t, nil)
		idx := "apiVersion: v1\nentries:\n  web:\n    - apiVersion: v2\n      name: web\n      version: 0.1.0\n      urls:\n        - " + other.URL + "/web-0.1.0.tgz\n"
		index := newWitness(t, http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { fmt.Fprint(rw, idx) }))
		allowed := []string{strings.TrimPrefix(index.URL, "http://")}
		r := newRenderer(t, Options{AllowedHosts: allowed})
		err := renderErr(t, r, chartApp(index.URL), "")
		if !errors.Is(err, ErrHostNotAllowed) || !strings.Contains(err.Error(), strings.TrimPrefix(other.URL, "http://")) {
			t.Errorf("error = %v; want ErrHostNotAllowed naming the archive's host", err)
		}
		other.wantNone(t)
	})
	t.Run("refuses a glob that is not a host", func(t *testing.T) {
		for _, g := range []string{"", "https://github.com", "github.com/org", "user@github.com"} {
			if _, err := NewGitCache(t.TempDir(), WithAllowedHosts(g)); !errors.Is(err, ErrInvalidOption) {
				t.Errorf("WithAllowedHosts(%q): error = %v; want ErrInvalidOption", g, err)
			}
		}
	})
}

func TestHostPolicy(t *testing.T) {
	p := hostPolicy{"github.com", "*.example.com", "127.0.0.1:*", "[::1]:8080", "Gitea.Internal:3000"}
	got := map[string]bool{}
	for _, h := range []string{
		"github.com", "GitHub.com", "github.com:443", "api.github.com", "evilgithub.com",
		"a.example.com", "a.b.example.com", "example.com", "example.com.evil.net",
		"127.0.0.1:8080", "127.0.0.1", "127.0.0.2:80",
		"[::1]:8080", "[::1]:9090",
		"gitea.internal:3000", "gitea.internal",
	} {
		got[h] = p.allows(strings.ToLower(h))
	}
	want := map[string]bool{
		"github.com": true, "GitHub.com": true, "github.com:443": true, "api.github.com": false, "evilgithub.com": false,
		"a.example.com": true, "a.b.example.com": true, "example.com": false, "example.com.evil.net": false,
		"127.0.0.1:8080": true, "127.0.0.1": true, "127.0.0.2:80": false,
		"[::1]:8080": true, "[::1]:9090": false,
		"gitea.internal:3000": true, "gitea.internal": false,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("allows (-want +got):\n%s", diff)
	}
	if !(hostPolicy{}).allows("anything:1") {
		t.Error("an empty policy refused a host")
	}
	for u, want := range map[string]string{
		"https://user:pw@GitHub.com/org/repo": "github.com",
		"git@github.com:org/repo.git":         "github.com",
		"ssh://git@gitea.internal:2222/o/r":   "gitea.internal:2222",
		"registry.example.com:5000/charts":    "registry.example.com:5000",
		"oci://registry.example.com/charts":   "registry.example.com",
	} {
		if got := urlHost(u); got != want {
			t.Errorf("urlHost(%q) = %q; want %q", u, got, want)
		}
	}
}
