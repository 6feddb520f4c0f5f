package v1alpha1

import (
	"fmt"
	"path"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Names of the Project resource.
const (
	ProjectKind     = "Project"
	ProjectResource = "projects"
	// ArgoProjectKind is Argo CD's kind for a project, AppProject.
	ArgoProjectKind = "AppProject"
	// DefaultProject is the project of an app that names none.
	DefaultProject = "default"
	// LabelSecretType and SecretTypeRepository label the Secrets in
	// ferry's namespace that hold repository credentials, as Argo CD's
	// argocd.argoproj.io/secret-type does.
	LabelSecretType      = "ferry.dev/secret-type"
	SecretTypeRepository = "repository"
	// LabelInventory is "true" on the ConfigMaps that hold apps'
	// inventories.
	LabelInventory = "ferry.dev/inventory"
)

// Project is a tenancy boundary: what the apps in it may deploy from and
// to. Its fields are Argo CD's AppProject's, so an AppProject document
// reads as a Project.
type Project struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ProjectSpec `json:"spec"`
}

// ProjectSpec lists what a project allows.
type ProjectSpec struct {
	Description string `json:"description,omitempty"`
	// SourceRepos are globs of the repositories apps may render from;
	// "!glob" denies. None allows nothing.
	SourceRepos []string `json:"sourceRepos,omitempty"`
	// Destinations are the clusters and namespaces apps may deploy to.
	// None allows nothing.
	Destinations []ProjectDestination `json:"destinations,omitempty"`
	// ClusterResourceWhitelist lists the cluster-scoped kinds apps may
	// write; none allows none.
	ClusterResourceWhitelist []GroupKind `json:"clusterResourceWhitelist,omitempty"`
	// ClusterResourceBlacklist lists cluster-scoped kinds they may not.
	ClusterResourceBlacklist []GroupKind `json:"clusterResourceBlacklist,omitempty"`
	// NamespaceResourceWhitelist, when set, lists the only namespaced
	// kinds apps may write; unset allows every kind.
	NamespaceResourceWhitelist []GroupKind `json:"namespaceResourceWhitelist,omitempty"`
	// NamespaceResourceBlacklist lists namespaced kinds they may not.
	NamespaceResourceBlacklist []GroupKind `json:"namespaceResourceBlacklist,omitempty"`
	// ChildProjects are globs of the projects a child Application (or a
	// Project) written by an app of apps in this project may name,
	// besides this project itself. ferry's own field.
	ChildProjects []string `json:"childProjects,omitempty"`
	// DecryptionSecrets are globs of the SOPS key Secrets, in ferry's
	// namespace, that apps of this project may name in
	// spec.decryption.secretRef. ferry's own field.
	DecryptionSecrets []string `json:"decryptionSecrets,omitempty"`
}

// ProjectDestination is a cluster and namespace glob.
type ProjectDestination struct {
	Server    string `json:"server,omitempty"`
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
}

// GroupKind names kinds by group and kind glob ("*" matches any).
type GroupKind struct {
	Group string `json:"group"`
	Kind  string `json:"kind"`
}

// ProjectsResource is the GroupVersionResource of ferry Projects.
var ProjectsResource = ApplicationsResource.GroupVersion().WithResource(ProjectResource)

// NewDefaultProject returns the project ferry creates at start in
// namespace: it allows every repository, destination and kind. What no
// project may ever allow (ferry's namespace, CRDs and labelled objects)
// is refused whatever the project says.
func NewDefaultProject(namespace string) *Project {
	return &Project{
		TypeMeta:   metav1.TypeMeta{APIVersion: APIVersion, Kind: ProjectKind},
		ObjectMeta: metav1.ObjectMeta{Name: DefaultProject, Namespace: namespace},
		Spec: ProjectSpec{
			Description:              "Created by ferry: allows everything but what no app may touch.",
			SourceRepos:              []string{"*"},
			Destinations:             []ProjectDestination{{Server: "*", Namespace: "*"}},
			ClusterResourceWhitelist: []GroupKind{{Group: "*", Kind: "*"}},
			ChildProjects:            []string{"*"},
			DecryptionSecrets:        []string{"*"},
		},
	}
}

// ProjectOf names the project of app: spec.project, or DefaultProject.
func ProjectOf(app *Application) string {
	if app.Spec.Project != "" {
		return app.Spec.Project
	}
	return DefaultProject
}

// matchGlobs reports whether s is allowed by globs: no "!glob" matches it
// and some plain glob does. An empty list allows nothing.
func matchGlobs(globs []string, s string) bool {
	allowed := false
	for _, g := range globs {
		if neg, ok := strings.CutPrefix(g, "!"); ok {
			if globMatch(neg, s) {
				return false
			}
			continue
		}
		if globMatch(g, s) {
			allowed = true
		}
	}
	return allowed
}

// globMatch matches s against a shell glob, where "*" also crosses "/"
// (repository URLs have several path segments).
func globMatch(glob, s string) bool {
	if glob == "*" || glob == s {
		return true
	}
	ok, err := path.Match(glob, s)
	if ok || err != nil {
		return ok
	}
	// path.Match stops "*" at "/": retry with the separators hidden.
	ok, _ = path.Match(strings.ReplaceAll(glob, "/", "\x00"), strings.ReplaceAll(s, "/", "\x00"))
	return ok
}

