package apply

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

func TestSyncLifecycle(t *testing.T) {
	a, log := newApplier(t)
	ns := newNamespace(t)
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns, Prune: true}
	bundle := func(aValue string, withB bool) []*unstructured.Unstructured {
		docs := []string{configMap("a", map[string]string{"k": aValue}, nil), deployment("web", "0", "nginx:1"), service("web")}
		if withB {
			docs = append(docs, configMap("b", map[string]string{"k": "b"}, nil))
		}
		return objects(t, docs...)
	}

	t.Run("creates every object", func(t *testing.T) {
		res := mustSync(t, a, opts, bundle("1", true))
		diffActions(t, map[string]Action{
			"ConfigMap/" + ns + "/a": ActionCreated, "ConfigMap/" + ns + "/b": ActionCreated,
			"Deployment.apps/" + ns + "/web": ActionCreated, "Service/" + ns + "/web": ActionCreated,
		}, res)
		cm := get(t, cmGVR, ns, "a")
		if cm == nil {
			t.Fatal("ConfigMap a was not created")
		}
		if got := cm.GetAnnotations()[v1alpha1.AnnotationApp]; got != opts.App {
			t.Errorf("annotation %s = %q, want %q", v1alpha1.AnnotationApp, got, opts.App)
		}
		if got := cm.GetLabels()[v1alpha1.LabelManaged]; got != "true" {
			t.Errorf("label %s = %q, want true", v1alpha1.LabelManaged, got)
		}
		inv, err := a.Inventory(t.Context(), opts.App)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range inv.Entries {
			names = append(names, e.Kind+"/"+e.Name)
		}
		if d := cmp.Diff([]string{"ConfigMap/a", "ConfigMap/b", "Service/web", "Deployment/web"}, names); d != "" {
			t.Errorf("inventory (-want +got):\n%s", d)
		}
		if inv.State != InventorySynced {
			t.Errorf("inventory state = %q, want %q", inv.State, InventorySynced)
		}
	})

	t.Run("configures only what changed", func(t *testing.T) {
		log.reset()
		res := mustSync(t, a, opts, bundle("2", true))
		diffActions(t, map[string]Action{
			"ConfigMap/" + ns + "/a": ActionConfigured, "ConfigMap/" + ns + "/b": ActionUnchanged,
			"Deployment.apps/" + ns + "/web": ActionUnchanged, "Service/" + ns + "/web": ActionUnchanged,
		}, res)
		var patches []string
		for _, w := range log.writes() {
			if strings.HasPrefix(w, "PATCH ") {
				patches = append(patches, w)
			}
		}
		if d := cmp.Diff([]string{"PATCH /api/v1/namespaces/" + ns + "/configmaps/a"}, patches); d != "" {
			t.Errorf("object writes (-want +got):\n%s", d)
		}
	})

	t.Run("writes nothing when nothing changed", func(t *testing.T) {
		// Let kube-controller-manager write the Deployment's status first:
		// other managers' writes to fields ferry does not own change nothing.
		eventually(t, "Deployment available", func() (bool, string) {
			d := get(t, deployGVR, ns, "web")
			c, _, _ := unstructured.NestedSlice(d.Object, "status", "conditions")
			return len(c) > 0, "no conditions yet"
		})
		log.reset()
		res := mustSync(t, a, opts, bundle("2", true))
		if d := cmp.Diff([]string(nil), log.writes()); d != "" {
			t.Errorf("write requests of a no-op sync (-want +got):\n%s", d)
		}
		if !res.Noop {
			t.Error("Result.Noop = false, want true")
		}
		t.Logf("a no-op sync of 4 objects made %d requests, all reads: %v", len(log.all()), log.all())
		diffActions(t, map[string]Action{
			"ConfigMap/" + ns + "/a": ActionUnchanged, "ConfigMap/" + ns + "/b": ActionUnchanged,
			"Deployment.apps/" + ns + "/web": ActionUnchanged, "Service/" + ns + "/web": ActionUnchanged,
		}, res)
	})

	t.Run("prunes what left Git", func(t *testing.T) {
		res := mustSync(t, a, opts, bundle("2", false))
		diffActions(t, map[string]Action{
			"ConfigMap/" + ns + "/a": ActionUnchanged, "ConfigMap/" + ns + "/b": ActionPruned,
			"Deployment.apps/" + ns + "/web": ActionUnchanged, "Service/" + ns + "/web": ActionUnchanged,
		}, res)
		eventually(t, "ConfigMap b deleted", func() (bool, string) { return get(t, cmGVR, ns, "b") == nil, "still there" })
		inv, err := a.Inventory(t.Context(), opts.App)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range inv.Entries {
			if e.Name == "b" {
				t.Errorf("pruned ConfigMap b is still in the inventory: %+v", e)
			}
		}
	})
}

