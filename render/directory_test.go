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
