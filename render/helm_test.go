package render

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

const dumpChart = `apiVersion: v2
name: dump
version: 0.1.0
`

const dumpValues = `a: chart
b: chart
c: chart
d: chart
e: chart
n: chart
nested:
  p: chart
  q: chart
`

const dumpTemplate = `apiVersion: v1
kind: ConfigMap
metadata:
  name: values
data:
  values.json: {{ toJson .Values | quote }}
`

// dumpedValues returns the values a dump chart rendered.
func dumpedValues(t *testing.T, r *Renderer, a *v1alpha1.Application, sha string) map[string]any {
	t.Helper()
	objs := objects(t, render(t, r, a, sha))
	cm := findObject(t, objs, "ConfigMap", "values")
	var v map[string]any
	if err := json.Unmarshal([]byte(cm["data"].(map[string]any)["values.json"].(string)), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestValuePrecedence checks parameters > valuesObject > values >
// valueFiles > chart defaults, with a $ref value file from a second source
// in another repository.
func TestValuePrecedence(t *testing.T) {
	srv := gitserver.New(t)
	charts := srv.NewRepo(t, "charts")
	charts.WriteFile(t, "dump/Chart.yaml", dumpChart)
	charts.WriteFile(t, "dump/values.yaml", dumpValues)
	charts.WriteFile(t, "dump/templates/cm.yaml", dumpTemplate)
	charts.WriteFile(t, "dump/vf1.yaml", "b: vf1\nc: vf1\nd: vf1\ne: vf1\nnested:\n  p: vf1\n")
	charts.WriteFile(t, "shared/common.yaml", "a: repo-root\n")
	sha := charts.Commit(t, "chart")
	cfg := srv.NewRepo(t, "config")
	cfg.WriteFile(t, "envs/prod.yaml", "c: ref\nd: ref\ne: ref\n")
	cfg.Commit(t, "config")
	r := newRenderer(t, Options{})

	full := []string{"vf1.yaml", "$cfg/envs/prod.yaml"}
	cases := []struct {
		name string
		helm *v1alpha1.HelmSource
		want map[string]any
	}{
		{"chart defaults alone", nil,
			map[string]any{"a": "chart", "b": "chart", "c": "chart", "d": "chart", "e": "chart"}},
		{"value files override the chart defaults, later files winning, $ref included", &v1alpha1.HelmSource{ValueFiles: full},
			map[string]any{"a": "chart", "b": "vf1", "c": "ref", "d": "ref", "e": "ref"}},
		{"a value file path starting with / is relative to the repository root", &v1alpha1.HelmSource{ValueFiles: []string{"/shared/common.yaml", "../shared/common.yaml"}},
			map[string]any{"a": "repo-root", "b": "chart", "c": "chart", "d": "chart", "e": "chart"}},
		{"values override value files", &v1alpha1.HelmSource{ValueFiles: full, Values: "d: values\ne: values\n"},
			map[string]any{"a": "chart", "b": "vf1", "c": "ref", "d": "values", "e": "values"}},
		{"valuesObject overrides value files and replaces values, as in Argo CD",
			&v1alpha1.HelmSource{ValueFiles: full, Values: "d: values\ne: values\n", ValuesObject: map[string]any{"e": "object"}},
			map[string]any{"a": "chart", "b": "vf1", "c": "ref", "d": "ref", "e": "object"}},
		{"parameters override everything",
			&v1alpha1.HelmSource{ValueFiles: full, Values: "e: values\n", ValuesObject: map[string]any{"e": "object"},
				Parameters: []v1alpha1.HelmParameter{{Name: "e", Value: "param"}}},
			map[string]any{"a": "chart", "b": "vf1", "c": "ref", "d": "ref", "e": "param"}},
		{"the last parameter of a name wins",
			&v1alpha1.HelmSource{Parameters: []v1alpha1.HelmParameter{{Name: "a", Value: "first"}, {Name: "a", Value: "second"}}},
			map[string]any{"a": "second", "b": "chart", "c": "chart", "d": "chart", "e": "chart"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := app("dump", "default",
				v1alpha1.ApplicationSource{RepoURL: charts.URL(), Path: "dump", Helm: tc.helm},
				v1alpha1.ApplicationSource{RepoURL: cfg.URL(), Ref: "cfg"},
			)
			got := dumpedValues(t, r, a, sha)
			for k := range got {
				if len(k) > 1 {
					delete(got, k)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("values (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("maps merge key by key", func(t *testing.T) {
		a := app("dump", "default", v1alpha1.ApplicationSource{RepoURL: charts.URL(), Path: "dump", Helm: &v1alpha1.HelmSource{
			ValueFiles: []string{"vf1.yaml"},
		}})
		got := dumpedValues(t, r, a, sha)["nested"]
		if diff := cmp.Diff(map[string]any{"p": "vf1", "q": "chart"}, got); diff != "" {
			t.Errorf("nested (-want +got):\n%s", diff)
		}
	})

	t.Run("forceString keeps a parameter a string, and commas stay in one value", func(t *testing.T) {
		a := app("dump", "default", v1alpha1.ApplicationSource{RepoURL: charts.URL(), Path: "dump", Helm: &v1alpha1.HelmSource{
			Parameters: []v1alpha1.HelmParameter{
				{Name: "num", Value: "42"}, {Name: "str", Value: "42", ForceString: true},
				{Name: "csv", Value: "a,b"}, {Name: "list", Value: "{x,y}"},
			},
		}})
		got := dumpedValues(t, r, a, sha)
		want := map[string]any{"num": float64(42), "str": "42", "csv": "a,b", "list": []any{"x", "y"}}
		for k, w := range want {
			if diff := cmp.Diff(w, got[k]); diff != "" {
				t.Errorf("%s (-want +got):\n%s", k, diff)
			}
		}
	})

	t.Run("a missing value file fails naming it", func(t *testing.T) {
		a := app("dump", "default", v1alpha1.ApplicationSource{RepoURL: charts.URL(), Path: "dump", Helm: &v1alpha1.HelmSource{ValueFiles: []string{"nope.yaml"}}})
		if err := renderErr(t, r, a, sha); !strings.Contains(err.Error(), "value file nope.yaml") || IsTransient(err) {
			t.Errorf("error = %v", err)
		}
	})

	t.Run("a $ref to no source fails naming it", func(t *testing.T) {
		a := app("dump", "default", v1alpha1.ApplicationSource{RepoURL: charts.URL(), Path: "dump", Helm: &v1alpha1.HelmSource{ValueFiles: []string{"$nope/x.yaml"}}})
		if err := renderErr(t, r, a, sha); !strings.Contains(err.Error(), `no source of the app has ref "nope"`) {
			t.Errorf("error = %v", err)
		}
	})
}

func TestHelmHooks(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.NewRepo(t, "hooks")
	pushDir(t, repo, filepath.Join("testdata", "helm-chart", "repo"), "")
	sha := repo.Commit(t, "chart")
	r := newRenderer(t, Options{})
	objs := objects(t, render(t, r, app("myapp", "prod", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "charts/app"}), sha))

	t.Run("marks pre-install and pre-upgrade hooks PreSync with weight and delete policy", func(t *testing.T) {
		ann := annotations(findObject(t, objs, "Job", "myapp-app-migrate"))
		want := map[string]any{
			"helm.sh/hook": "pre-install,pre-upgrade", "helm.sh/hook-weight": "-5", "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded",
			v1alpha1.AnnotationHook: HookPreSync, v1alpha1.AnnotationHookWeight: "-5", v1alpha1.AnnotationHookDeletePolicy: "BeforeHookCreation,HookSucceeded",
		}
		if diff := cmp.Diff(want, ann); diff != "" {
			t.Errorf("annotations (-want +got):\n%s", diff)
		}
	})
	t.Run("marks post-install hooks PostSync, deleted before re-creation by default", func(t *testing.T) {
		ann := annotations(findObject(t, objs, "ConfigMap", "myapp-app-done"))
		if ann[v1alpha1.AnnotationHook] != HookPostSync || ann[v1alpha1.AnnotationHookDeletePolicy] != "BeforeHookCreation" {
			t.Errorf("annotations = %v", ann)
		}
	})
	t.Run("leaves objects with an Argo CD hook annotation alone", func(t *testing.T) {
		ann := annotations(findObject(t, objs, "ConfigMap", "myapp-app-argo-hook"))
		if _, ok := ann[v1alpha1.AnnotationHook]; ok || ann["argocd.argoproj.io/hook"] != "Sync" {
			t.Errorf("annotations = %v", ann)
		}
	})
	t.Run("drops test and delete hooks", func(t *testing.T) {
		for _, n := range objectNames(objs) {
			if n == "Pod/myapp-app-test" || n == "Job/myapp-app-cleanup" {
				t.Errorf("%s was kept", n)
			}
		}
	})
	t.Run("includes the chart's CRDs first, and the library and subchart output", func(t *testing.T) {
		names := objectNames(objs)
		if names[0] != "CustomResourceDefinition/widgets.example.com" {
			t.Errorf("first object = %s", names[0])
		}
		findObject(t, objs, "ConfigMap", "myapp-sub")
		labels := findObject(t, objs, "Service", "myapp-app")["metadata"].(map[string]any)["labels"].(map[string]any)
		if labels["helm.sh/chart"] != "app-1.2.0" {
			t.Errorf("library template not applied: labels = %v", labels)
		}
	})
	t.Run("leaves a disabled dependency out", func(t *testing.T) {
		for _, n := range objectNames(objs) {
			if strings.HasSuffix(n, "-cache") {
				t.Errorf("%s rendered, but cache.enabled is false", n)
			}
		}
	})
}

func TestMarkHooks(t *testing.T) {
	obj := func(ann string) Object {
		return Object{JSON: []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","annotations":{` + ann + `}}}`)}
	}
	cases := []struct {
		name string
		in   Object
		want map[string]any // nil: dropped
	}{
		{"a plain object is untouched", Object{JSON: []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}`)}, nil},
		{"post-upgrade alone is PostSync", obj(`"helm.sh/hook":"post-upgrade","helm.sh/hook-delete-policy":"hook-failed"`),
			map[string]any{"helm.sh/hook": "post-upgrade", "helm.sh/hook-delete-policy": "hook-failed", v1alpha1.AnnotationHook: HookPostSync, v1alpha1.AnnotationHookDeletePolicy: "HookFailed"}},
		{"a hook of two phases gets both", obj(`"helm.sh/hook":"pre-install, post-install"`),
			map[string]any{"helm.sh/hook": "pre-install, post-install", v1alpha1.AnnotationHook: "PreSync,PostSync", v1alpha1.AnnotationHookDeletePolicy: "BeforeHookCreation"}},
		{"a test hook is dropped", obj(`"helm.sh/hook":"test"`), nil},
		{"a Helm 2 crd-install hook stays a plain object", obj(`"helm.sh/hook":"crd-install"`), map[string]any{"helm.sh/hook": "crd-install"}},
		{"a rollback hook is dropped", obj(`"helm.sh/hook":"pre-rollback"`), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := markHooks([]Object{tc.in})
			if err != nil {
				t.Fatal(err)
			}
			dropped := strings.Contains(tc.name, "dropped")
			if dropped {
				if len(out) != 0 {
					t.Fatalf("kept %s", out[0].JSON)
				}
				return
			}
			if len(out) != 1 {
				t.Fatalf("dropped the object")
			}
			var o map[string]any
			if err := json.Unmarshal(out[0].JSON, &o); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, annotations(o)); tc.want != nil && diff != "" {
				t.Errorf("annotations (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHelmCapabilities(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.NewRepo(t, "caps")
	pushDir(t, repo, filepath.Join("testdata", "helm-chart", "repo"), "")
	sha := repo.Commit(t, "chart")
	caps := &Capabilities{KubeVersion: "v1.37.2", APIVersions: []string{"example.com/v1", "example.com/v1/Widget"}}
	calls := 0
	src := CapabilitiesFunc(func(_ context.Context, dest v1alpha1.Destination) (*Capabilities, error) {
		calls++
		return caps, nil
	})
	r := newRenderer(t, Options{Capabilities: src})
	a := app("myapp", "prod", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "charts/app"})
	data := func() map[string]any {
		objs := objects(t, render(t, r, a, sha))
		return findObject(t, objs, "ConfigMap", "myapp-app-config")["data"].(map[string]any)
	}

	t.Run("templates see the cluster's version and APIs", func(t *testing.T) {
		d := data()
		if d["kubeVersion"] != "v1.37.2" || d["hasWidgets"] != "true" {
			t.Errorf("data = %v", d)
		}
	})
	t.Run("a render with the same capabilities is a cache hit", func(t *testing.T) {
		before := r.Stats()
		data()
		if after := r.Stats(); after.Renders != before.Renders || after.CacheHits != before.CacheHits+1 {
			t.Errorf("stats %+v -> %+v; want one more cache hit", before, after)
		}
	})
	t.Run("new capabilities render again", func(t *testing.T) {
		caps = &Capabilities{KubeVersion: "v1.38.0"}
		before := r.Stats()
		if d := data(); d["kubeVersion"] != "v1.38.0" || d["hasWidgets"] != "false" {
			t.Errorf("data = %v", d)
		}
		if after := r.Stats(); after.Renders != before.Renders+1 {
			t.Errorf("stats %+v -> %+v; want a render", before, after)
		}
	})
	t.Run("a cached source asks the cluster once per TTL", func(t *testing.T) {
		cached := NewCachedCapabilities(src, 1<<40)
		calls = 0
		for range 3 {
			if _, err := cached.Capabilities(t.Context(), v1alpha1.Destination{}); err != nil {
				t.Fatal(err)
			}
		}
		if calls != 1 {
			t.Errorf("%d discovery calls; want 1", calls)
		}
	})
}

func TestHelmChartErrors(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.NewRepo(t, "errs")
	repo.WriteFile(t, "lib/Chart.yaml", "apiVersion: v2\nname: lib\ntype: library\nversion: 0.1.0\n")
	repo.WriteFile(t, "missing-dep/Chart.yaml", "apiVersion: v2\nname: m\nversion: 0.1.0\ndependencies:\n  - name: gone\n    version: 1.0.0\n")
	repo.WriteFile(t, "wrong-version/Chart.yaml", "apiVersion: v2\nname: w\nversion: 0.1.0\ndependencies:\n  - name: lib\n    version: \">=1.0.0\"\n    repository: file://../lib\n")
	repo.WriteFile(t, "bad-template/Chart.yaml", "apiVersion: v2\nname: b\nversion: 0.1.0\n")
	repo.WriteFile(t, "bad-template/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: {{ .Values.nope.deeper }}\n")
	sha := repo.Commit(t, "charts")
	r := newRenderer(t, Options{})
	cases := []struct{ name, path, want string }{
		{"a library chart cannot be installed", "lib", "library chart"},
		{"a dependency missing from charts/ is named", "missing-dep", "missing in charts/ directory: gone"},
		{"a file:// dependency of the wrong version is refused", "wrong-version", `wants version ">=1.0.0"`},
		{"a template error names the template and line", "bad-template", "b/templates/cm.yaml:6"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := renderErr(t, r, app("x", "default", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: tc.path, Helm: &v1alpha1.HelmSource{}}), sha)
			var se *SourceError
			if !strings.Contains(err.Error(), tc.want) || !errors.As(err, &se) || IsTransient(err) {
				t.Errorf("error = %v; want a terminal error containing %q", err, tc.want)
			}
		})
	}
}

func TestDefaultKubeVersionFollowsClientGo(t *testing.T) {
	mod, err := os.ReadFile(filepath.Join("..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*k8s\.io/client-go v0\.(\d+)\.`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod does not require k8s.io/client-go")
	}
	if want := "v1." + string(m[1]) + ".0"; defaultKubeVersion != want {
		t.Errorf("defaultKubeVersion = %s; go.mod's client-go is Kubernetes %s", defaultKubeVersion, want)
	}
}
