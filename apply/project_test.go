package apply

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// teamProject allows namespace ns only, and no cluster-scoped kinds.
func teamProject(ns string) *v1alpha1.Project {
	p := &v1alpha1.Project{Spec: v1alpha1.ProjectSpec{
		SourceRepos:  []string{"*"},
		Destinations: []v1alpha1.ProjectDestination{{Server: v1alpha1.InClusterServer, Namespace: ns}},
	}}
	p.Name = "team"
	return p
}

func TestProjectRefusesWhatItDoesNotAllow(t *testing.T) {
	a, _ := newApplier(t)
	ns := newNamespace(t)
	other := newNamespace(t)
	crb := `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: %s
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: ServiceAccount, name: default, namespace: %s}]
`
	child := `apiVersion: ferry.dev/v1alpha1
kind: Application
metadata: {name: %s, namespace: ferry}
spec:
  project: %s
  source: {repoURL: https://example.com/r.git, path: x}
  destination: {namespace: x}
`
	cases := []struct {
		name    string
		project *v1alpha1.Project
		bad     string // the offending document
		ref     string // the object the message names
		rule    string // the rule the message names
	}{
		{"a ClusterRoleBinding to cluster-admin", teamProject(ns),
			fmt.Sprintf(crb, uniqueName(t), ns), "ClusterRoleBinding.rbac.authorization.k8s.io/", "clusterResourceWhitelist"},
		{"an object in another namespace", teamProject(ns),
			strings.Replace(configMap("elsewhere", nil, nil), "metadata:\n", "metadata:\n  namespace: "+other+"\n", 1), "ConfigMap/" + other + "/elsewhere", "destinations"},
		{"a child Application in a project outside childProjects", func() *v1alpha1.Project {
			p := teamProject(ns)
			p.Spec.Destinations = append(p.Spec.Destinations, v1alpha1.ProjectDestination{Namespace: inventoryNS})
			p.Spec.ChildProjects = []string{"team-*"}
			return p
		}(), fmt.Sprintf(child, uniqueName(t), "platform"), "Application.ferry.dev/ferry/", "childProjects"},
		{"a wider Project written by a restricted project's app", func() *v1alpha1.Project {
			p := teamProject(ns)
			p.Spec.Destinations = append(p.Spec.Destinations, v1alpha1.ProjectDestination{Namespace: inventoryNS})
			p.Spec.ChildProjects = []string{"team-*"}
			return p
		}(), "apiVersion: ferry.dev/v1alpha1\nkind: Project\nmetadata: {name: team-wide, namespace: ferry}\nspec: {sourceRepos: ['*'], clusterResourceWhitelist: [{group: '*', kind: '*'}]}\n",
			"Project.ferry.dev/ferry/team-wide", "only a project that allows everything may write projects"},
		{"ferry's own inventory, even under the default project", v1alpha1.NewDefaultProject(inventoryNS),
			strings.Replace(configMap(InventoryName("ferry/victim"), nil, nil), "metadata:\n", "metadata:\n  namespace: ferry\n", 1), "ConfigMap/ferry/", "ferry's own namespace"},
		{"ferry's CRD, even under the default project", v1alpha1.NewDefaultProject(inventoryNS),
			"apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: applications.ferry.dev}\nspec: {}\n", "CustomResourceDefinition.apiextensions.k8s.io/applications.ferry.dev", "ferry's own CRDs"},
		{"an object labelled as repository credentials", v1alpha1.NewDefaultProject(inventoryNS),
			"apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\n  labels: {ferry.dev/secret-type: repository}\n", "Secret/" + ns + "/creds", v1alpha1.LabelSecretType},
	}
	for _, c := range cases {
		t.Run("refuses "+c.name+", applying nothing", func(t *testing.T) {
			good := uniqueName(t)
			opts := SyncOptions{App: inventoryNS + "/" + uniqueName(t), Namespace: ns, Prune: true, Project: c.project}
			res, err := a.Sync(t.Context(), opts, objects(t, configMap(good, nil, nil), c.bad))
			if err != nil {
				t.Fatal(err)
			}
			if res.Err == nil {
				t.Fatalf("the sync succeeded: %+v", res.Objects)
			}
			msg := res.Err.Error()
			if !strings.Contains(msg, c.ref) || !strings.Contains(msg, c.rule) {
				t.Errorf("message %q does not name the object %q and the rule %q", msg, c.ref, c.rule)
			}
			if get(t, schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, ns, good) != nil {
				t.Error("an allowed object of the refused sync was applied")
			}
			if IsTransient(res.Err) {
				t.Error("a project violation would be retried as transient")
			}
		})
	}

	t.Run("applies what the project allows", func(t *testing.T) {
		p := teamProject(ns)
		p.Spec.ClusterResourceWhitelist = []v1alpha1.GroupKind{{Group: "rbac.authorization.k8s.io", Kind: "ClusterRole"}}
		role := "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: " + uniqueName(t) + "}\nrules: []\n"
		opts := SyncOptions{App: inventoryNS + "/" + uniqueName(t), Namespace: ns, Project: p}
		mustSync(t, a, opts, objects(t, configMap(uniqueName(t), nil, nil), role))
	})
}