func TestSyncForcesGitOverOtherManagers(t *testing.T) {
	a, _ := newApplier(t)
	ns := newNamespace(t)
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns}
	bundle := objects(t, configMap("cfg", map[string]string{"mode": "git"}, nil))
	mustSync(t, a, opts, bundle)

	// Another manager takes the field with a forced apply of its own.
	force := true
	patch := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg"},"data":{"mode":"manual"}}`
	if _, err := testDyn.Resource(cmGVR).Namespace(ns).Patch(t.Context(), "cfg", types.ApplyPatchType, []byte(patch),
		metav1.PatchOptions{FieldManager: "someone", Force: &force}); err != nil {
		t.Fatal(err)
	}

	res := mustSync(t, a, opts, bundle)
	diffActions(t, map[string]Action{"ConfigMap/" + ns + "/cfg": ActionConfigured}, res)
	got, _, _ := unstructured.NestedString(get(t, cmGVR, ns, "cfg").Object, "data", "mode")
	if got != "git" {
		t.Errorf("data.mode = %q after sync, want %q", got, "git")
	}
}

func TestSyncIfNotPresent(t *testing.T) {
	a, log := newApplier(t)
	ns := newNamespace(t)
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns}
	bundle := objects(t, configMap("seed", map[string]string{"v": "initial"}, map[string]string{v1alpha1.AnnotationSSA: "if-not-present"}))

	res := mustSync(t, a, opts, bundle)
	diffActions(t, map[string]Action{"ConfigMap/" + ns + "/seed": ActionCreated}, res)

	// Another controller owns it from now on.
	if _, err := testDyn.Resource(cmGVR).Namespace(ns).Patch(t.Context(), "seed", types.MergePatchType,
		[]byte(`{"data":{"v":"controller"}}`), metav1.PatchOptions{FieldManager: "controller"}); err != nil {
		t.Fatal(err)
	}
	log.reset()
	res = mustSync(t, a, opts, bundle)
	diffActions(t, map[string]Action{"ConfigMap/" + ns + "/seed": ActionUnchanged}, res)
	if d := cmp.Diff([]string(nil), log.writes()); d != "" {
		t.Errorf("writes (-want +got):\n%s", d)
	}
	got, _, _ := unstructured.NestedString(get(t, cmGVR, ns, "seed").Object, "data", "v")
	if got != "controller" {
		t.Errorf("data.v = %q, want the controller's value kept", got)
	}
}

func TestSyncDefaultsAndCreatesNamespace(t *testing.T) {
	a, _ := newApplier(t)
	dest := uniqueName(t)
	t.Cleanup(func() { _ = testDyn.Resource(namespaces).Delete(t.Context(), dest, metav1.DeleteOptions{}) })
	opts := SyncOptions{App: inventoryNS + "/" + dest, Namespace: dest, CreateNamespace: true}
	res := mustSync(t, a, opts, objects(t, configMap("cfg", nil, nil)))
	diffActions(t, map[string]Action{"Namespace/" + dest: ActionCreated, "ConfigMap/" + dest + "/cfg": ActionCreated}, res)
	if get(t, cmGVR, dest, "cfg") == nil {
		t.Error("ConfigMap without namespace did not land in the destination namespace")
	}
}

func TestSyncReportsEveryFailureOfAStage(t *testing.T) {
	a, _ := newApplier(t)
	ns := newNamespace(t)
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns, Prune: true}
	mustSync(t, a, opts, objects(t, configMap("old", nil, nil)))

	bundle := objects(t,
		configMap("bad-one", map[string]string{"not a key!": "x"}, nil),
		configMap("fine", nil, nil),
		configMap("bad-two", map[string]string{"also bad!": "x"}, nil),
		configMap("later", nil, map[string]string{v1alpha1.AnnotationSyncWave: "1"}),
	)
	res, err := a.Sync(t.Context(), opts, bundle)
	if err != nil {
		t.Fatal(err)
	}
	var ae *ApplyError
	if !errors.As(res.Err, &ae) {
		t.Fatalf("Result.Err = %v, want an *ApplyError", res.Err)
	}
	var failed []string
	for _, f := range ae.Failed {
		failed = append(failed, f.Ref.String())
		if !strings.Contains(f.Message, "Invalid value") {
			t.Errorf("%s: message %q does not carry the API server's", f.Ref, f.Message)
		}
	}
	if d := cmp.Diff([]string{"ConfigMap/" + ns + "/bad-one", "ConfigMap/" + ns + "/bad-two"}, failed); d != "" {
		t.Errorf("failed objects (-want +got):\n%s", d)
	}
	diffActions(t, map[string]Action{
		"ConfigMap/" + ns + "/bad-one": ActionFailed, "ConfigMap/" + ns + "/fine": ActionCreated,
		"ConfigMap/" + ns + "/bad-two": ActionFailed,
	}, res)
	if get(t, cmGVR, ns, "later") != nil {
		t.Error("an object of a later wave was applied after a failed stage")
	}
	if get(t, cmGVR, ns, "old") == nil {
		t.Error("a failed sync pruned")
	}
	if IsTransient(res.Err) {
		t.Error("IsTransient(invalid objects) = true, want false")
	}
	inv, names := inventoryNames(t, a, opts.App)
	if d := cmp.Diff([]string{"fine", "old"}, names); d != "" {
		t.Errorf("inventory after a partial apply (-want +got):\n%s", d)
	}
	if inv.State != InventoryFailed {
		t.Errorf("inventory state = %q, want %q", inv.State, InventoryFailed)
	}
}

