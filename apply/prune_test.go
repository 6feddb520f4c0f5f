package apply

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

func TestPruneSafety(t *testing.T) {
	t.Run("keeps objects with pruning disabled", func(t *testing.T) {
		for _, ann := range []map[string]string{
			{v1alpha1.AnnotationPrune: "disabled"},
			{v1alpha1.ArgoAnnotationSyncOptions: "Prune=false"},
		} {
			a, _ := newApplier(t)
			ns := newNamespace(t)
			opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns, Prune: true}
			mustSync(t, a, opts, objects(t, configMap("kept", nil, ann), configMap("other", nil, nil)))

			res := mustSync(t, a, opts, objects(t, configMap("other", nil, nil)))
			diffActions(t, map[string]Action{"ConfigMap/" + ns + "/other": ActionUnchanged, "ConfigMap/" + ns + "/kept": ActionPruneSkipped}, res)
			if get(t, cmGVR, ns, "kept") == nil {
				t.Errorf("%v: the object was pruned", ann)
			}
			// Still tracked, so that removing the annotation later lets it go.
			inv, err := a.Inventory(t.Context(), opts.App)
			if err != nil {
				t.Fatal(err)
			}
			if e, ok := entryMap(inv.Entries)[objKey("", "ConfigMap", ns, "kept")]; !ok || !e.Orphan {
				t.Errorf("%v: inventory entry = %+v, %v; want an orphan entry", ann, e, ok)
			}
		}
	})

	t.Run("never prunes an object another app owns", func(t *testing.T) {
		a, _ := newApplier(t)
		ns := newNamespace(t)
		opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns, Prune: true}
		mustSync(t, a, opts, objects(t, configMap("taken", nil, nil), configMap("other", nil, nil)))
		// Another app took the object over since.
		if _, err := testDyn.Resource(cmGVR).Namespace(ns).Patch(t.Context(), "taken", types.MergePatchType,
			[]byte(`{"metadata":{"annotations":{"ferry.dev/app":"ferry/someone-else"}}}`), metav1.PatchOptions{FieldManager: "test"}); err != nil {
			t.Fatal(err)
		}
		res := mustSync(t, a, opts, objects(t, configMap("other", nil, nil)))
		diffActions(t, map[string]Action{"ConfigMap/" + ns + "/other": ActionUnchanged, "ConfigMap/" + ns + "/taken": ActionPruneSkipped}, res)
		if get(t, cmGVR, ns, "taken") == nil {
			t.Error("pruned an object of another app")
		}
	})

	t.Run("prunes past another app's corrupt inventory, which fails only its own app", func(t *testing.T) {
		a, _ := newApplier(t)
		ns := newNamespace(t)
		broken := inventoryNS + "/" + uniqueName(t)
		cm := objects(t, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: "+InventoryName(broken)+"\n  namespace: "+inventoryNS+
			"\n  labels: {ferry.dev/inventory: \"true\"}\ndata: {inventory: \"{not json\"}\n")[0]
		if _, err := testDyn.Resource(cmGVR).Namespace(inventoryNS).Create(t.Context(), cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = testDyn.Resource(cmGVR).Namespace(inventoryNS).Delete(context.Background(), InventoryName(broken), metav1.DeleteOptions{})
		})
		opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns, Prune: true}
		mustSync(t, a, opts, objects(t, configMap("gone", nil, nil), configMap("other", nil, nil)))
		res := mustSync(t, a, opts, objects(t, configMap("other", nil, nil)))
		diffActions(t, map[string]Action{"ConfigMap/" + ns + "/other": ActionUnchanged, "ConfigMap/" + ns + "/gone": ActionPruned}, res)

		_, err := a.Sync(t.Context(), SyncOptions{App: broken, Namespace: ns, Prune: true}, objects(t, configMap("mine", nil, nil)))
		if err == nil || !strings.Contains(err.Error(), InventoryName(broken)) {
			t.Errorf("the broken app's own sync: %v; want an error naming its inventory", err)
		}
	})

	t.Run("keeps a Namespace that two apps declare", func(t *testing.T) {
		a, _ := newApplier(t)
		shared := uniqueName(t)
		t.Cleanup(func() { _ = testDyn.Resource(namespaces).Delete(t.Context(), shared, metav1.DeleteOptions{}) })
		nsDoc := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + shared + "\n"
		appA := SyncOptions{App: inventoryNS + "/" + shared + "-a", Namespace: shared, Prune: true}
		appB := SyncOptions{App: inventoryNS + "/" + shared + "-b", Namespace: shared, Prune: true}

		mustSync(t, a, appA, objects(t, nsDoc, configMap("a", nil, nil)))
		res := mustSync(t, a, appB, objects(t, nsDoc, configMap("b", nil, nil)))
		diffActions(t, map[string]Action{"Namespace/" + shared: ActionUnchanged, "ConfigMap/" + shared + "/b": ActionCreated}, res)

		// App A drops the Namespace (and its ConfigMap): B still declares it.
		res = mustSync(t, a, appA, objects(t, configMap("a2", nil, nil)))
		diffActions(t, map[string]Action{
			"ConfigMap/" + shared + "/a2": ActionCreated, "ConfigMap/" + shared + "/a": ActionPruned,
			"Namespace/" + shared: ActionPruneSkipped,
		}, res)
		if ns := get(t, namespaces, "", shared); ns == nil || ns.GetDeletionTimestamp() != nil {
			t.Fatal("the shared Namespace was deleted")
		}

		// B adopts it now that A no longer declares it; B may prune it.
		res = mustSync(t, a, appB, objects(t, nsDoc, configMap("b", nil, nil)))
		diffActions(t, map[string]Action{"Namespace/" + shared: ActionConfigured, "ConfigMap/" + shared + "/b": ActionUnchanged}, res)
		if got := get(t, namespaces, "", shared).GetAnnotations()[v1alpha1.AnnotationApp]; got != appB.App {
			t.Errorf("owner after adoption = %q, want %q", got, appB.App)
		}
	})

	t.Run("prunes nothing when a stage fails", func(t *testing.T) {
		a, _ := newApplier(t)
		ns := newNamespace(t)
		opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns, Prune: true}
		mustSync(t, a, opts, objects(t, configMap("old", nil, nil)))
		res, err := a.Sync(t.Context(), opts, objects(t, configMap("broken", map[string]string{"bad key!": "x"}, nil)))
		if err != nil {
			t.Fatal(err)
		}
		if res.Err == nil {
			t.Fatal("sync of an invalid object succeeded")
		}
		if get(t, cmGVR, ns, "old") == nil {
			t.Error("a failed sync pruned")
		}
	})

	t.Run("prunes namespaced objects before their Namespace", func(t *testing.T) {
		a, log := newApplier(t)
		own := uniqueName(t)
		opts := SyncOptions{App: inventoryNS + "/" + own, Namespace: own, Prune: true, AllowEmpty: true}
		mustSync(t, a, opts, objects(t, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "+own+"\n", configMap("inside", nil, nil)))
		log.reset()
		res := mustSync(t, a, opts, nil)
		diffActions(t, map[string]Action{"Namespace/" + own: ActionPruned, "ConfigMap/" + own + "/inside": ActionPruned}, res)
		var deletes []string
		for _, w := range log.writes() {
			if w[:6] == "DELETE" {
				deletes = append(deletes, w)
			}
		}
		want := []string{"DELETE /api/v1/namespaces/" + own + "/configmaps/inside", "DELETE /api/v1/namespaces/" + own}
		if d := cmp.Diff(want, deletes); d != "" {
			t.Errorf("delete order (-want +got):\n%s", d)
		}
	})
}
