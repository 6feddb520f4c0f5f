package render

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

const cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n"

func cmYAML(name string) string { return strings.Replace(cm, "%s", name, 1) }

// TestConfinement tries every way out of the repository the issue lists:
// .. and symbolic links, in the source path, value files, kustomize
// resources and a chart's files, and an exec plugin. Each must fail with
// an error that says so, and none may read what lies outside.
func TestConfinement(t *testing.T) {
	srv := gitserver.New(t)
	bare := srv.NewRepo(t, "evil")
	w := cloneRepo(t, bare.URL())

	w.write(t, "shared/cm.yaml", cmYAML("shared"))
	w.write(t, "shared/app.conf", "shared = true\n")
	// Directory sources.
	w.write(t, "apps/ok/a.yaml", cmYAML("a"))
	w.symlink(t, "apps/ok/shared.yaml", "../../shared/cm.yaml")
	w.symlink(t, "apps/passwd/passwd.yaml", "/etc/passwd")
	w.symlink(t, "apps/climb/x.yaml", "../../../../../../etc/passwd")
	w.symlink(t, "apps/escape", "../..")
	w.symlink(t, "apps/loop/a.yaml", "b.yaml")
	w.symlink(t, "apps/loop/b.yaml", "a.yaml")
	// Helm.
	w.write(t, "chart/Chart.yaml", "apiVersion: v2\nname: c\nversion: 0.1.0\n")
	w.write(t, "chart/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  conf: {{ .Files.Get \"files/shared.conf\" | quote }}\n")
	w.symlink(t, "chart/files/shared.conf", "../../shared/app.conf")
	w.symlink(t, "values/evil.yaml", "../../../../etc/passwd")
	w.write(t, "chart-evil/Chart.yaml", "apiVersion: v2\nname: e\nversion: 0.1.0\n")
	w.symlink(t, "chart-evil/templates/x.yaml", "../../../../etc/passwd")
	w.write(t, "chart-files-get/Chart.yaml", "apiVersion: v2\nname: g\nversion: 0.1.0\n")
	w.write(t, "chart-files-get/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: g\ndata:\n  a: ok\n  secret: {{ .Files.Get \"../shared/app.conf\" | quote }}\n")
	w.write(t, "chart-link/Chart.yaml", "apiVersion: v2\nname: l\nversion: 0.1.0\n")
	w.write(t, "chart-link/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: l\ndata:\n  secret: {{ .Files.Get \"files/passwd\" | quote }}\n")
	w.symlink(t, "chart-link/files/passwd", "/etc/passwd")
	w.write(t, "chart-dep/Chart.yaml", "apiVersion: v2\nname: d\nversion: 0.1.0\ndependencies:\n  - name: x\n    version: 0.1.0\n    repository: file://../../outside\n")
	// Kustomize.
	w.write(t, "kust/climb/kustomization.yaml", "resources:\n  - ../../../../../etc\n")
	w.write(t, "kust/root-only/kustomization.yaml", "resources:\n  - ../../shared/cm.yaml\n")
	w.write(t, "kust/link/kustomization.yaml", "resources:\n  - passwd.yaml\n")
	w.symlink(t, "kust/link/passwd.yaml", "../../../etc/passwd")
	w.write(t, "kust/inside-link/kustomization.yaml", "resources:\n  - base\n")
	w.symlink(t, "kust/inside-link/base", "../../shared-kust")
	w.write(t, "shared-kust/kustomization.yaml", "resources:\n  - cm.yaml\n")
	w.write(t, "shared-kust/cm.yaml", cmYAML("shared"))
	w.write(t, "kust/exec/kustomization.yaml", "resources:\n  - cm.yaml\ntransformers:\n  - plugin.yaml\n")
	w.write(t, "kust/exec/cm.yaml", cmYAML("exec"))
	w.write(t, "kust/exec/plugin.yaml", "apiVersion: example.com/v1\nkind: Pwn\nmetadata:\n  name: pwn\n  annotations:\n    config.kubernetes.io/function: |\n      exec:\n        path: ./pwn.sh\n")
	w.write(t, "kust/exec/pwn.sh", "#!/bin/sh\ntouch /tmp/ferry-pwned\n")
	w.write(t, "kust/go-plugin/kustomization.yaml", "resources:\n  - cm.yaml\ngenerators:\n  - gen.yaml\n")
	w.write(t, "kust/go-plugin/cm.yaml", cmYAML("gen"))
	w.write(t, "kust/go-plugin/gen.yaml", "apiVersion: someteam.example.com/v1\nkind: SecretGenerator\nmetadata:\n  name: gen\n")
	w.write(t, "kust/remote/kustomization.yaml", "resources:\n  - https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v3.3.1\n")
	w.write(t, "kust/remote-base/kustomization.yaml", "resources:\n  - ../remote\n")
	w.write(t, "kust/helm/kustomization.yaml", "helmCharts:\n  - name: x\n    repo: https://charts.example.com\n")
	sha := w.commit(t, "attempts")
	r := newRenderer(t, Options{})

	dir := func(p string) *v1alpha1.Application {
		return app("x", "default", v1alpha1.ApplicationSource{RepoURL: bare.URL(), Path: p})
	}
	helm := func(p string, h v1alpha1.HelmSource) *v1alpha1.Application {
		return app("x", "default", v1alpha1.ApplicationSource{RepoURL: bare.URL(), Path: p, Helm: &h})
	}
	refd := func(p string, vf string) *v1alpha1.Application {
		return app("x", "default",
			v1alpha1.ApplicationSource{RepoURL: bare.URL(), Path: p, Helm: &v1alpha1.HelmSource{ValueFiles: []string{vf}}},
			v1alpha1.ApplicationSource{RepoURL: bare.URL(), Ref: "r"})
	}

	refused := []struct {
		name    string
		app     *v1alpha1.Application
		wantIs  error
		wantMsg string
	}{
		{"a path with ..", dir("../x"), ErrOutsideRepository, `path "../x"`},
		{"a path climbing out after a descent", dir("apps/../../x"), ErrOutsideRepository, ""},
		{"a path through a symbolic link out of the repository", dir("apps/escape"), ErrOutsideRepository, `apps/escape is a symbolic link to "../.."`},
		{"a manifest linking to an absolute path", dir("apps/passwd"), ErrOutsideRepository, `"/etc/passwd"`},
		{"a manifest linking out through ..", dir("apps/climb"), ErrOutsideRepository, ""},
		{"a value file with ..", helm("chart", v1alpha1.HelmSource{ValueFiles: []string{"../../etc/passwd"}}), ErrOutsideRepository, "value file ../../etc/passwd"},
		{"a value file absolute to the repository root and climbing", helm("chart", v1alpha1.HelmSource{ValueFiles: []string{"/../etc/passwd"}}), ErrOutsideRepository, ""},
		{"a value file linking out", helm("chart", v1alpha1.HelmSource{ValueFiles: []string{"../values/evil.yaml"}}), ErrOutsideRepository, "values/evil.yaml is a symbolic link"},
		{"a chart holding a link out of the repository", helm("chart-evil", v1alpha1.HelmSource{}), ErrOutsideRepository, "chart-evil/templates/x.yaml"},
		{"a $ref value file climbing out of its repository", refd("chart", "$r/../../etc/passwd"), ErrOutsideRepository, ""},
		{"a chart reading outside itself with .Files.Get", helm("chart-files-get", v1alpha1.HelmSource{}), ErrOutsideChart, "g/templates/cm.yaml:7"},
		{"a chart file linking out of the repository", helm("chart-link", v1alpha1.HelmSource{}), ErrOutsideRepository, "chart-link/files/passwd"},
		{"a file:// dependency outside the repository", helm("chart-dep", v1alpha1.HelmSource{}), ErrOutsideRepository, "chart-dep/Chart.yaml"},
		{"kustomize resources climbing out of the repository", dir("kust/climb"), ErrOutsideRepository, "kustomize path /etc"},
		{"a kustomize resource linking out of the repository", dir("kust/link"), ErrOutsideRepository, "kust/link/passwd.yaml"},
		{"a kustomize remote base", dir("kust/remote"), ErrRemoteBase, `kust/remote/kustomization.yaml: resources entry "https://github.com/`},
		{"a kustomize base that has a remote base", dir("kust/remote-base"), ErrRemoteBase, ""},
		{"a kustomize resource outside its kustomization root", dir("kust/root-only"), nil, "is not in or below"},
		{"an exec function in a kustomization", dir("kust/exec"), nil, "plugin"},
		{"a Go or exec plugin generator", dir("kust/go-plugin"), nil, "plugin"},
		{"Helm inflation in a kustomization", dir("kust/helm"), nil, "enable-helm"},
		{"a symbolic link loop", dir("apps/loop"), nil, "too many levels of symbolic links"},
	}
	for _, tc := range refused {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			err := renderErr(t, r, tc.app, sha)
			t.Logf("error: %v", err)
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error = %v; want %v", err, tc.wantIs)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error = %v; want it to contain %q", err, tc.wantMsg)
			}
			if IsTransient(err) {
				t.Errorf("error %v is transient; a retry cannot help", err)
			}
			if strings.Contains(err.Error(), "root:x:0:0") {
				t.Errorf("error shows a file from outside: %v", err)
			}
		})
	}

	allowed := []struct {
		name string
		app  *v1alpha1.Application
		want []string
	}{
		{"follows a link to a manifest inside the repository", dir("apps/ok"), []string{"ConfigMap/a", "ConfigMap/shared"}},
		{"follows a link to a kustomize base inside the repository", dir("kust/inside-link"), []string{"ConfigMap/shared"}},
		{"follows a link to a chart file inside the repository", helm("chart", v1alpha1.HelmSource{}), []string{"ConfigMap/c"}},
	}
	for _, tc := range allowed {
		t.Run(tc.name, func(t *testing.T) {
			got := objectNames(objects(t, render(t, r, tc.app, sha)))
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("objects = %v; want %v", got, tc.want)
			}
		})
	}
}

