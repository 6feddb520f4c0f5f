package apply

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	"github.com/ferrycd/ferry/proto/job"
)

// Install installs or upgrades ferry's CRDs (Applications and Projects)
// and creates ferry's namespace when it is missing, both with server-side
// apply. The default Project is EnsureDefaultProject's.
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
	return nil
}

// defaultProjectBackoff spaces the tries of creating the default Project:
// a CRD just installed is served a moment after it is Established.
var defaultProjectBackoff = job.Backoff{First: 250 * time.Millisecond, Factor: 2, Max: 10 * time.Second}

// EnsureDefaultProject creates the default Project in namespace unless it
// exists, trying until it is done or ctx ends: an operator may have
// narrowed it, and ferry leaves it as they wrote it. Until it exists the
// apply role uses the built-in one (v1alpha1.NewDefaultProject), so apps
// do not wait for it.
func EnsureDefaultProject(ctx context.Context, a *Applier, namespace string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	def, err := runtime.DefaultUnstructuredConverter.ToUnstructured(v1alpha1.NewDefaultProject(namespace))
	if err != nil {
		return err
	}
	ri := a.dyn.Resource(v1alpha1.ProjectsResource).Namespace(namespace)
	for attempt := 1; ; attempt++ {
		_, err := ri.Create(ctx, &unstructured.Unstructured{Object: def}, metav1.CreateOptions{FieldManager: FieldManager})
		if err == nil || apierrors.IsAlreadyExists(err) {
			return nil
		}
		d := defaultProjectBackoff.Delay(attempt)
		log.WarnContext(ctx, "could not create the default project; retrying", "retry_in", d, "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
	}
}
