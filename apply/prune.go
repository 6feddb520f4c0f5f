package apply

import (
	"context"
	"fmt"
	"sort"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// pruneCandidate is an inventory entry no longer in the bundle.
type pruneCandidate struct {
	entry InventoryEntry
	ref   ObjectRef
	ri    dynamic.ResourceInterface
	live  *unstructured.Unstructured // nil when gone
	stage int
	wave  int
}

// pruneOutcome is what became of one candidate: its result (nil when
// there is nothing to report) and whether its entry stays in the inventory.
type pruneOutcome struct {
	result *ObjectResult
	keep   bool
	entry  InventoryEntry
}

// candidates returns the inventory entries that the bundle no longer has.
func (r *run) candidates() []InventoryEntry {
	desired := map[string]bool{}
	for _, o := range r.plan.main {
		desired[o.key()] = true
	}
	for _, o := range r.plan.hooks {
		desired[o.key()] = true
	}
	var out []InventoryEntry
	for _, e := range r.inv {
		if !desired[e.key()] {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out
}

// prune deletes the candidates that are this app's alone, in reverse
// stage order (namespaced objects, then cluster-scoped ones, then
// Namespaces and CRDs), and with foreground propagation. It never deletes
// an object that another app owns (v1alpha1.AnnotationApp) or declares (its
// inventory), one with pruning disabled, or a Namespace holding another
// app's objects. It returns the entries to keep.
func (r *run) prune(ctx context.Context, entries []InventoryEntry) ([]InventoryEntry, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	ctx, span := tracer().Start(ctx, "apply.prune", trace.WithAttributes(attribute.Int("ferry.candidates", len(entries))))
	defer span.End()

	cands := make([]*pruneCandidate, len(entries))
	// The first read that fails ends the prune: stop the others.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.a.opts.Parallelism)
	for i, e := range entries {
		g.Go(func() error {
			c := &pruneCandidate{entry: e, ref: e.Ref()}
			cands[i] = c
			gk := schema.GroupKind{Group: e.Group, Kind: e.Kind}
			gvr := e.GVR()
			namespaced := e.Namespace != ""
			if m, err := r.a.mapper.RESTMapping(gk); err == nil {
				gvr = m.Resource
				namespaced = m.Scope.Name() == meta.RESTScopeNameNamespace
			} else if !meta.IsNoMatchError(err) {
				return err
			}
			if namespaced {
				c.ri = r.a.dyn.Resource(gvr).Namespace(e.Namespace)
			} else {
				c.ri = r.a.dyn.Resource(gvr)
			}
			switch {
			case e.Group == "" && e.Kind == "Namespace", e.Group == "apiextensions.k8s.io" && e.Kind == "CustomResourceDefinition":
				c.stage = stageNamespacesAndCRDs
			case !namespaced:
				c.stage = stageClusterScoped
			default:
				c.stage = stageNamespaced
			}
			live, err := c.ri.Get(gctx, e.Name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err), meta.IsNoMatchError(err):
				return nil
			case err != nil:
				return fmt.Errorf("%s: reading live object failed: %w", c.ref, err)
			}
			c.live = live
			c.wave, _ = intAnnotation(live.GetAnnotations(), v1alpha1.AnnotationSyncWave, v1alpha1.ArgoAnnotationSyncWave)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, err
	}

	// Reverse of the apply order: highest wave first, then namespaced
	// objects before cluster-scoped ones before Namespaces and CRDs.
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if a.wave != b.wave {
			return a.wave > b.wave
		}
		if a.stage != b.stage {
			return a.stage > b.stage
		}
		return kindRank(a.entry.Kind) > kindRank(b.entry.Kind)
	})

	var others []*Inventory
	othersLoaded := false
	var kept []InventoryEntry
	var failed []ObjectResult
	for start := 0; start < len(cands); {
		end := start + 1
		for end < len(cands) && cands[end].wave == cands[start].wave && cands[end].stage == cands[start].stage {
			end++
		}
		group := cands[start:end]
		start = end

		// Another app's inventory is read only when something may be
		// deleted.
		if !othersLoaded {
			for _, c := range group {
				if c.live != nil {
					all, err := r.a.listInventories(ctx)
					if err != nil {
						return nil, err
					}
					for _, inv := range all {
						if inv.App != r.app {
							others = append(others, inv)
						}
					}
					othersLoaded = true
					break
				}
			}
		}

		outs := make([]pruneOutcome, len(group))
		var g errgroup.Group
		g.SetLimit(r.a.opts.Parallelism)
		for i, c := range group {
			g.Go(func() error {
				outs[i] = r.pruneOne(ctx, c, others)
				return nil
			})
		}
		_ = g.Wait()
		for _, out := range outs {
			if out.result != nil {
				r.res.Objects = append(r.res.Objects, *out.result)
				if out.result.Action == ActionFailed {
					failed = append(failed, *out.result)
				}
			}
			if out.keep {
				kept = append(kept, out.entry)
			}
		}
		if len(failed) > 0 {
			// Later groups are Namespaces and cluster-scoped objects the
			// failed ones may depend on: keep them for the next sync.
			for _, c := range cands[start:] {
				kept = append(kept, c.entry)
			}
			err := &ApplyError{Failed: failed}
			span.SetStatus(codes.Error, err.Error())
			return kept, err
		}
	}
	return kept, nil
}

func (r *run) pruneOne(ctx context.Context, c *pruneCandidate, others []*Inventory) pruneOutcome {
	skip := func(keep bool, format string, args ...any) pruneOutcome {
		e := c.entry
		e.Orphan = keep
		return pruneOutcome{result: &ObjectResult{Ref: c.ref, Action: ActionPruneSkipped, Message: fmt.Sprintf(format, args...)}, keep: keep, entry: e}
	}
	if c.live == nil {
		return pruneOutcome{} // already gone
	}
	ann := c.live.GetAnnotations()
	if owner := ann[v1alpha1.AnnotationApp]; owner != r.app {
		if owner == "" {
			return skip(false, "not pruned: annotation %s was removed, so ferry no longer owns it", v1alpha1.AnnotationApp)
		}
		return skip(false, "not pruned: owned by app %s", owner)
	}
	if pruneDisabled(ann) {
		return skip(true, "not pruned: pruning disabled by annotation")
	}
	if c.entry.SharedWith != "" {
		return skip(false, "not pruned: owned by app %s", c.entry.SharedWith)
	}
	key := c.entry.key()
	for _, inv := range others {
		for _, e := range inv.Entries {
			if e.key() == key && !e.Orphan {
				return skip(false, "not pruned: app %s declares it too", inv.App)
			}
			if c.entry.Group == "" && c.entry.Kind == "Namespace" && e.Namespace == c.entry.Name && !e.Orphan {
				return skip(false, "not pruned: the Namespace holds objects of app %s", inv.App)
			}
		}
	}
	if c.live.GetDeletionTimestamp() != nil {
		return pruneOutcome{result: &ObjectResult{Ref: c.ref, Action: ActionPruned, Message: "already being deleted"}}
	}
	fg := metav1.DeletePropagationForeground
	uid := c.live.GetUID()
	err := c.ri.Delete(ctx, c.entry.Name, metav1.DeleteOptions{PropagationPolicy: &fg, Preconditions: &metav1.Preconditions{UID: &uid}})
	switch {
	case err == nil, apierrors.IsNotFound(err):
		return pruneOutcome{result: &ObjectResult{Ref: c.ref, Action: ActionPruned}}
	case apierrors.IsConflict(err):
		// A new object of the same name replaced it: not the one ferry
		// applied.
		return skip(false, "not pruned: replaced by another object of the same name")
	}
	return pruneOutcome{
		result: &ObjectResult{Ref: c.ref, Action: ActionFailed, Message: "prune failed: " + apiMessage(err), cause: err},
		keep:   true, entry: c.entry,
	}
}