func TestAdmitSpec(t *testing.T) {
	p := teamProject("team-ns")
	p.Spec.SourceRepos = []string{"https://github.com/acme/*"}
	app := func(repo, ns string) *v1alpha1.Application {
		return &v1alpha1.Application{Spec: v1alpha1.ApplicationSpec{
			Sources:     []v1alpha1.ApplicationSource{{RepoURL: "https://github.com/acme/base.git"}, {RepoURL: repo}},
			Destination: v1alpha1.Destination{Namespace: ns},
		}}
	}
	for _, c := range []struct {
		name string
		app  *v1alpha1.Application
		rule string // empty: admitted
	}{
		{"sources and namespace the project allows", app("https://github.com/acme/apps.git", "team-ns"), ""},
		{"a second source from elsewhere", app("https://github.com/evil/apps.git", "team-ns"), "sourceRepos"},
		{"another namespace", app("https://github.com/acme/apps.git", "kube-system"), "destinations"},
		{"another cluster", func() *v1alpha1.Application {
			a := app("https://github.com/acme/apps.git", "team-ns")
			a.Spec.Destination.Server = "https://10.1.2.3:6443"
			return a
		}(), "not the cluster ferry runs in"},
	} {
		err := admitSpec(p, c.app)
		switch {
		case c.rule == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.rule != "" && (err == nil || !strings.Contains(err.Error(), c.rule)):
			t.Errorf("%s: %v; want a refusal naming %q", c.name, err, c.rule)
		}
	}
}

func TestDefaultProject(t *testing.T) {
	a, _ := newApplier(t)
	if err := Install(t.Context(), a, inventoryNS); err != nil {
		t.Fatal(err)
	}
	ri := testDyn.Resource(v1alpha1.ProjectsResource).Namespace(inventoryNS)
	_ = ri.Delete(t.Context(), v1alpha1.DefaultProject, metav1.DeleteOptions{})

	t.Run("is created at start", func(t *testing.T) {
		if err := EnsureDefaultProject(t.Context(), a, inventoryNS, nil); err != nil {
			t.Fatal(err)
		}
		u, err := ri.Get(t.Context(), v1alpha1.DefaultProject, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		repos, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "sourceRepos")
		if fmt.Sprint(repos) != "[*]" {
			t.Errorf("sourceRepos = %v", repos)
		}
	})

	t.Run("is left as the operator narrowed it", func(t *testing.T) {
		patch := []byte(`{"spec":{"sourceRepos":["https://github.com/acme/*"]}}`)
		if _, err := ri.Patch(t.Context(), v1alpha1.DefaultProject, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := EnsureDefaultProject(t.Context(), a, inventoryNS, nil); err != nil {
			t.Fatal(err)
		}
		u, _ := ri.Get(t.Context(), v1alpha1.DefaultProject, metav1.GetOptions{})
		repos, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "sourceRepos")
		if fmt.Sprint(repos) != "[https://github.com/acme/*]" {
			t.Errorf("the narrowed default project was overwritten: sourceRepos = %v", repos)
		}
	})

	t.Run("a missing default project reads as the built-in one; a missing other one is waited for", func(t *testing.T) {
		r := NewRole(a, nil, projectMap{}, nil, nil)
		p, err := r.project(&v1alpha1.Application{})
		if err != nil || p.AllowsKind("rbac.authorization.k8s.io", "ClusterRole", false) != nil {
			t.Errorf("default project = %+v, %v; want the built-in one", p, err)
		}
		_, err = r.project(&v1alpha1.Application{Spec: v1alpha1.ApplicationSpec{Project: "team"}})
		if !errors.Is(err, errNoProject) || !IsTransient(err) {
			t.Errorf("a missing project: %v; want errNoProject, waited for", err)
		}
	})
}

// projectMap is a ProjectGetter over a fixed set of projects.
type projectMap map[string]*v1alpha1.Project

func (m projectMap) Project(name string) (*v1alpha1.Project, error) {
	if p, ok := m[name]; ok {
		return p, nil
	}
	return nil, apierrors.NewNotFound(v1alpha1.ProjectsResource.GroupResource(), name)
}

func TestDiffChecksTheProject(t *testing.T) {
	a, _ := newApplier(t)
	ns := newNamespace(t)
	other := newNamespace(t)
	p := teamProject(ns)
	p.Name = "team-diff"
	r := NewRole(a, nil, projectMap{p.Name: p}, nil, nil)
	app := &v1alpha1.Application{Spec: v1alpha1.ApplicationSpec{Project: p.Name, Destination: v1alpha1.Destination{Namespace: ns}}}
	app.Namespace, app.Name = inventoryNS, uniqueName(t)
	elsewhere := strings.Replace(configMap("elsewhere", nil, nil), "metadata:\n", "metadata:\n  namespace: "+other+"\n", 1)

	if _, err := r.Diff(t.Context(), app, objects(t, configMap("here", nil, nil), elsewhere)); err == nil ||
		!strings.Contains(err.Error(), "ConfigMap/"+other+"/elsewhere") || !strings.Contains(err.Error(), "destinations") {
		t.Errorf("a diff with an object the project refuses: %v; want the refusal naming it", err)
	}
	diffs, err := r.Diff(t.Context(), app, objects(t, configMap("here", nil, nil)))
	if err != nil || len(diffs) != 1 {
		t.Errorf("a diff the project allows = %v, %v; want the new ConfigMap", diffs, err)
	}
}