func TestLimits(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.NewRepo(t, "limits")
	var many strings.Builder
	for i := range 20 {
		many.WriteString(cmYAML("cm-" + string(rune('a'+i))))
		many.WriteString("---\n")
	}
	repo.WriteFile(t, "many/cms.yaml", many.String())
	repo.WriteFile(t, "slow/Chart.yaml", "apiVersion: v2\nname: slow\nversion: 0.1.0\n")
	repo.WriteFile(t, "slow/templates/cm.yaml", "{{- $x := 0 }}{{- range until 20000000 }}{{ $x = add1 $x }}{{- end }}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: slow\n")
	sha := repo.Commit(t, "limits")
	dir := func(p string) *v1alpha1.Application {
		return app("x", "default", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: p})
	}

	t.Run("caps the objects of a render", func(t *testing.T) {
		err := renderErr(t, newRenderer(t, Options{MaxObjects: 10}), dir("many"), sha)
		if !errors.Is(err, ErrLimitExceeded) || !strings.Contains(err.Error(), "more than 10 objects") {
			t.Errorf("error = %v", err)
		}
	})
	t.Run("caps the bytes a render produces", func(t *testing.T) {
		err := renderErr(t, newRenderer(t, Options{MaxOutputBytes: 500}), dir("many"), sha)
		if !errors.Is(err, ErrLimitExceeded) {
			t.Errorf("error = %v", err)
		}
	})
	t.Run("caps the bytes a render reads", func(t *testing.T) {
		err := renderErr(t, newRenderer(t, Options{MaxInputBytes: 100}), dir("many"), sha)
		if !errors.Is(err, ErrLimitExceeded) || IsTransient(err) {
			t.Errorf("error = %v", err)
		}
	})
	t.Run("times a render out", func(t *testing.T) {
		r := newRenderer(t, Options{})
		// Fetch first, so that the timeout falls on the template.
		if _, err := r.git.Resolve(t.Context(), repo.URL(), sha); err != nil {
			t.Fatal(err)
		}
		r.opts.Timeout = 50 * time.Millisecond
		err := renderErr(t, r, dir("slow"), sha)
		if !strings.Contains(err.Error(), "timed out") {
			t.Errorf("error = %v", err)
		}
	})
}
