package render

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

func TestChildApplications(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.NewRepo(t, "root")
	repo.WriteFile(t, "components/blog.yaml", `apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: blog
  namespace: argocd
  finalizers: [resources-finalizer.argocd.argoproj.io]
spec:
  project: default
  source: {repoURL: https://github.com/acme/platform.git, path: apps/blog, targetRevision: main}
  destination: {server: https://kubernetes.default.svc, namespace: blog}
  syncPolicy: {automated: {prune: true}}
  revisionHistoryLimit: 3
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: Application
data: {kind: Application}
`)
	repo.WriteFile(t, "broken/app.yaml", "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata:\n  name: x\nspec:\n  source: 42\n")
	sha := repo.Commit(t, "root app")
	root := app("root", "ferry", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "components"})

	t.Run("an Argo CD Application becomes a ferry one in ferry's namespace", func(t *testing.T) {
		objs := objects(t, render(t, newRenderer(t, Options{ApplicationNamespace: "ferry-system"}), root, sha))
		child := findObject(t, objs, "Application", "blog")
		meta := child["metadata"].(map[string]any)
		got := map[string]any{"apiVersion": child["apiVersion"], "namespace": meta["namespace"], "finalizers": meta["finalizers"],
			"unsupported": annotations(child)[v1alpha1.AnnotationUnsupported]}
		want := map[string]any{"apiVersion": v1alpha1.APIVersion, "namespace": "ferry-system",
			"finalizers": []any{v1alpha1.ResourcesFinalizer}, "unsupported": "spec.revisionHistoryLimit"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("child (-want +got):\n%s", diff)
		}
		if cm := findObject(t, objs, "ConfigMap", "Application"); cm["apiVersion"] != "v1" {
			t.Errorf("an object that only mentions Application was changed: %v", cm)
		}
	})

	t.Run("without a namespace the documents stay as Git has them", func(t *testing.T) {
		objs := objects(t, render(t, newRenderer(t, Options{}), root, sha))
		if child := findObject(t, objs, "Application", "blog"); child["apiVersion"] != v1alpha1.ArgoAPIVersion {
			t.Errorf("apiVersion = %v", child["apiVersion"])
		}
	})

	t.Run("a child that does not match the schema fails the render for good, naming the file", func(t *testing.T) {
		bad := app("bad", "ferry", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "broken"})
		err := renderErr(t, newRenderer(t, Options{ApplicationNamespace: "ferry"}), bad, sha)
		var se *SourceError
		if !errors.As(err, &se) || IsTransient(err) || !strings.Contains(err.Error(), "broken/app.yaml") {
			t.Errorf("error = %v (transient %t); want a terminal source error naming broken/app.yaml", err, IsTransient(err))
		}
	})
}

func TestIsTransient(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"nil, as in apply", nil, false},
		{"an unknown error, as in apply", errors.New("connection reset"), true},
		{"a source error", &SourceError{Err: errors.New("path missing")}, false},
		{"a transient source error", &SourceError{Err: errors.New("fetch timed out"), Transient: true}, true},
		{"a source error wrapped by the app", &AppError{App: "ferry/x", Err: &SourceError{Err: errors.New("bad YAML")}}, false},
	}
	for _, c := range cases {
		if got := IsTransient(c.err); got != c.want {
			t.Errorf("IsTransient(%s) = %v, want %v", c.name, got, c.want)
		}
	}
}
