package apply

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// admitObject checks one object of a sync against what no app may touch,
// then against the app's project. The error names the rule.
func (a *Applier) admitObject(p *v1alpha1.Project, o *object) error {
	ferryNS := a.opts.InventoryNamespace
	group, kind := o.gk.Group, o.gk.Kind
	ferryKind := group == v1alpha1.Group && (kind == v1alpha1.Kind || kind == v1alpha1.ProjectKind)
	switch {
	case group == "apiextensions.k8s.io" && kind == "CustomResourceDefinition" && strings.HasSuffix(o.u.GetName(), "."+v1alpha1.Group):
		return fmt.Errorf("is one of ferry's own CRDs: no app may write it")
	case group == "" && kind == "Namespace" && o.u.GetName() == ferryNS:
		return fmt.Errorf("is ferry's own namespace: no app may write it")
	case o.namespaced && o.u.GetNamespace() == ferryNS && !ferryKind:
		return fmt.Errorf("is in ferry's own namespace %q, where an app may write only Applications and Projects", ferryNS)
	}
	labels := o.u.GetLabels()
	for _, l := range []string{v1alpha1.LabelInventory, v1alpha1.LabelSecretType} {
		if _, ok := labels[l]; ok {
			return fmt.Errorf("carries ferry's label %s: no app may write such an object", l)
		}
	}
	if err := p.AllowsKind(group, kind, o.namespaced); err != nil {
		return err
	}
	if o.namespaced {
		if err := p.AllowsDestination(o.u.GetNamespace()); err != nil {
			return err
		}
	}
	switch {
	case group == v1alpha1.Group && kind == v1alpha1.Kind:
		child, _, _ := unstructured.NestedString(o.u.Object, "spec", "project")
		if child == "" {
			child = v1alpha1.DefaultProject
		}
		return p.AllowsChildApplication(child)
	case group == v1alpha1.Group && kind == v1alpha1.ProjectKind:
		return p.AllowsProjectDocument(o.u.GetName())
	}
	return nil
}
