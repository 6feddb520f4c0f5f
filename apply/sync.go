package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// ErrEmptyBundle is the outcome of a pruning sync of a bundle without
// objects when the app does not allow empty syncs: it would delete
// everything, which is more often a broken source than an intent.
var ErrEmptyBundle = errors.New("the bundle has no objects and allowEmpty is off: refusing to prune everything")

// ErrNoPostSyncPending is returned by RunPostSync when the bundle has no
// PostSync hooks waiting: they ran already, or a newer sync replaced the
// bundle.
var ErrNoPostSyncPending = errors.New("no PostSync hooks pending for this bundle")

// ErrNotHealthy is returned by RunPostSync when the app is not Healthy yet.
var ErrNotHealthy = errors.New("app is not healthy")

// SyncOptions are the per-sync settings, mostly from the Application.
type SyncOptions struct {
	// App is namespace/name of the Application; it names the inventory
	// and goes into v1alpha1.AnnotationApp.
	App string
	// Namespace is destination.namespace, for namespaced objects without
	// one.
	Namespace string
	// Revision is recorded in the inventory.
	Revision string
	// Prune deletes objects of the inventory that the bundle no longer
	// has. Call Sync only with a complete, successful render.
	Prune bool
	// AllowEmpty lets a pruning sync of an empty bundle delete everything.
	AllowEmpty bool
	// CreateNamespace creates Namespace when it is missing
	// (syncOptions CreateNamespace=true).
	CreateNamespace bool
	// SkipHooks applies without running hooks; self-heal re-applies the
	// last bundle this way. PostSync hooks a previous sync left pending
	// stay pending.
	SkipHooks bool
	// HookTimeout overrides Options.HookTimeout when positive.
	HookTimeout time.Duration
	// Project, when set, is the app's project: every object must be one
	// it allows, or the sync fails with nothing applied and nothing
	// pruned. Nil checks nothing (ferry's own objects).
	Project *v1alpha1.Project
	// Decrypted holds the objects whose values were decrypted from SOPS
	// documents. Their inventory hash is an HMAC under DecryptedHashKey:
	// the inventory, a ConfigMap, never holds a plain hash of a secret's
	// value, which could be guessed offline.
	Decrypted        map[*unstructured.Unstructured]bool
	DecryptedHashKey []byte
}

// SyncOptionsFor returns the SyncOptions of an Application: its name,
// destination namespace, automated prune and allowEmpty, and
// CreateNamespace=true.
func SyncOptionsFor(app *v1alpha1.Application) SyncOptions {
	o := SyncOptions{App: app.Namespace + "/" + app.Name, Namespace: app.Spec.Destination.Namespace}
	if sp := app.Spec.SyncPolicy; sp != nil {
		if sp.Automated != nil {
			o.Prune, o.AllowEmpty = sp.Automated.Prune, sp.Automated.AllowEmpty
		}
		for _, opt := range sp.SyncOptions {
			if k, v, _ := strings.Cut(opt, "="); strings.TrimSpace(k) == "CreateNamespace" && strings.EqualFold(strings.TrimSpace(v), "true") {
				o.CreateNamespace = true
			}
		}
	}
	return o
}

func (o SyncOptions) validate() error {
	ns, name, ok := strings.Cut(o.App, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("%w: SyncOptions.App %q is not namespace/name", ErrInvalidOption, o.App)
	}
	if o.HookTimeout < 0 {
		return fmt.Errorf("%w: SyncOptions.HookTimeout is negative", ErrInvalidOption)
	}
	return nil
}

