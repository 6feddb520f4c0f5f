package apply

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// crd returns a namespaced CRD of kind Widget in group, with extra
// properties of padding bytes in its schema.
func crd(group string, padding int) *unstructured.Unstructured {
	props := map[string]any{"size": map[string]any{"type": "string"}}
	for i := 0; padding > 0; i++ {
		desc := strings.Repeat("a long description of a field. ", 60)
		props[fmt.Sprintf("field%04d", i)] = map[string]any{"type": "string", "description": desc}
		padding -= len(desc) + 40
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": "widgets." + group},
		"spec": map[string]any{
			"group": group,
			"names": map[string]any{"kind": "Widget", "listKind": "WidgetList", "plural": "widgets", "singular": "widget"},
			"scope": "Namespaced",
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type": "object",
					"properties": map[string]any{
						"spec": map[string]any{"type": "object", "properties": props},
					},
				}},
			}},
		},
	}}
}

func widget(group, name string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": group + "/v1", "kind": "Widget",
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{"size": "large"},
	}}
}

func TestSyncAppliesCRDAndItsResourceInOneSync(t *testing.T) {
	a, _ := newApplier(t)
	ns := newNamespace(t)
	group := ns + ".example.com"
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns}
	// The custom resource comes first in the bundle; stages put the CRD first.
	res := mustSync(t, a, opts, []*unstructured.Unstructured{widget(group, "w1"), crd(group, 0)})
	diffActions(t, map[string]Action{
		"CustomResourceDefinition.apiextensions.k8s.io/widgets." + group: ActionCreated,
		"Widget." + group + "/" + ns + "/w1":                             ActionCreated,
	}, res)
	if get(t, schema.GroupVersionResource{Group: group, Version: "v1", Resource: "widgets"}, ns, "w1") == nil {
		t.Error("the custom resource does not exist")
	}
	t.Cleanup(func() { _, _ = a.Uninstall(t.Context(), opts.App) })

	// Again, with the kind now in the mapper's cache: nothing to write.
	res = mustSync(t, a, opts, []*unstructured.Unstructured{widget(group, "w1"), crd(group, 0)})
	if !res.Noop {
		t.Errorf("second sync was not a no-op: %v", actions(res))
	}
}

func TestSyncAppliesCRDLargerThanTheAnnotationLimit(t *testing.T) {
	a, _ := newApplier(t)
	ns := newNamespace(t)
	group := ns + ".example.com"
	big := crd(group, 300<<10)
	raw, err := json.Marshal(big.Object)
	if err != nil {
		t.Fatal(err)
	}
	// Client-side apply would have to copy this into an annotation, which
	// is limited to 262,144 bytes.
	if len(raw) <= 262144 {
		t.Fatalf("test CRD is only %d bytes", len(raw))
	}
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns}
	res := mustSync(t, a, opts, []*unstructured.Unstructured{big, widget(group, "w")})
	diffActions(t, map[string]Action{
		"CustomResourceDefinition.apiextensions.k8s.io/widgets." + group: ActionCreated,
		"Widget." + group + "/" + ns + "/w":                              ActionCreated,
	}, res)
	t.Cleanup(func() { _, _ = a.Uninstall(t.Context(), opts.App) })
	t.Logf("applied a CRD of %d bytes", len(raw))
}

func TestSyncOrdersByWaveThenStage(t *testing.T) {
	a, log := newApplier(t)
	own := uniqueName(t)
	t.Cleanup(func() { _, _ = a.Uninstall(t.Context(), inventoryNS+"/"+own) })
	opts := SyncOptions{App: inventoryNS + "/" + own, Namespace: own}
	bundle := objects(t,
		configMap("late", nil, map[string]string{v1alpha1.AnnotationSyncWave: "2"}),
		configMap("early", nil, map[string]string{v1alpha1.ArgoAnnotationSyncWave: "-1"}),
		"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "+own+"\n  annotations: {ferry.dev/sync-wave: \"-1\"}\n",
		configMap("middle", nil, nil),
	)
	mustSync(t, a, opts, bundle)
	var order []string
	for _, w := range log.writes() {
		if strings.HasPrefix(w, "PATCH ") {
			order = append(order, w[strings.LastIndex(w, "/")+1:])
		}
	}
	if d := cmp.Diff([]string{own, "early", "middle", "late"}, order); d != "" {
		t.Errorf("apply order (-want +got):\n%s", d)
	}
}