func TestSyncRejectsInvalidBundleBeforeWriting(t *testing.T) {
	a, log := newApplier(t)
	ns := newNamespace(t)
	bundle := objects(t, configMap("fine", nil, nil), "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
		configMap("wave", nil, map[string]string{v1alpha1.AnnotationSyncWave: "soon"}))
	res, err := a.Sync(t.Context(), SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns}, bundle)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, f := range res.Failed() {
		msgs = append(msgs, f.Message)
	}
	want := []string{"has no metadata.name", `annotation ferry.dev/sync-wave: "soon" is not an integer`}
	if d := cmp.Diff(want, msgs); d != "" {
		t.Errorf("failures (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string(nil), log.writes()); d != "" {
		t.Errorf("writes (-want +got):\n%s", d)
	}
}

func TestSyncRefusesToPruneEverythingFromAnEmptyBundle(t *testing.T) {
	a, _ := newApplier(t)
	ns := newNamespace(t)
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns, Prune: true}
	mustSync(t, a, opts, objects(t, configMap("keep", nil, nil)))

	res, err := a.Sync(t.Context(), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res.Err, ErrEmptyBundle) {
		t.Fatalf("Result.Err = %v, want ErrEmptyBundle", res.Err)
	}
	if get(t, cmGVR, ns, "keep") == nil {
		t.Fatal("an empty bundle without allowEmpty pruned")
	}

	opts.AllowEmpty = true
	res = mustSync(t, a, opts, nil)
	diffActions(t, map[string]Action{"ConfigMap/" + ns + "/keep": ActionPruned}, res)
}

func TestSyncOptionsFor(t *testing.T) {
	app := mustApp(t, `
apiVersion: ferry.dev/v1alpha1
kind: Application
metadata: {name: web, namespace: ferry}
spec:
  destination: {namespace: shop}
  syncPolicy:
    automated: {prune: true, selfHeal: true}
    syncOptions: [CreateNamespace=true]
`)
	want := SyncOptions{App: "ferry/web", Namespace: "shop", Prune: true, CreateNamespace: true}
	if d := cmp.Diff(want, SyncOptionsFor(app)); d != "" {
		t.Errorf("SyncOptionsFor (-want +got):\n%s", d)
	}
}

func TestNewRejectsInvalidOptions(t *testing.T) {
	_, err := New(testCfg, Options{Parallelism: -1}, nil)
	if !errors.Is(err, ErrInvalidOption) {
		t.Errorf("New(Parallelism: -1) error = %v, want ErrInvalidOption", err)
	}
	a, _ := newApplier(t)
	_, err = a.Sync(t.Context(), SyncOptions{App: "no-slash"}, nil)
	if !errors.Is(err, ErrInvalidOption) {
		t.Errorf("Sync(App: no-slash) error = %v, want ErrInvalidOption", err)
	}
}

func TestApplyKeepsNoInventory(t *testing.T) {
	a, _ := newApplier(t)
	ns := newNamespace(t)
	res, err := a.Apply(t.Context(), Target{App: "ferry-system/ferry", Namespace: ns}, objects(t, configMap("plain", nil, nil)))
	if err != nil {
		t.Fatal(err)
	}
	diffActions(t, map[string]Action{"ConfigMap/" + ns + "/plain": ActionCreated}, res)
	res, err = a.Apply(t.Context(), Target{App: "ferry-system/ferry", Namespace: ns}, objects(t, configMap("plain", nil, nil)))
	if err != nil {
		t.Fatal(err)
	}
	diffActions(t, map[string]Action{"ConfigMap/" + ns + "/plain": ActionUnchanged}, res)
	if get(t, cmGVR, inventoryNS, InventoryName("ferry-system/ferry")) != nil {
		t.Error("Apply wrote an inventory")
	}
}

func mustApp(t *testing.T, doc string) *v1alpha1.Application {
	t.Helper()
	app := &v1alpha1.Application{}
	if err := yaml.Unmarshal([]byte(doc), app); err != nil {
		t.Fatal(err)
	}
	return app
}

// inventoryNames returns app's inventory and the object names in it.
func inventoryNames(t *testing.T, a *Applier, app string) (*Inventory, []string) {
	t.Helper()
	inv, err := a.Inventory(t.Context(), app)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range inv.Entries {
		names = append(names, e.Name)
	}
	return inv, names
}