// Sync brings the cluster to objs for one app:
//
//  1. Objects whose hash and ferry-owned fields match the inventory are
//     left alone; when that is all of them (and nothing is to be pruned),
//     the sync writes nothing and reports Noop.
//  2. The inventory is written first with every object the sync may
//     create, so a crash leaves nothing untracked.
//  3. CreateNamespace, then PreSync hooks (a failure ends the sync with
//     nothing else applied and nothing pruned).
//  4. Main objects by wave and stage; Sync hooks.
//  5. Prune, when opts.Prune and every object applied.
//  6. The inventory, with what was applied even on failure.
//
// SyncFail hooks run when the sync fails. PostSync hooks do not run here:
// Result.PostSyncPending asks the caller to call RunPostSync once the
// Monitor reports the app Healthy, so no worker waits for health.
//
// The error is for failures to retry (API server unreachable, inventory
// unwritable, ctx ended); a sync that failed as an outcome returns a
// Result with Err set.
func (a *Applier) Sync(ctx context.Context, opts SyncOptions, objs []*unstructured.Unstructured) (*Result, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	ctx, span := tracer().Start(ctx, "apply.sync", trace.WithAttributes(
		attribute.String("ferry.app", opts.App), attribute.String("ferry.revision", opts.Revision), attribute.Int("ferry.objects", len(objs))))
	defer span.End()
	res, err := a.sync(ctx, opts, objs)
	if res != nil {
		a.log.Debug("sync applied", "app", opts.App, "revision", opts.Revision, "noop", res.Noop,
			"created", res.Count(ActionCreated), "configured", res.Count(ActionConfigured),
			"pruned", res.Count(ActionPruned), "failed", len(res.Failed()), "post_sync_pending", res.PostSyncPending)
	}
	switch {
	case err != nil:
		span.SetStatus(codes.Error, err.Error())
	case res.Err != nil:
		span.SetStatus(codes.Error, res.Err.Error())
	}
	if res != nil {
		span.SetAttributes(attribute.Bool("ferry.noop", res.Noop),
			attribute.Int("ferry.objects.created", res.Count(ActionCreated)),
			attribute.Int("ferry.objects.configured", res.Count(ActionConfigured)),
			attribute.Int("ferry.objects.unchanged", res.Count(ActionUnchanged)),
			attribute.Int("ferry.objects.pruned", res.Count(ActionPruned)),
			attribute.Int("ferry.objects.failed", res.Count(ActionFailed)))
	}
	return res, err
}

func (a *Applier) newRun(opts SyncOptions, p *plan) *run {
	r := &run{a: a, plan: p, res: &Result{}, app: opts.App, sync: true, hookTimeout: a.opts.HookTimeout}
	if opts.HookTimeout > 0 {
		r.hookTimeout = opts.HookTimeout
	}
	return r
}

func (a *Applier) sync(ctx context.Context, opts SyncOptions, objs []*unstructured.Unstructured) (*Result, error) {
	p, invalid := a.plan(planInput{app: opts.App, namespace: opts.Namespace, objects: objs, hooks: true, label: true, project: opts.Project, keyed: opts.Decrypted, hashKey: opts.DecryptedHashKey})
	r := a.newRun(opts, p)
	if len(invalid) > 0 {
		r.res.Objects = invalid
		r.res.Err = &ApplyError{Failed: invalid}
		return r.res, nil
	}
	if len(p.main) == 0 && opts.Prune && !opts.AllowEmpty {
		r.res.Err = ErrEmptyBundle
		return r.res, nil
	}
	if opts.SkipHooks {
		p.hooks = nil
	}

	oldInv, rv, err := a.readInventory(ctx, opts.App)
	if err != nil {
		return nil, err
	}
	r.inv = entryMap(oldInv.Entries)
	if err := r.observeAll(ctx); err != nil {
		return nil, err
	}
	createNS, err := a.needsNamespace(ctx, opts, p)
	if err != nil {
		return nil, err
	}
	pending := r.candidates()

	noop, err := r.noop(ctx, oldInv, createNS, opts, pending)
	if err != nil {
		return nil, err
	}
	if noop {
		for _, step := range p.steps {
			for _, o := range step {
				out, _, _ := r.settle(ctx, o)
				r.res.Objects = append(r.res.Objects, out.result)
			}
		}
		r.res.Noop = true
		r.res.PostSyncPending = oldInv.PostSync != "" && oldInv.PostSync == p.digest
		return r.res, nil
	}

	// Track everything the sync may create before creating it.
	inv := &Inventory{App: opts.App, State: InventoryApplying, Revision: opts.Revision, Digest: oldInv.Digest, PostSync: oldInv.PostSync}
	entries := entryMap(oldInv.Entries)
	for _, o := range p.main {
		if _, ok := entries[o.key()]; !ok {
			e := InventoryEntry{Group: o.gk.Group, Version: o.ref.Version, Kind: o.gk.Kind, Namespace: o.ref.Namespace, Name: o.ref.Name}
			if o.mapping != nil {
				e.Resource = o.mapping.Resource.Resource
			}
			entries[o.key()] = e
		}
	}
	inv.Entries = entryList(entries)
	// The first sync of an app skips this write, which is a fifth of a
	// cold sync's writes: what it creates carries the managed label and
	// the app annotation, every failure path below records the inventory,
	// and a crash leaves the job to JetStream, whose redelivery applies
	// the same objects and records them.
	if rv != "" {
		if err := a.writeInventory(ctx, inv, &rv); err != nil {
			return nil, err
		}
	}

	final := func(outcome error) (*Result, error) {
		// Record what was applied even when ctx ended.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		inv.Entries = r.finalEntries(oldInv, entries)
		inv.State = InventorySynced
		if outcome != nil || r.res.Err != nil {
			inv.State = InventoryFailed
			if !opts.SkipHooks {
				// The bundle whose PostSync hooks waited is replaced by
				// one that failed: they must not run now.
				inv.PostSync = ""
			}
		}
		if err := a.writeInventory(wctx, inv, &rv); err != nil {
			return nil, errors.Join(outcome, err)
		}
		return r.res, outcome
	}
	failWith := func(ferr error) (*Result, error) {
		r.res.Err = ferr
		if _, err := r.runHooks(ctx, HookSyncFail); err != nil {
			return final(err)
		}
		return final(nil)
	}

	if createNS {
		res, err := a.createNamespace(ctx, opts)
		if err != nil {
			r.res.Objects = append(r.res.Objects, res)
			return failWith(&ApplyError{Failed: []ObjectResult{res}})
		}
		r.res.Objects = append(r.res.Objects, res)
	}

	if len(p.hooksOf(HookPreSync)) > 0 {
		herr, err := r.runHooks(ctx, HookPreSync)
		if err != nil {
			return final(err)
		}
		if herr != nil {
			return failWith(herr)
		}
		// Hooks may have changed what the objects look like.
		for _, o := range p.main {
			o.obs = nil
		}
	}

	applied := map[string]InventoryEntry{}
	err = r.applyStepsInto(ctx, applied)
	for k, e := range applied {
		entries[k] = e
	}
	r.applied = applied
	if err != nil {
		var ae *ApplyError
		if errors.As(err, &ae) {
			return failWith(ae)
		}
		return final(err)
	}
	if herr, err := r.runHooks(ctx, HookSync); err != nil {
		return final(err)
	} else if herr != nil {
		return failWith(herr)
	}

	if opts.Prune {
		kept, err := r.prune(ctx, pending)
		var ae *ApplyError
		if err != nil && !errors.As(err, &ae) {
			// Not known what was deleted: keep every entry.
			return final(err)
		}
		r.pruned, r.kept = true, kept
		if ae != nil {
			return failWith(ae)
		}
	}

	inv.Digest = p.digest
	if !opts.SkipHooks {
		inv.PostSync = ""
		if len(p.hooksOf(HookPostSync)) > 0 {
			inv.PostSync = p.digest
		}
	} else if oldInv.Digest != p.digest {
		// Hooks did not run for this bundle: a later sync with hooks must
		// not take it for done.
		inv.Digest = oldInv.Digest
	}
	r.res.PostSyncPending = inv.PostSync != "" && inv.PostSync == p.digest
	_, hspan := tracer().Start(ctx, "apply.health")
	r.res.Health = healthFromApplies(r.res.Objects)
	hspan.SetAttributes(attribute.String("ferry.health", string(r.res.Health.Status)))
	hspan.End()
	return final(nil)
}

