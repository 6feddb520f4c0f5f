package apply

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// Inventory storage: one ConfigMap per app in ferry's namespace, labelled
// v1alpha1.LabelInventory, holding the JSON of an Inventory under
// InventoryKey.
const (
	// InventoryKey is the ConfigMap data key holding the Inventory JSON.
	InventoryKey = "inventory"
)

// Inventory states.
const (
	// InventoryApplying: a sync is writing objects. The entries already
	// include every object it may create, so a crash leaves nothing
	// untracked; the Monitor reports no drift meanwhile.
	InventoryApplying = "applying"
	// InventorySynced: the last sync applied everything.
	InventorySynced = "synced"
	// InventoryFailed: the last sync failed part-way.
	InventoryFailed = "failed"
)

var configMaps = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

// Inventory is the set of objects ferry applied for one app, kept in the
// cluster so that losing NATS state loses nothing.
type Inventory struct {
	App   string `json:"app"`
	State string `json:"state"`
	// Revision is the revision of the last sync that wrote the inventory.
	Revision string `json:"revision,omitempty"`
	// Digest identifies the bundle of the last successful sync.
	Digest string `json:"digest,omitempty"`
	// PostSync is the Digest whose PostSync hooks have not run yet.
	PostSync  string           `json:"postSync,omitempty"`
	UpdatedAt time.Time        `json:"updatedAt"`
	Entries   []InventoryEntry `json:"entries"`
}

// InventoryEntry is one object of an app.
type InventoryEntry struct {
	Group     string `json:"g,omitempty"`
	Version   string `json:"v"`
	Kind      string `json:"k"`
	Resource  string `json:"r"`
	Namespace string `json:"ns,omitempty"`
	Name      string `json:"n"`
	// Hash is the hash of the object as ferry last applied it.
	Hash string `json:"h,omitempty"`
	// Fields is the hash of ferry's managed fields right after that apply;
	// when the live value differs, another manager took fields ferry owns.
	Fields string `json:"f,omitempty"`
	// IfNotPresent marks an object created once and then left alone.
	IfNotPresent bool `json:"inp,omitempty"`
	// SharedWith names the app that owns an object this app also declares
	// (a shared Namespace); this app does not write it.
	SharedWith string `json:"sh,omitempty"`
	// Orphan marks an object that left Git but was kept because pruning is
	// disabled on it; it is no longer assessed for health or drift.
	Orphan bool `json:"o,omitempty"`
}

// Ref returns the entry's object reference.
func (e InventoryEntry) Ref() ObjectRef {
	return ObjectRef{Group: e.Group, Version: e.Version, Kind: e.Kind, Namespace: e.Namespace, Name: e.Name}
}

// GVR returns the resource the entry was applied through.
func (e InventoryEntry) GVR() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: e.Group, Version: e.Version, Resource: e.Resource}
}

func (e InventoryEntry) key() string { return objKey(e.Group, e.Kind, e.Namespace, e.Name) }

// tracked reports whether drift is assessed for the entry.
func (e InventoryEntry) tracked() bool {
	return e.Fields != "" && !e.IfNotPresent && e.SharedWith == "" && !e.Orphan
}

// InventoryName returns the name of app's inventory ConfigMap:
// inventory.<namespace>.<name>, or a hash when that is too long.
func InventoryName(app string) string {
	ns, name, _ := strings.Cut(app, "/")
	n := "inventory." + ns + "." + name
	if len(n) <= 253 {
		return n
	}
	s := sha256.Sum256([]byte(app))
	return "inventory." + hex.EncodeToString(s[:16])
}

// Inventory reads app's inventory. It returns an empty one when there is
// none yet.
func (a *Applier) Inventory(ctx context.Context, app string) (*Inventory, error) {
	inv, _, err := a.readInventory(ctx, app)
	return inv, err
}

// readInventory returns the inventory and the ConfigMap's resourceVersion,
// empty when it does not exist.
func (a *Applier) readInventory(ctx context.Context, app string) (*Inventory, string, error) {
	u, err := a.dyn.Resource(configMaps).Namespace(a.opts.InventoryNamespace).Get(ctx, InventoryName(app), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return &Inventory{App: app}, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("reading inventory of %s: %w", app, err)
	}
	inv, err := decodeInventory(u)
	if err != nil {
		return nil, "", err
	}
	return inv, u.GetResourceVersion(), nil
}