// AllowsSource reports whether apps of p may render from repoURL. Globs
// match the URL as written and in its normalised host/path form.
func (p *Project) AllowsSource(repoURL string) error {
	if matchGlobs(p.Spec.SourceRepos, repoURL) || matchGlobs(p.Spec.SourceRepos, NormalizeRepoURL(repoURL)) ||
		matchGlobs(p.Spec.SourceRepos, strings.TrimSuffix(repoURL, ".git")) {
		return nil
	}
	return fmt.Errorf("project %q does not allow source repository %s (sourceRepos)", p.Name, repoURL)
}

// AllowsDecryptionSecret reports whether apps of p may decrypt their SOPS
// documents with the key Secret name.
func (p *Project) AllowsDecryptionSecret(name string) error {
	if matchGlobs(p.Spec.DecryptionSecrets, name) {
		return nil
	}
	return fmt.Errorf("project %q does not allow the SOPS key Secret %q (decryptionSecrets)", p.Name, name)
}

// AllowsDestination reports whether apps of p may deploy to namespace
// ("" for cluster-scoped objects) of the cluster ferry runs in.
func (p *Project) AllowsDestination(namespace string) error {
	for _, d := range p.Spec.Destinations {
		serverOK := (d.Server == "" && d.Name == "") || (d.Server != "" && globMatch(d.Server, InClusterServer)) || (d.Name != "" && globMatch(d.Name, InClusterName))
		nsOK := namespace == "" || matchGlobs([]string{d.Namespace}, namespace)
		if serverOK && nsOK {
			if !deniedNamespace(p.Spec.Destinations, namespace) {
				return nil
			}
		}
	}
	if namespace == "" {
		return fmt.Errorf("project %q allows no destination in this cluster (destinations)", p.Name)
	}
	return fmt.Errorf("project %q does not allow namespace %q (destinations)", p.Name, namespace)
}

// deniedNamespace reports whether a "!glob" destination denies namespace.
func deniedNamespace(ds []ProjectDestination, namespace string) bool {
	for _, d := range ds {
		if neg, ok := strings.CutPrefix(d.Namespace, "!"); ok && globMatch(neg, namespace) {
			return true
		}
	}
	return false
}

// AllowsKind reports whether apps of p may write objects of group and
// kind, cluster-scoped or namespaced.
func (p *Project) AllowsKind(group, kind string, namespaced bool) error {
	gk := kind
	if group != "" {
		gk = kind + "." + group
	}
	if namespaced {
		if matchKinds(p.Spec.NamespaceResourceBlacklist, group, kind) {
			return fmt.Errorf("project %q denies %s (namespaceResourceBlacklist)", p.Name, gk)
		}
		if len(p.Spec.NamespaceResourceWhitelist) > 0 && !matchKinds(p.Spec.NamespaceResourceWhitelist, group, kind) {
			return fmt.Errorf("project %q does not allow %s (namespaceResourceWhitelist)", p.Name, gk)
		}
		return nil
	}
	if matchKinds(p.Spec.ClusterResourceBlacklist, group, kind) {
		return fmt.Errorf("project %q denies cluster-scoped %s (clusterResourceBlacklist)", p.Name, gk)
	}
	if !matchKinds(p.Spec.ClusterResourceWhitelist, group, kind) {
		return fmt.Errorf("project %q does not allow cluster-scoped %s (clusterResourceWhitelist)", p.Name, gk)
	}
	return nil
}

func matchKinds(list []GroupKind, group, kind string) bool {
	for _, gk := range list {
		if globMatch(gk.Group, group) && globMatch(gk.Kind, kind) {
			return true
		}
	}
	return false
}

// AllowsChildApplication reports whether an app of p may write a child
// Application in project child: p itself, or one childProjects lists.
func (p *Project) AllowsChildApplication(child string) error {
	if child == p.Name || matchGlobs(p.Spec.ChildProjects, child) {
		return nil
	}
	return fmt.Errorf("project %q does not allow child applications in project %q (childProjects)", p.Name, child)
}

// AllowsProjectDocument reports whether an app of p may write the Project
// named name. Only an unrestricted project may write Projects at all: a
// restricted one could otherwise write a wider project, and then a child
// in it. childProjects must name the project too.
func (p *Project) AllowsProjectDocument(name string) error {
	if !p.Unrestricted() {
		return fmt.Errorf("project %q is restricted, and only a project that allows everything may write projects (else an app of apps could create a wider one)", p.Name)
	}
	if matchGlobs(p.Spec.ChildProjects, name) {
		return nil
	}
	return fmt.Errorf("project %q does not allow writing project %q (childProjects)", p.Name, name)
}

// Unrestricted reports whether p allows every repository, destination and
// kind, as the default project does.
func (p *Project) Unrestricted() bool {
	s := p.Spec
	if len(s.ClusterResourceBlacklist) > 0 || len(s.NamespaceResourceWhitelist) > 0 || len(s.NamespaceResourceBlacklist) > 0 ||
		!slices.Contains(s.SourceRepos, "*") || !slices.Contains(s.ClusterResourceWhitelist, GroupKind{Group: "*", Kind: "*"}) {
		return false
	}
	for _, r := range s.SourceRepos {
		if strings.HasPrefix(r, "!") {
			return false
		}
	}
	anywhere := false
	for _, d := range s.Destinations {
		if strings.HasPrefix(d.Namespace, "!") {
			return false
		}
		if d.Namespace == "*" && (d.Server == "*" || d.Name == "*") {
			anywhere = true
		}
	}
	return anywhere
}