// noop reports whether the sync would write nothing: every object matches
// its inventory entry and its live state, the destination namespace
// exists, nothing is to be pruned, and hooks (if any) already ran for this
// very bundle.
func (r *run) noop(ctx context.Context, inv *Inventory, createNS bool, opts SyncOptions, pending []InventoryEntry) (bool, error) {
	if createNS || inv.State != InventorySynced {
		return false, nil
	}
	if opts.Prune {
		for _, e := range pending {
			if !e.Orphan {
				return false, nil
			}
		}
	}
	if len(r.plan.hooks) > 0 && inv.Digest != r.plan.digest {
		return false, nil
	}
	for _, o := range r.plan.main {
		if o.obs == nil {
			return false, nil
		}
		out, ok, err := r.settle(ctx, o)
		if err != nil {
			return false, err
		}
		if !ok || out.result.Action == ActionFailed || out.entry == nil {
			return false, nil
		}
		if old, ok := r.inv[o.key()]; !ok || old != *out.entry {
			return false, nil
		}
	}
	return true, nil
}

// finalEntries is the inventory after the sync: what was applied, what
// was kept from before, less what was pruned or turned out not to be this
// app's.
func (r *run) finalEntries(old *Inventory, pre map[string]InventoryEntry) []InventoryEntry {
	oldEntries := entryMap(old.Entries)
	out := map[string]InventoryEntry{}
	for k, e := range pre {
		if ne, ok := r.applied[k]; ok {
			out[k] = ne
			continue
		}
		if oe, ok := oldEntries[k]; ok {
			out[k] = oe
			continue
		}
		// Added before applying but not applied (failed, or a later
		// step never ran): keep it only if it exists as this app's.
		for _, o := range r.plan.main {
			if o.key() == k && o.obs != nil && o.obs.exists && o.obs.owner == r.app {
				out[k] = e
			}
		}
	}
	if r.pruned {
		desired := map[string]bool{}
		for _, o := range r.plan.main {
			desired[o.key()] = true
		}
		keptKeys := map[string]InventoryEntry{}
		for _, e := range r.kept {
			keptKeys[e.key()] = e
		}
		for k := range out {
			if desired[k] {
				continue
			}
			if e, ok := keptKeys[k]; ok {
				out[k] = e
			} else {
				delete(out, k)
			}
		}
	}
	return entryList(out)
}

