package v1alpha1

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestProjectPolicy(t *testing.T) {
	p := &Project{Spec: ProjectSpec{
		SourceRepos:                []string{"https://github.com/acme/*", "!https://github.com/acme/secret*"},
		Destinations:               []ProjectDestination{{Server: InClusterServer, Namespace: "team-*"}, {Name: "in-cluster", Namespace: "!team-admin"}},
		ClusterResourceWhitelist:   []GroupKind{{Group: "", Kind: "Namespace"}},
		NamespaceResourceBlacklist: []GroupKind{{Group: "", Kind: "ResourceQuota"}},
		ChildProjects:              []string{"team-*"},
	}}
	p.Name = "team"
	allowed := func(err error) bool { return err == nil }
	cases := []struct {
		name string
		got  bool
		want bool
	}{
		{"a repository the glob covers, with path segments", allowed(p.AllowsSource("https://github.com/acme/apps/web.git")), true},
		{"a repository the negation denies", allowed(p.AllowsSource("https://github.com/acme/secrets.git")), false},
		{"another owner", allowed(p.AllowsSource("https://github.com/evil/apps.git")), false},
		{"a namespace the glob covers", allowed(p.AllowsDestination("team-a")), true},
		{"a namespace a negated destination denies", allowed(p.AllowsDestination("team-admin")), false},
		{"another namespace", allowed(p.AllowsDestination("kube-system")), false},
		{"a whitelisted cluster-scoped kind", allowed(p.AllowsKind("", "Namespace", false)), true},
		{"a cluster-scoped kind not whitelisted", allowed(p.AllowsKind("rbac.authorization.k8s.io", "ClusterRoleBinding", false)), false},
		{"a namespaced kind with no whitelist", allowed(p.AllowsKind("apps", "Deployment", true)), true},
		{"a blacklisted namespaced kind", allowed(p.AllowsKind("", "ResourceQuota", true)), false},
		{"a child app in the parent's own project", allowed(p.AllowsChildApplication("team")), true},
		{"a child app in a listed child project", allowed(p.AllowsChildApplication("team-web")), true},
		{"a child app in a wider project", allowed(p.AllowsChildApplication("default")), false},
		{"writing its own project, not listed in childProjects", allowed(p.AllowsProjectDocument("team")), false},
		{"writing a child project, as a restricted project", allowed(p.AllowsProjectDocument("team-web")), false},
		{"writing a listed child project, as an unrestricted project", allowed(func() *Project {
			wide := NewDefaultProject("ferry")
			wide.Spec.ChildProjects = []string{"team-*"}
			return wide
		}().AllowsProjectDocument("team-web")), true},
		{"writing an unlisted project, as an unrestricted project", allowed(func() *Project {
			wide := NewDefaultProject("ferry")
			wide.Spec.ChildProjects = []string{"team-*"}
			return wide
		}().AllowsProjectDocument("default")), false},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s: allowed = %v, want %v", c.name, c.got, c.want)
		}
	}

	def := NewDefaultProject("ferry")
	for _, err := range []error{
		def.AllowsSource("git@github.com:anyone/anything"), def.AllowsDestination("anywhere"),
		def.AllowsKind("rbac.authorization.k8s.io", "ClusterRoleBinding", false), def.AllowsChildApplication("team"),
		def.AllowsProjectDocument("team"),
	} {
		if err != nil {
			t.Errorf("the default project refused: %v", err)
		}
	}
	empty := &Project{}
	if empty.AllowsSource("https://x") == nil || empty.AllowsDestination("x") == nil || empty.AllowsKind("", "Namespace", false) == nil {
		t.Error("an empty project allows something, as Argo CD's does not")
	}
}

func TestChildProject(t *testing.T) {
	doc := map[string]any{
		"apiVersion": ArgoAPIVersion, "kind": ArgoProjectKind,
		"metadata": map[string]any{"name": "team", "namespace": "argocd"},
		"spec": map[string]any{
			"sourceRepos":  []any{"*"},
			"destinations": []any{map[string]any{"server": "*", "namespace": "team"}},
			"roles":        []any{map[string]any{"name": "ci"}},
		},
	}
	out, unsupported, err := ChildProject(doc, "ferry")
	if err != nil {
		t.Fatal(err)
	}
	meta := out["metadata"].(map[string]any)
	if out["apiVersion"] != APIVersion || out["kind"] != ProjectKind || meta["namespace"] != "ferry" {
		t.Errorf("converted to %v %v in %v", out["apiVersion"], out["kind"], meta["namespace"])
	}
	if len(unsupported) != 1 || unsupported[0] != "spec.roles" {
		t.Errorf("unsupported = %v, want [spec.roles]", unsupported)
	}
}

func TestAllowsDecryptionSecret(t *testing.T) {
	team := &Project{ObjectMeta: metav1.ObjectMeta{Name: "team"}, Spec: ProjectSpec{DecryptionSecrets: []string{"team-*", "!team-admin"}}}
	for name, want := range map[string]bool{"team-sops": true, "team-admin": false, "ferry-sops": false} {
		if err := team.AllowsDecryptionSecret(name); (err == nil) != want {
			t.Errorf("team project, Secret %s: error %v; want allowed %t", name, err, want)
		}
	}
	if err := (&Project{ObjectMeta: metav1.ObjectMeta{Name: "bare"}}).AllowsDecryptionSecret("any"); err == nil || !strings.Contains(err.Error(), "decryptionSecrets") {
		t.Errorf("a project without decryptionSecrets: error %v; want a refusal naming the field", err)
	}
	if err := NewDefaultProject("ferry").AllowsDecryptionSecret("any"); err != nil {
		t.Errorf("the default project: %v", err)
	}
}
