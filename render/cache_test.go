package render

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// TestRenderCache checks that a push re-renders exactly the apps whose
// inputs it touched, including inputs outside the app's path: a Helm
// value file from a $ref source, a file:// library chart, a kustomize
// base. Every cached bundle is compared with a fresh render.
func TestRenderCache(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.NewRepo(t, "mono")
	repo.WriteFile(t, "README.md", "# monorepo\n")
	repo.WriteFile(t, "apps/helm/Chart.yaml", "apiVersion: v2\nname: h\nversion: 0.1.0\ndependencies:\n  - name: common\n    version: 0.1.0\n    repository: file://../../libs/common\n")
	repo.WriteFile(t, "apps/helm/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: h\n  labels: {{ include \"common.labels\" . | nindent 4 }}\ndata:\n  color: {{ .Values.color | quote }}\n")
	repo.WriteFile(t, "libs/common/Chart.yaml", "apiVersion: v2\nname: common\ntype: library\nversion: 0.1.0\n")
	repo.WriteFile(t, "libs/common/templates/_labels.tpl", "{{- define \"common.labels\" -}}\nteam: a\n{{- end -}}\n")
	repo.WriteFile(t, "envs/prod.yaml", "color: blue\n")
	repo.WriteFile(t, "bases/web/kustomization.yaml", "resources:\n  - cm.yaml\n")
	repo.WriteFile(t, "bases/web/cm.yaml", cmYAML("web"))
	repo.WriteFile(t, "apps/kust/kustomization.yaml", "resources:\n  - ../../bases/web\nnamePrefix: prod-\n")
	repo.WriteFile(t, "apps/plain/cm.yaml", cmYAML("plain"))
	first := repo.Commit(t, "initial")

	apps := map[string]*v1alpha1.Application{
		"helm": app("helm", "default",
			v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "apps/helm", Helm: &v1alpha1.HelmSource{ValueFiles: []string{"$cfg/envs/prod.yaml"}}},
			v1alpha1.ApplicationSource{RepoURL: repo.URL(), Ref: "cfg"}),
		"kust":  app("kust", "default", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "apps/kust"}),
		"plain": app("plain", "default", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "apps/plain"}),
	}
	r := newRenderer(t, Options{})
	// renderAll renders every app at sha and returns which ones rendered
	// rather than coming from the cache.
	renderAll := func(t *testing.T, sha string) map[string]bool {
		t.Helper()
		rendered := map[string]bool{}
		for _, name := range []string{"helm", "kust", "plain"} {
			before := r.Stats()
			b := render(t, r, apps[name], sha)
			after := r.Stats()
			rendered[name] = after.Renders > before.Renders
			fresh := render(t, newRenderer(t, Options{}), apps[name], sha)
			if b.Hash != fresh.Hash {
				t.Errorf("%s at %s: served bundle %s, a fresh render gives %s", name, sha[:8], b.Hash, fresh.Hash)
			}
		}
		return rendered
	}
	want := func(t *testing.T, got map[string]bool, rendered ...string) {
		t.Helper()
		for name, did := range got {
			should := false
			for _, n := range rendered {
				should = should || n == name
			}
			if did != should {
				t.Errorf("%s rendered: %t; want %t", name, did, should)
			}
		}
	}

	t.Run("the first push renders every app", func(t *testing.T) {
		want(t, renderAll(t, first), "helm", "kust", "plain")
	})
	t.Run("a render reports the paths it read outside its sources' paths", func(t *testing.T) {
		in := func(p string, shallow bool) v1alpha1.InputPath {
			return v1alpha1.InputPath{RepoURL: repo.URL(), Path: p, Shallow: shallow}
		}
		cases := map[string][]v1alpha1.InputPath{
			"helm":  {in("envs/prod.yaml", false), in("libs/common", false)},
			"kust":  {in("bases/web", false)},
			"plain": {in("apps/plain", true)},
		}
		for name, want := range cases {
			res, err := r.RenderWithInputs(t.Context(), request(apps[name], first))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, res.Inputs); diff != "" {
				t.Errorf("%s inputs (-want +got):\n%s", name, diff)
			}
		}
	})
	t.Run("a push that touches no app's inputs renders nothing", func(t *testing.T) {
		repo.WriteFile(t, "README.md", "# monorepo, edited\n")
		repo.WriteFile(t, "envs/staging.yaml", "color: green\n")
		repo.WriteFile(t, "bases/other/cm.yaml", cmYAML("other"))
		before := r.Stats()
		want(t, renderAll(t, repo.Commit(t, "unrelated")))
		if after := r.Stats(); after.Renders != before.Renders || after.CacheHits != before.CacheHits+3 {
			t.Errorf("stats %+v -> %+v; want 3 cache hits and no render", before, after)
		}
	})
	t.Run("a push to a kustomize base outside the app's path renders that app", func(t *testing.T) {
		repo.WriteFile(t, "bases/web/cm.yaml", cmYAML("web-v2"))
		want(t, renderAll(t, repo.Commit(t, "base")), "kust")
	})
	t.Run("a push to a $ref value file renders the Helm app", func(t *testing.T) {
		repo.WriteFile(t, "envs/prod.yaml", "color: red\n")
		want(t, renderAll(t, repo.Commit(t, "values")), "helm")
	})
	t.Run("a push to a file:// library chart renders the Helm app", func(t *testing.T) {
		repo.WriteFile(t, "libs/common/templates/_labels.tpl", "{{- define \"common.labels\" -}}\nteam: b\n{{- end -}}\n")
		want(t, renderAll(t, repo.Commit(t, "library")), "helm")
	})
	t.Run("a changed file in a directory app renders it", func(t *testing.T) {
		repo.WriteFile(t, "apps/plain/cm.yaml", cmYAML("plain-v2"))
		want(t, renderAll(t, repo.Commit(t, "plain")), "plain")
	})
	t.Run("a new file in a directory app renders it", func(t *testing.T) {
		repo.WriteFile(t, "apps/plain/more.yaml", cmYAML("more"))
		want(t, renderAll(t, repo.Commit(t, "more")), "plain")
	})
	t.Run("going back to an earlier commit is served from the cache", func(t *testing.T) {
		want(t, renderAll(t, first))
	})
}
