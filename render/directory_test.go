package render

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

func TestDirectory(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.NewRepo(t, "dir")
	repo.WriteFile(t, "apps/web/a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n")
	repo.WriteFile(t, "apps/web/list.json", `{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}]}`)
	repo.WriteFile(t, "apps/web/README.md", "not a manifest")
	repo.WriteFile(t, "apps/web/nested/c.yml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n")
	repo.WriteFile(t, "apps/web/nested/skip.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: skip\n")
	repo.WriteFile(t, "apps/bad/x.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n---\napiVersion: v1\nkind: [unclosed\n")
	sha := repo.Commit(t, "manifests")
	r := newRenderer(t, Options{})

	cases := []struct {
		name string
		dir  *v1alpha1.DirectorySource
		want []string
	}{
		{"reads the top folder only by default", nil, []string{"ConfigMap/a", "ConfigMap/b", "Secret/s"}},
		{"recurses when asked", &v1alpha1.DirectorySource{Recurse: true}, []string{"ConfigMap/a", "ConfigMap/b", "Secret/s", "ConfigMap/c", "ConfigMap/skip"}},
		{"applies include and exclude globs", &v1alpha1.DirectorySource{Recurse: true, Include: "{*.yaml,*.yml}", Exclude: "skip.yaml"}, []string{"ConfigMap/a", "ConfigMap/b", "ConfigMap/c"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := render(t, r, app("web", "default", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "apps/web", Directory: tc.dir}), sha)
			if diff := cmp.Diff(tc.want, objectNames(objects(t, b))); diff != "" {
				t.Errorf("objects (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("names the file and line of invalid YAML", func(t *testing.T) {
		err := renderErr(t, r, app("bad", "default", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "apps/bad"}), sha)
		if !strings.Contains(err.Error(), "apps/bad/x.yaml:7") || IsTransient(err) {
			t.Errorf("error = %v (transient %t); want apps/bad/x.yaml:7, terminal", err, IsTransient(err))
		}
		var ae *AppError
		if !errors.As(err, &ae) || ae.App != "ferry/bad" {
			t.Errorf("error %v does not name the app", err)
		}
	})

	t.Run("fails on a missing path", func(t *testing.T) {
		err := renderErr(t, r, app("gone", "default", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "apps/gone"}), sha)
		if !strings.Contains(err.Error(), `path "apps/gone" does not exist`) {
			t.Errorf("error = %v", err)
		}
	})
}

// TestJsonnetIsRefusedByName checks that a directory source holding
// jsonnet, which Argo CD would render, or setting directory.jsonnet, fails
// with a message naming jsonnet instead of rendering without it.
func TestJsonnetIsRefusedByName(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.NewRepo(t, "jsonnet")
	repo.WriteFile(t, "mixed/cm.yaml", cmYAML("cm"))
	repo.WriteFile(t, "mixed/app.jsonnet", "{ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'j' } }\n")
	repo.WriteFile(t, "mixed/lib.libsonnet", "{}\n")
	repo.WriteFile(t, "plain/cm.yaml", cmYAML("cm"))
	sha := repo.Commit(t, "jsonnet")
	r := newRenderer(t, Options{})
	for _, c := range []struct {
		name string
		src  v1alpha1.ApplicationSource
		want string
	}{
		{"a .jsonnet file", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "mixed"}, "mixed holds jsonnet (mixed/app.jsonnet)"},
		{"directory.jsonnet", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "plain",
			Directory: &v1alpha1.DirectorySource{Jsonnet: map[string]any{"tlas": []any{}}}}, "directory.jsonnet is set"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := renderErr(t, r, app("j", "default", c.src), sha)
			if !strings.Contains(err.Error(), c.want) || IsTransient(err) {
				t.Errorf("error %v; want a terminal one with %q", err, c.want)
			}
		})
	}
	t.Run("excluded jsonnet is fine", func(t *testing.T) {
		a := app("j", "default", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "mixed", Directory: &v1alpha1.DirectorySource{Exclude: "*.jsonnet"}})
		if b := render(t, r, a, sha); len(b.Objects) != 1 {
			t.Errorf("%d objects; want the ConfigMap", len(b.Objects))
		}
	})
}