// errCorruptInventory is wrapped when an inventory ConfigMap does not hold
// an inventory: someone edited it, or wrote it in ferry's name.
var errCorruptInventory = errors.New("corrupt inventory")

func decodeInventory(u *unstructured.Unstructured) (*Inventory, error) {
	data, _, _ := unstructured.NestedString(u.Object, "data", InventoryKey)
	inv := &Inventory{}
	if err := json.Unmarshal([]byte(data), inv); err != nil {
		return nil, fmt.Errorf("decoding inventory %s/%s: %w: %v", u.GetNamespace(), u.GetName(), errCorruptInventory, err)
	}
	return inv, nil
}

// writeInventory creates or replaces app's inventory. rv is the
// resourceVersion it was read at, so that a concurrent writer makes this
// write fail rather than be lost; it is updated on success.
func (a *Applier) writeInventory(ctx context.Context, inv *Inventory, rv *string) error {
	inv.UpdatedAt = time.Now().UTC().Truncate(time.Second)
	slices.SortFunc(inv.Entries, func(x, y InventoryEntry) int { return strings.Compare(x.key(), y.key()) })
	data, err := json.Marshal(inv)
	if err != nil {
		return err
	}
	cm := &corev1.ConfigMap{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{
			Name: InventoryName(inv.App), Namespace: a.opts.InventoryNamespace, ResourceVersion: *rv,
			Labels:      map[string]string{v1alpha1.LabelInventory: "true"},
			Annotations: map[string]string{v1alpha1.AnnotationApp: inv.App},
		},
		Data: map[string]string{InventoryKey: string(data)},
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(cm)
	if err != nil {
		return err
	}
	ri := a.dyn.Resource(configMaps).Namespace(a.opts.InventoryNamespace)
	var out *unstructured.Unstructured
	if *rv == "" {
		out, err = ri.Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{FieldManager: FieldManager})
	} else {
		out, err = ri.Update(ctx, &unstructured.Unstructured{Object: obj}, metav1.UpdateOptions{FieldManager: FieldManager})
	}
	if err != nil {
		return fmt.Errorf("writing inventory of %s: %w", inv.App, err)
	}
	*rv = out.GetResourceVersion()
	return nil
}

// sameInventory compares inventories, ignoring the write time.
func sameInventory(a, b *Inventory) bool {
	xe, ye := slices.Clone(a.Entries), slices.Clone(b.Entries)
	cmp := func(p, q InventoryEntry) int { return strings.Compare(p.key(), q.key()) }
	slices.SortFunc(xe, cmp)
	slices.SortFunc(ye, cmp)
	return a.App == b.App && a.State == b.State && a.Revision == b.Revision && a.Digest == b.Digest &&
		a.PostSync == b.PostSync && slices.Equal(xe, ye)
}

// entryMap indexes entries by object key.
func entryMap(entries []InventoryEntry) map[string]InventoryEntry {
	m := make(map[string]InventoryEntry, len(entries))
	for _, e := range entries {
		m[e.key()] = e
	}
	return m
}

// listInventories returns every app's inventory, for the checks that keep
// prune from deleting what another app declares.
func (a *Applier) listInventories(ctx context.Context) ([]*Inventory, error) {
	l, err := a.dyn.Resource(configMaps).Namespace(a.opts.InventoryNamespace).List(ctx, metav1.ListOptions{LabelSelector: v1alpha1.LabelInventory + "=true"})
	if err != nil {
		return nil, fmt.Errorf("listing inventories: %w", err)
	}
	out := make([]*Inventory, 0, len(l.Items))
	for i := range l.Items {
		inv, err := decodeInventory(&l.Items[i])
		if err != nil {
			// One app's broken inventory is that app's failure, shown by
			// its own syncs; it must not stop every other app's prune.
			// What it held is still guarded by each object's owner
			// annotation, which prune checks on the live object.
			a.log.WarnContext(ctx, "skipping a corrupt inventory", "inventory", l.Items[i].GetName(), "error", err)
			continue
		}
		out = append(out, inv)
	}
	return out, nil
}
