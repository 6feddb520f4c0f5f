package render

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/kustomize/api/types"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

func TestChooseRenderer(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.NewRepo(t, "kinds")
	chart := "apiVersion: v2\nname: c\nversion: 0.1.0\n"
	chartCM := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-helm\n"
	for _, dir := range []string{"helm", "both"} {
		repo.WriteFile(t, dir+"/Chart.yaml", chart)
		repo.WriteFile(t, dir+"/templates/cm.yaml", chartCM)
	}
	for _, dir := range []string{"kust", "both", "kust-yml", "kust-bare"} {
		name := map[string]string{"kust-yml": "kustomization.yml", "kust-bare": "Kustomization"}[dir]
		if name == "" {
			name = "kustomization.yaml"
		}
		repo.WriteFile(t, dir+"/"+name, "resources:\n  - res.yaml\nnamePrefix: k-\n")
		repo.WriteFile(t, dir+"/res.yaml", cmYAML("from-kustomize"))
	}
	repo.WriteFile(t, "kust/unlisted.yaml", cmYAML("unlisted"))
	sha := repo.Commit(t, "kinds")
	r := newRenderer(t, Options{})

	cases := []struct {
		name string
		src  v1alpha1.ApplicationSource
		want []string
	}{
		{"a folder with Chart.yaml is Helm", v1alpha1.ApplicationSource{Path: "helm"}, []string{"ConfigMap/from-helm"}},
		{"a folder with kustomization.yaml is Kustomize, and only what it lists is deployed", v1alpha1.ApplicationSource{Path: "kust"}, []string{"ConfigMap/k-from-kustomize"}},
		{"kustomization.yml counts", v1alpha1.ApplicationSource{Path: "kust-yml"}, []string{"ConfigMap/k-from-kustomize"}},
		{"Kustomization counts", v1alpha1.ApplicationSource{Path: "kust-bare"}, []string{"ConfigMap/k-from-kustomize"}},
		{"a kustomization wins over Chart.yaml, as in Argo CD's discovery", v1alpha1.ApplicationSource{Path: "both"}, []string{"ConfigMap/k-from-kustomize"}},
		{"explicit helm fields decide", v1alpha1.ApplicationSource{Path: "both", Helm: &v1alpha1.HelmSource{}}, []string{"ConfigMap/from-helm"}},
		{"explicit directory fields decide", v1alpha1.ApplicationSource{Path: "kust", Directory: &v1alpha1.DirectorySource{Exclude: "kustomization.yaml"}}, []string{"ConfigMap/from-kustomize", "ConfigMap/unlisted"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.src.RepoURL = repo.URL()
			got := objectNames(objects(t, render(t, r, app("x", "default", tc.src), sha)))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("objects (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("more than one explicit kind is an error", func(t *testing.T) {
		src := v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "both", Helm: &v1alpha1.HelmSource{}, Kustomize: &v1alpha1.KustomizeSource{}}
		if err := renderErr(t, r, app("x", "default", src), sha); !strings.Contains(err.Error(), "more than one of helm, kustomize and directory") {
			t.Errorf("error = %v", err)
		}
	})
}

func TestMultiSource(t *testing.T) {
	srv := gitserver.New(t)
	a := srv.NewRepo(t, "a")
	a.WriteFile(t, "one/cm.yaml", cmYAML("one"))
	a.WriteFile(t, "values/v.yaml", "name: from-ref\n")
	shaA := a.Commit(t, "a")
	b := srv.NewRepo(t, "b")
	b.WriteFile(t, "chart/Chart.yaml", "apiVersion: v2\nname: c\nversion: 0.1.0\n")
	b.WriteFile(t, "chart/values.yaml", "name: default\n")
	b.WriteFile(t, "chart/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Values.name }}\n")
	b.Commit(t, "b")
	r := newRenderer(t, Options{})
	multi := app("multi", "default",
		v1alpha1.ApplicationSource{RepoURL: a.URL(), Path: "one"},
		v1alpha1.ApplicationSource{RepoURL: a.URL(), Ref: "vals"},
		v1alpha1.ApplicationSource{RepoURL: b.URL(), Path: "chart", TargetRevision: gitserver.Branch, Helm: &v1alpha1.HelmSource{ValueFiles: []string{"$vals/values/v.yaml"}}},
	)
	bundle, rev, err := r.Render(t.Context(), Request{App: multi, RepoURL: a.URL(), Revision: shaA})
	if err != nil {
		t.Fatal(err)
	}
	if rev != shaA {
		t.Errorf("revision = %s; want the first source's commit %s", rev, shaA)
	}
	if diff := cmp.Diff([]string{"ConfigMap/one", "ConfigMap/from-ref"}, objectNames(objects(t, bundle))); diff != "" {
		t.Errorf("concatenates every source in order, a ref source giving no manifests (-want +got):\n%s", diff)
	}
	t.Run("two sources with one ref are refused", func(t *testing.T) {
		dup := app("dup", "default",
			v1alpha1.ApplicationSource{RepoURL: a.URL(), Ref: "x"},
			v1alpha1.ApplicationSource{RepoURL: b.URL(), Ref: "x"})
		if err := renderErr(t, r, dup, shaA); !strings.Contains(err.Error(), `ref "x" is also the ref of source 0`) {
			t.Errorf("error = %v", err)
		}
	})
}

func TestKustomizeRemoteBases(t *testing.T) {
	srv := gitserver.New(t)
	base := srv.NewRepo(t, "base")
	base.WriteFile(t, "web/kustomization.yaml", "resources:\n  - cm.yaml\n")
	base.WriteFile(t, "web/cm.yaml", cmYAML("remote"))
	base.Commit(t, "base")
	overlay := srv.NewRepo(t, "overlay")
	overlay.WriteFile(t, "app/kustomization.yaml", "resources:\n  - "+base.URL()+"/web?ref="+gitserver.Branch+"\nnamePrefix: o-\n")
	sha := overlay.Commit(t, "overlay")
	a := app("x", "default", v1alpha1.ApplicationSource{RepoURL: overlay.URL(), Path: "app"})

	t.Run("are refused by default", func(t *testing.T) {
		if err := renderErr(t, newRenderer(t, Options{}), a, sha); !strings.Contains(err.Error(), "remote kustomize bases are off") {
			t.Errorf("error = %v", err)
		}
	})
	t.Run("are fetched by kustomize when allowed, and never cached", func(t *testing.T) {
		r := newRenderer(t, Options{KustomizeRemoteBases: true})
		for range 2 {
			if got := objectNames(objects(t, render(t, r, a, sha))); strings.Join(got, ",") != "ConfigMap/o-remote" {
				t.Errorf("objects = %v", got)
			}
		}
		if st := r.Stats(); st.Renders != 2 || st.CacheHits != 0 {
			t.Errorf("stats = %+v; want 2 renders, no hit", st)
		}
	})
}

func TestSetImages(t *testing.T) {
	existing := []types.Image{{Name: "nginx", NewTag: "1.25"}, {Name: "redis", NewName: "mirror/redis", NewTag: "7"}}
	got, err := setImages(existing, []string{"nginx=registry.example.com/nginx:1.28", "redis=*:7.2", "busybox@sha256:abc"})
	if err != nil {
		t.Fatal(err)
	}
	want := []types.Image{
		{Name: "busybox", Digest: "sha256:abc"},
		{Name: "nginx", NewName: "registry.example.com/nginx", NewTag: "1.28"},
		{Name: "redis", NewName: "mirror/redis", NewTag: "7.2"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("images (-want +got):\n%s", diff)
	}
	if _, err := setImages(nil, []string{"nginx"}); err == nil {
		t.Error("an image with nothing to set was accepted, which kustomize edit refuses")
	}
}
