package render

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// The golden files in testdata/<case>/<case>_expected.yaml are the output
// of the reference CLIs, helm v3.22.0 and kustomize v5.8.2, built from the
// same module versions ferry uses (integration/refclis/build.sh). Each
// case's cli func runs the exact commands; -update rewrites the files:
//
//	bash integration/refclis/build.sh
//	go test ./render -run TestGolden -args -update
//
// Whenever the CLIs are present, the test also runs them and checks that
// the golden files still equal their output.
var update = flag.Bool("update", false, "rewrite the golden files from the reference CLIs")

// refCLI returns the path of a reference CLI, or "" when it is not built.
func refCLI(name string) string {
	dir := os.Getenv("FERRY_REFCLIS_DIR")
	if dir == "" {
		dir = filepath.Join("..", ".bin", "refclis")
	}
	p, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// runCLI runs a reference CLI in dir with a private HOME, so that no user
// configuration (Helm repositories, registries) takes part.
func runCLI(t testing.TB, dir, name string, args ...string) []byte {
	t.Helper()
	bin := refCLI(name)
	if bin == "" {
		t.Fatalf("%s is not built: run bash integration/refclis/build.sh", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "HELM_CACHE_HOME=" + filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME=" + filepath.Join(home, "config"), "HELM_DATA_HOME=" + filepath.Join(home, "data")}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// copyTree copies a testdata folder to a temp dir, for CLIs that write.
func copyTree(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "repo")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

type goldenCase struct {
	name string // the golden file is testdata/<dir>/<name>_expected.yaml
	dir  string // testdata/<dir>/repo is the repository
	app  func(repoURL string) *v1alpha1.Application
	// cli produces the expected output from a copy of the repository; nil
	// when no CLI renders the case and the golden file is kept by hand.
	cli func(t testing.TB, repo string) []byte
}

var goldenCases = []goldenCase{
	{
		name: "directory",
		dir:  "directory",
		app: func(url string) *v1alpha1.Application {
			return app("plain", "plain", v1alpha1.ApplicationSource{RepoURL: url, Path: "manifests",
				Directory: &v1alpha1.DirectorySource{Recurse: true, Exclude: "excluded.yaml"}})
		},
	},
	{
		name: "kustomize-overlay",
		dir:  "kustomize-overlay",
		app: func(url string) *v1alpha1.Application {
			return app("web", "prod", v1alpha1.ApplicationSource{RepoURL: url, Path: "overlays/prod"})
		},
		// kustomize build overlays/prod
		cli: func(t testing.TB, repo string) []byte {
			return runCLI(t, repo, "kustomize", "build", "overlays/prod")
		},
	},
	{
		name: "kustomize-overlay-app-fields",
		dir:  "kustomize-overlay",
		app: func(url string) *v1alpha1.Application {
			return app("web", "staging", v1alpha1.ApplicationSource{RepoURL: url, Path: "overlays/prod", Kustomize: &v1alpha1.KustomizeSource{
				NamePrefix:   "staging-",
				NameSuffix:   "-v2",
				Images:       []string{"nginx=registry.example.com/nginx:1.28", "busybox:1.37"},
				CommonLabels: map[string]string{"team": "web", "tier": "frontend"},
				Namespace:    "staging",
			}})
		},
		// What Argo CD runs for the app's kustomize fields, then the build:
		//
		//	cd overlays/prod
		//	kustomize edit set nameprefix -- staging-
		//	kustomize edit set namesuffix -- -v2
		//	kustomize edit set image nginx=registry.example.com/nginx:1.28 busybox:1.37
		//	kustomize edit add label --force team:web tier:frontend
		//	kustomize edit set namespace staging
		//	kustomize build .
		cli: func(t testing.TB, repo string) []byte {
			dir := filepath.Join(repo, "overlays", "prod")
			runCLI(t, dir, "kustomize", "edit", "set", "nameprefix", "--", "staging-")
			runCLI(t, dir, "kustomize", "edit", "set", "namesuffix", "--", "-v2")
			runCLI(t, dir, "kustomize", "edit", "set", "image", "nginx=registry.example.com/nginx:1.28", "busybox:1.37")
			runCLI(t, dir, "kustomize", "edit", "add", "label", "--force", "team:web", "tier:frontend")
			runCLI(t, dir, "kustomize", "edit", "set", "namespace", "staging")
			return runCLI(t, dir, "kustomize", "build", ".")
		},
	},
	{
		name: "helm-chart",
		dir:  "helm-chart",
		app: func(url string) *v1alpha1.Application {
			return app("myapp", "prod",
				v1alpha1.ApplicationSource{RepoURL: url, Path: "charts/app", Helm: &v1alpha1.HelmSource{
					ValueFiles: []string{"values-prod.yaml", "$values/envs/prod.yaml"},
					Values:     "config:\n  logLevel: debug\n",
					Parameters: []v1alpha1.HelmParameter{
						{Name: "replicaCount", Value: "3"},
						{Name: "image.tag", Value: "2.0.2", ForceString: true},
					},
				}},
				v1alpha1.ApplicationSource{RepoURL: url, Ref: "values"},
			)
		},
		// What Argo CD runs: `helm dependency build` for the file://
		// dependencies, then
		//
		//	helm template myapp charts/app --namespace prod --include-crds \
		//	  -f charts/app/values-prod.yaml -f envs/prod.yaml -f <helm.values> \
		//	  --set replicaCount=3 --set-string image.tag=2.0.2
		cli: func(t testing.TB, repo string) []byte {
			runCLI(t, repo, "helm", "dependency", "build", "charts/app")
			values := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(values, []byte("config:\n  logLevel: debug\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			return runCLI(t, repo, "helm", "template", "myapp", "charts/app", "--namespace", "prod", "--include-crds",
				"-f", "charts/app/values-prod.yaml", "-f", "envs/prod.yaml", "-f", values,
				"--set", "replicaCount=3", "--set-string", "image.tag=2.0.2")
		},
	},
	{
		name: "helm-values",
		dir:  "helm-values",
		app: func(url string) *v1alpha1.Application {
			return app("merge", "default", v1alpha1.ApplicationSource{RepoURL: url, Path: "chart", Helm: &v1alpha1.HelmSource{
				ValueFiles: []string{"values-1.yaml", "values-2.yaml"},
				Values:     "nested:\n  deeper:\n    r: values\n",
				Parameters: []v1alpha1.HelmParameter{{Name: "nested.a", Value: "set"}},
			}})
		},
		// helm template merge chart --namespace default --include-crds \
		//   -f chart/values-1.yaml -f chart/values-2.yaml -f <helm.values> \
		//   --set nested.a=set
		cli: func(t testing.TB, repo string) []byte {
			values := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(values, []byte("nested:\n  deeper:\n    r: values\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			return runCLI(t, repo, "helm", "template", "merge", "chart", "--namespace", "default", "--include-crds",
				"-f", "chart/values-1.yaml", "-f", "chart/values-2.yaml", "-f", values, "--set", "nested.a=set")
		},
	},
	{
		name: "remote-chart",
		dir:  "remote-chart",
		app: func(url string) *v1alpha1.Application {
			return app("web", "web", v1alpha1.ApplicationSource{RepoURL: url, Path: "web"})
		},
		// helm template web web --namespace web --include-crds
		cli: func(t testing.TB, repo string) []byte {
			return runCLI(t, repo, "helm", "template", "web", "web", "--namespace", "web", "--include-crds")
		},
	},
}

func goldenPath(c goldenCase) string {
	return filepath.Join("testdata", c.dir, c.name+"_expected.yaml")
}

// goldenRepo is a golden case's repository, served and committed.
type goldenRepo struct{ url, sha string }

// goldenRepos serves every golden case's testdata repository, by dir.
func goldenRepos(t testing.TB) map[string]goldenRepo {
	srv := gitserver.New(t)
	repos := map[string]goldenRepo{}
	for _, c := range goldenCases {
		if _, ok := repos[c.dir]; ok {
			continue
		}
		repo := srv.NewRepo(t, c.dir)
		pushDir(t, repo, filepath.Join("testdata", c.dir, "repo"), "")
		repos[c.dir] = goldenRepo{repo.URL(), repo.Commit(t, "testdata")}
	}
	return repos
}

func TestGolden(t *testing.T) {
	repos := goldenRepos(t)
	r := newRenderer(t, Options{})
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			if *update && c.cli != nil {
				out := c.cli(t, copyTree(t, filepath.Join("testdata", c.dir, "repo")))
				if err := os.WriteFile(goldenPath(c), out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			golden, err := os.ReadFile(goldenPath(c))
			if err != nil {
				t.Fatalf("%v (create it with -update)", err)
			}
			if !*update && c.cli != nil && refCLI("helm") != "" && refCLI("kustomize") != "" {
				cliOut := c.cli(t, copyTree(t, filepath.Join("testdata", c.dir, "repo")))
				if diff := cmp.Diff(canonicalYAML(t, golden), canonicalYAML(t, cliOut)); diff != "" {
					t.Fatalf("%s is not what the CLI prints now (-golden +cli):\n%s", goldenPath(c), diff)
				}
			}
			rp := repos[c.dir]
			b := render(t, r, c.app(rp.url), rp.sha)
			got := make([]string, 0, len(b.Objects))
			for _, js := range b.Objects {
				got = append(got, string(withoutFerryHookAnnotations(t, js)))
			}
			if diff := cmp.Diff(cliObjects(t, golden), got); diff != "" {
				t.Errorf("ferry's render differs from %s (-cli +ferry):\n%s", goldenPath(c), diff)
			}
		})
	}
}

// canonicalYAML decodes a YAML stream into canonical JSON objects.
func canonicalYAML(t testing.TB, y []byte) []string {
	t.Helper()
	objs, err := DecodeManifests("golden", y)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = string(o.JSON)
	}
	return out
}

// cliObjects is what ferry should render for CLI output: the same
// objects, without the Helm hooks that have no sync phase (test, delete
// and rollback hooks), which ferry drops as Argo CD does.
func cliObjects(t testing.TB, y []byte) []string {
	t.Helper()
	var out []string
	for _, js := range canonicalYAML(t, y) {
		var o map[string]any
		if err := json.Unmarshal([]byte(js), &o); err != nil {
			t.Fatal(err)
		}
		ann := annotations(o)
		hook, _ := ann["helm.sh/hook"].(string)
		_, argo := ann["argocd.argoproj.io/hook"]
		if hook != "" && !argo && !strings.Contains(hook, "install") && !strings.Contains(hook, "upgrade") {
			continue
		}
		out = append(out, js)
	}
	return out
}

// withoutFerryHookAnnotations removes what ferry adds to hooks, which the
// hook tests check on their own.
func withoutFerryHookAnnotations(t testing.TB, js []byte) []byte {
	t.Helper()
	if !bytes.Contains(js, []byte("ferry.dev/hook")) {
		return js
	}
	var o map[string]any
	if err := json.Unmarshal(js, &o); err != nil {
		t.Fatal(err)
	}
	ann := annotations(o)
	for _, k := range []string{v1alpha1.AnnotationHook, v1alpha1.AnnotationHookWeight, v1alpha1.AnnotationHookDeletePolicy} {
		delete(ann, k)
	}
	out, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
