package apply

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// Install installs or upgrades ferry's CRDs (Applications and Projects)
// and creates ferry's namespace when it is missing, both with server-side
// apply, then creates the default Project unless it exists: an operator
// may have narrowed it, and ferry leaves it as they wrote it.
func Install(ctx context.Context, a *Applier, namespace string) error {
	var objs []*unstructured.Unstructured
	for _, doc := range [][]byte{v1alpha1.CRD, v1alpha1.ProjectCRD} {
		crd := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &crd.Object); err != nil {
			return fmt.Errorf("decoding an embedded CRD: %w", err)
		}
		objs = append(objs, crd)
	}
	objs = append(objs, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": namespace},
	}})
	if _, err := a.Apply(ctx, Target{App: "ferry-system/ferry"}, objs); err != nil {
		return fmt.Errorf("installing ferry's CRDs: %w", err)
	}
	for _, crd := range objs[:2] {
		if err := a.WaitEstablished(ctx, crd.GetName(), time.Minute); err != nil {
			return err
		}
	}
	def, err := runtime.DefaultUnstructuredConverter.ToUnstructured(v1alpha1.NewDefaultProject(namespace))
	if err != nil {
		return err
	}
	_, err = a.dyn.Resource(v1alpha1.ProjectsResource).Namespace(namespace).Create(ctx, &unstructured.Unstructured{Object: def}, metav1.CreateOptions{FieldManager: FieldManager})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the default project: %w", err)
	}
	return nil
}