func entryList(m map[string]InventoryEntry) []InventoryEntry {
	out := make([]InventoryEntry, 0, len(m))
	for _, e := range m {
		out = append(out, e)
	}
	return out
}

var namespaces = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}

// needsNamespace reports whether CreateNamespace has to create the
// destination namespace.
func (a *Applier) needsNamespace(ctx context.Context, opts SyncOptions, p *plan) (bool, error) {
	if !opts.CreateNamespace || opts.Namespace == "" {
		return false, nil
	}
	for _, o := range p.main {
		if o.gk.Group == "" && o.gk.Kind == "Namespace" && o.ref.Name == opts.Namespace {
			return false, nil // the bundle declares it
		}
	}
	_, err := a.dyn.Resource(namespaces).Get(ctx, opts.Namespace, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("reading namespace %s: %w", opts.Namespace, err)
	}
	return false, nil
}

// createNamespace creates the destination namespace. It is not in the
// inventory: like Argo CD, ferry never prunes a namespace it created this
// way.
func (a *Applier) createNamespace(ctx context.Context, opts SyncOptions) (ObjectResult, error) {
	ref := ObjectRef{Version: "v1", Kind: "Namespace", Name: opts.Namespace}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": opts.Namespace},
	}}
	if _, err := a.ssa(ctx, a.dyn.Resource(namespaces), u, false); err != nil {
		err = fmt.Errorf("CreateNamespace failed: %w", apiError(err))
		return ObjectResult{Ref: ref, Action: ActionFailed, Message: err.Error(), cause: err}, err
	}
	return ObjectResult{Ref: ref, Action: ActionCreated, Message: "CreateNamespace=true"}, nil
}

// RunPostSync runs the PostSync hooks of the bundle the last Sync applied,
// once the app is Healthy; the Monitor says when (AppStatus.PostSyncPending
// with Health Healthy). objs and opts must be those of that Sync. It checks
// health itself and returns ErrNotHealthy when the app is not Healthy, and
// ErrNoPostSyncPending when the hooks already ran or a newer sync replaced
// the bundle; both mean there is nothing to do now. A failed hook is an
// outcome in Result.Err, after the SyncFail hooks ran.
func (a *Applier) RunPostSync(ctx context.Context, opts SyncOptions, objs []*unstructured.Unstructured) (*Result, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	ctx, span := tracer().Start(ctx, "apply.postsync", trace.WithAttributes(attribute.String("ferry.app", opts.App)))
	defer span.End()
	p, invalid := a.plan(planInput{app: opts.App, namespace: opts.Namespace, objects: objs, hooks: true, label: true, project: opts.Project, keyed: opts.Decrypted, hashKey: opts.DecryptedHashKey})
	if len(invalid) > 0 {
		return nil, fmt.Errorf("%w: the bundle has invalid objects", ErrNoPostSyncPending)
	}
	inv, rv, err := a.readInventory(ctx, opts.App)
	if err != nil {
		return nil, err
	}
	if inv.PostSync == "" || inv.PostSync != p.digest {
		return nil, ErrNoPostSyncPending
	}
	h, err := a.Health(ctx, opts.App)
	if err != nil {
		return nil, err
	}
	if h.Status != HealthHealthy {
		return nil, fmt.Errorf("%w: %s %s", ErrNotHealthy, h.Status, h.Message)
	}
	r := a.newRun(opts, p)
	herr, err := r.runHooks(ctx, HookPostSync)
	if err != nil {
		return nil, err
	}
	if herr != nil {
		r.res.Err = herr
		if _, err := r.runHooks(ctx, HookSyncFail); err != nil {
			return nil, err
		}
		span.SetStatus(codes.Error, herr.Error())
	}
	inv.PostSync = ""
	if herr != nil {
		inv.State = InventoryFailed
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := a.writeInventory(wctx, inv, &rv); err != nil {
		return nil, err
	}
	return r.res, nil
}

// healthFromApplies is the app's health from the objects this sync applied,
// or the zero AppHealth when some object was not applied (unchanged ones
// came back without a body to judge).
func healthFromApplies(objs []ObjectResult) AppHealth {
	var hs []ResourceHealth
	for _, o := range objs {
		switch {
		case o.Action == ActionPruned:
		case o.health == nil:
			return AppHealth{}
		default:
			hs = append(hs, *o.health)
		}
	}
	if len(hs) == 0 {
		return AppHealth{}
	}
	return appHealth(hs)
}
