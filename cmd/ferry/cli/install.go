package cli

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/ferrycd/ferry/apply"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// installCRD installs or upgrades the Application CRD and creates ferry's
// namespace when it is missing, both with server-side apply.
func installCRD(ctx context.Context, a *apply.Applier, namespace string) error {
	crd := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(v1alpha1.CRD, &crd.Object); err != nil {
		return fmt.Errorf("decoding the embedded CRD: %w", err)
	}
	ns := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": namespace},
	}}
	if _, err := a.Apply(ctx, apply.Target{App: "ferry-system/ferry"}, []*unstructured.Unstructured{crd, ns}); err != nil {
		return fmt.Errorf("installing the Application CRD: %w", err)
	}
	return a.WaitEstablished(ctx, crd.GetName(), time.Minute)
}
