package apply

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/pmezard/go-difflib/difflib"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// DiffAction is what a sync would do to an object.
type DiffAction string

// Diff actions.
const (
	DiffCreate DiffAction = "create"
	DiffUpdate DiffAction = "update"
	DiffPrune  DiffAction = "prune"
)

// ObjectDiff is the difference between the live and the desired state of
// one object.
type ObjectDiff struct {
	Ref    ObjectRef
	Action DiffAction
	// Diff is a unified diff of the YAML, live (---) against desired
	// (+++), with Secret values masked.
	Diff string
}

// secretMask replaces Secret values in diffs.
const secretMask = "++++++++"

// Diff reports how objs differ from the cluster, without changing it: each
// main object goes through a server-side dry-run apply, so defaults,
// admission and fields other managers own are accounted for, and the
// result is compared with the live object. With opts.Prune, objects a
// sync would prune are listed too. Objects without differences are left
// out; hooks are never shown. Secret data is masked: equal values show as
// the same mask on both sides, changed ones as different masks.
func (a *Applier) Diff(ctx context.Context, opts SyncOptions, objs []*unstructured.Unstructured) ([]ObjectDiff, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	ctx, span := tracer().Start(ctx, "apply.diff")
	defer span.End()
	p, invalid := a.plan(planInput{app: opts.App, namespace: opts.Namespace, objects: objs, hooks: true, label: true, project: opts.Project, keyed: opts.Decrypted, hashKey: opts.DecryptedHashKey})
	if len(invalid) > 0 {
		return nil, &ApplyError{Failed: invalid}
	}
	var out []ObjectDiff
	for _, step := range p.steps {
		for _, o := range step {
			d, err := a.diffOne(ctx, o)
			if err != nil {
				return nil, err
			}
			if d != nil {
				out = append(out, *d)
			}
		}
	}
	if opts.Prune {
		inv, _, err := a.readInventory(ctx, opts.App)
		if err != nil {
			return nil, err
		}
		r := &run{a: a, plan: p, app: opts.App, inv: entryMap(inv.Entries)}
		for _, e := range r.candidates() {
			d, err := a.diffPrune(ctx, opts.App, e)
			if err != nil {
				return nil, err
			}
			if d != nil {
				out = append(out, *d)
			}
		}
	}
	return out, nil
}

func (a *Applier) diffOne(ctx context.Context, o *object) (*ObjectDiff, error) {
	if err := a.resolve(o); err != nil {
		// Its CRD is not installed yet: all of it is new.
		return renderDiff(o.ref, DiffCreate, nil, o.u.DeepCopy(), o.decrypted)
	}
	ri := a.resource(o)
	live, err := ri.Get(ctx, o.ref.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		live = nil
	case err != nil:
		return nil, fmt.Errorf("%s: reading live object failed: %w", o.ref, err)
	}
	if o.ifNotPresent && live != nil {
		return nil, nil
	}
	desired, err := a.ssa(ctx, ri, o.u, true)
	if err != nil {
		return nil, fmt.Errorf("%s: dry-run apply failed: %w", o.ref, apiError(err))
	}
	action := DiffUpdate
	if live == nil {
		action = DiffCreate
	}
	return renderDiff(o.ref, action, live, desired, o.decrypted)
}

func (a *Applier) diffPrune(ctx context.Context, app string, e InventoryEntry) (*ObjectDiff, error) {
	gvr := e.GVR()
	if m, err := a.mapper.RESTMapping(schema.GroupKind{Group: e.Group, Kind: e.Kind}); err == nil {
		gvr = m.Resource
	}
	var live *unstructured.Unstructured
	var err error
	if e.Namespace != "" {
		live, err = a.dyn.Resource(gvr).Namespace(e.Namespace).Get(ctx, e.Name, metav1.GetOptions{})
	} else {
		live, err = a.dyn.Resource(gvr).Get(ctx, e.Name, metav1.GetOptions{})
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: reading live object failed: %w", e.Ref(), err)
	}
	if live.GetAnnotations()[v1alpha1.AnnotationApp] != app || pruneDisabled(live.GetAnnotations()) || e.SharedWith != "" {
		return nil, nil
	}
	return renderDiff(e.Ref(), DiffPrune, live, nil, false)
}

// renderDiff formats the unified diff of two objects (nil for absent),
// or returns nil when they do not differ. decrypted masks every field of
// an object decrypted from a SOPS document, whatever its kind.
func renderDiff(ref ObjectRef, action DiffAction, live, desired *unstructured.Unstructured, decrypted bool) (*ObjectDiff, error) {
	for _, u := range []*unstructured.Unstructured{live, desired} {
		if u != nil {
			normalize(u)
		}
	}
	switch {
	case ref.Group == "" && ref.Kind == "Secret":
		maskSecrets(live, desired)
	case decrypted:
		maskFields(live, desired)
	}
	from, err := toYAML(live)
	if err != nil {
		return nil, err
	}
	to, err := toYAML(desired)
	if err != nil {
		return nil, err
	}
	if from == to {
		return nil, nil
	}
	text, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(from), B: difflib.SplitLines(to),
		FromFile: "live/" + ref.String(), ToFile: "desired/" + ref.String(), Context: 3,
	})
	if err != nil {
		return nil, err
	}
	return &ObjectDiff{Ref: ref, Action: action, Diff: text}, nil
}

func toYAML(u *unstructured.Unstructured) (string, error) {
	if u == nil {
		return "", nil
	}
	b, err := yaml.Marshal(u.Object)
	return string(b), err
}

// normalize drops what the server maintains and a diff reader does not
// decide: bookkeeping metadata and status.
func normalize(u *unstructured.Unstructured) {
	for _, f := range []string{"managedFields", "resourceVersion", "generation", "uid", "creationTimestamp", "selfLink"} {
		unstructured.RemoveNestedField(u.Object, "metadata", f)
	}
	unstructured.RemoveNestedField(u.Object, "status")
}

// maskFields replaces every top-level field but apiVersion, kind and
// metadata on both sides, as maskSecrets does values: equal fields show as
// the same mask, changed ones as different masks.
func maskFields(live, desired *unstructured.Unstructured) {
	var a, b map[string]any
	if live != nil {
		a = live.Object
	}
	if desired != nil {
		b = desired.Object
	}
	seen := map[string]bool{}
	for _, m := range []map[string]any{a, b} {
		for k := range m {
			switch k {
			case "apiVersion", "kind", "metadata":
				continue
			}
			if seen[k] {
				continue
			}
			seen[k] = true
			av, inA := a[k]
			bv, inB := b[k]
			if inA && inB && fmt.Sprint(av) == fmt.Sprint(bv) {
				a[k], b[k] = secretMask, secretMask
				continue
			}
			if inA {
				a[k] = secretMask + " (before)"
			}
			if inB {
				b[k] = secretMask + " (after)"
			}
		}
	}
}

// maskSecrets replaces Secret values on both sides so that no plaintext
// reaches the diff, while showing which keys changed.
func maskSecrets(live, desired *unstructured.Unstructured) {
	for _, field := range []string{"data", "stringData"} {
		var a, b map[string]any
		if live != nil {
			a, _, _ = unstructured.NestedMap(live.Object, field)
		}
		if desired != nil {
			b, _, _ = unstructured.NestedMap(desired.Object, field)
		}
		keys := slices.Sorted(maps.Keys(a))
		for k := range b {
			if _, ok := a[k]; !ok {
				keys = append(keys, k)
			}
		}
		for _, k := range keys {
			av, inA := a[k]
			bv, inB := b[k]
			switch {
			case inA && inB && fmt.Sprint(av) == fmt.Sprint(bv):
				a[k], b[k] = secretMask, secretMask
			default:
				if inA {
					a[k] = secretMask + " (before)"
				}
				if inB {
					b[k] = secretMask + " (after)"
				}
			}
		}
		if a != nil {
			_ = unstructured.SetNestedMap(live.Object, a, field)
		}
		if b != nil {
			_ = unstructured.SetNestedMap(desired.Object, b, field)
		}
	}
	// kubectl's client-side apply keeps the whole Secret, data included,
	// in this annotation.
	for _, u := range []*unstructured.Unstructured{live, desired} {
		if u == nil {
			continue
		}
		ann := u.GetAnnotations()
		if _, ok := ann["kubectl.kubernetes.io/last-applied-configuration"]; ok {
			ann["kubectl.kubernetes.io/last-applied-configuration"] = secretMask
			u.SetAnnotations(ann)
		}
	}
}
