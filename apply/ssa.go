package apply

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// run is the state of one Sync, Apply or RunPostSync.
type run struct {
	a    *Applier
	plan *plan
	res  *Result
	app  string
	// sync is true for Sync: objects that match the inventory are not
	// written, and objects another app owns are left alone.
	sync bool
	// inv is the inventory as the sync found it, by object key.
	inv         map[string]InventoryEntry
	hookTimeout time.Duration

	// What the sync did, for the final inventory.
	applied map[string]InventoryEntry
	pruned  bool
	kept    []InventoryEntry

	ownersMu sync.Mutex
	owners   map[string]map[string]InventoryEntry // app -> its inventory, for shared checks
}

// observation is an object's live state before the sync wrote it.
type observation struct {
	exists   bool
	uid      types.UID
	rv       string
	owner    string // v1alpha1.AnnotationApp
	fields   string // hash of ferry's managed fields
	deleting bool
}

// decision is what applying an object would do.
type decision int

const (
	decideWrite decision = iota
	decideUnchanged
	decideShared       // another app owns it and declares it too; a Namespace
	decideOwnedByOther // another app owns it; refused
	decideExists       // if-not-present and present
)

func (a *Applier) resource(o *object) dynamic.ResourceInterface {
	if o.mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		return a.dyn.Resource(o.mapping.Resource).Namespace(o.ref.Namespace)
	}
	return a.dyn.Resource(o.mapping.Resource)
}

// resolve finds o's REST mapping if the plan could not.
func (a *Applier) resolve(o *object) error {
	if o.mapping != nil {
		return nil
	}
	m, err := a.mapper.RESTMapping(o.gk, o.ref.Version)
	if err != nil {
		return fmt.Errorf("no API for %s: %w", o.u.GroupVersionKind(), err)
	}
	if namespaced := m.Scope.Name() == meta.RESTScopeNameNamespace; namespaced != o.namespaced {
		return fmt.Errorf("the served %s is scoped differently from its CRD in the bundle", o.u.GroupVersionKind())
	}
	o.mapping = m
	return nil
}

// observe reads o's live state.
func (a *Applier) observe(ctx context.Context, o *object) error {
	if o.ref.Name == "" || o.u.GetName() == "" {
		o.obs = &observation{}
		return nil
	}
	// A quorum read: the decision (created, unchanged, another app's) must
	// see the sync's own last write, which the watch cache may not have yet.
	live, err := a.resource(o).Get(ctx, o.ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		o.obs = &observation{}
		return nil
	}
	if err != nil {
		return err
	}
	o.obs = observe(live)
	return nil
}

func observe(live *unstructured.Unstructured) *observation {
	return &observation{
		exists: true, uid: live.GetUID(), rv: live.GetResourceVersion(),
		owner: live.GetAnnotations()[v1alpha1.AnnotationApp], fields: ferryFields(live),
		deleting: live.GetDeletionTimestamp() != nil,
	}
}

// ferryFields returns a hash of the fields ferry's apply owns on u, empty
// when it owns none.
func ferryFields(u *unstructured.Unstructured) string {
	for _, mf := range u.GetManagedFields() {
		if mf.Manager == FieldManager && mf.Operation == metav1.ManagedFieldsOperationApply && mf.Subresource == "" && mf.FieldsV1 != nil {
			return shortHash(mf.FieldsV1.Raw)
		}
	}
	return ""
}

// decide says what applying o would do. o must be observed.
func (r *run) decide(ctx context.Context, o *object) (decision, string, error) {
	obs := o.obs
	if r.sync && obs.exists && obs.owner != "" && obs.owner != r.app {
		declares, err := r.declaredBy(ctx, obs.owner, o.key())
		if err != nil {
			return 0, "", err
		}
		if declares {
			if o.stage == stageNamespacesAndCRDs && o.gk.Kind == "Namespace" {
				return decideShared, fmt.Sprintf("shared: owned by app %s, which applies it", obs.owner), nil
			}
			return decideOwnedByOther, fmt.Sprintf("owned by app %s (annotation %s); not applied", obs.owner, v1alpha1.AnnotationApp), nil
		}
		// The owner no longer declares it: adopt it.
	}
	if o.ifNotPresent && obs.exists {
		return decideExists, fmt.Sprintf("exists; %s: if-not-present", v1alpha1.AnnotationSSA), nil
	}
	if r.sync {
		e, ok := r.inv[o.key()]
		if ok && e.SharedWith == "" && !e.Orphan && e.Hash == o.hash && e.Fields != "" &&
			obs.exists && !obs.deleting && obs.owner == r.app && obs.fields == e.Fields {
			return decideUnchanged, "", nil
		}
	}
	return decideWrite, "", nil
}

// declaredBy reports whether app's inventory lists the object key.
func (r *run) declaredBy(ctx context.Context, app, key string) (bool, error) {
	r.ownersMu.Lock()
	defer r.ownersMu.Unlock()
	if r.owners == nil {
		r.owners = map[string]map[string]InventoryEntry{}
	}
	entries, ok := r.owners[app]
	if !ok {
		inv, _, err := r.a.readInventory(ctx, app)
		if errors.Is(err, errCorruptInventory) {
			// What the owner holds cannot be told: never take it over.
			return true, nil
		}
		if err != nil {
			return false, err
		}
		entries = entryMap(inv.Entries)
		r.owners[app] = entries
	}
	e, ok := entries[key]
	return ok && e.SharedWith == "" && !e.Orphan, nil
}

// outcome is what applying one main object did, with its new inventory
// entry (nil when the object is not this app's to track).
type outcome struct {
	result ObjectResult
	entry  *InventoryEntry
}

func (r *run) entryFor(o *object, fields string) *InventoryEntry {
	if o.ifNotPresent {
		fields = "" // others own it after creation: no drift to track
	}
	return &InventoryEntry{
		Group: o.gk.Group, Version: o.ref.Version, Kind: o.gk.Kind, Resource: o.mapping.Resource.Resource,
		Namespace: o.ref.Namespace, Name: o.ref.Name, Hash: o.hash, Fields: fields, IfNotPresent: o.ifNotPresent,
	}
}

// settle returns o's outcome when o needs no write: it is unchanged, a
// Namespace another app owns and applies, present and if-not-present, or
// refused because another app owns it. o must be observed.
func (r *run) settle(ctx context.Context, o *object) (outcome, bool, error) {
	d, msg, err := r.decide(ctx, o)
	if err != nil {
		return outcome{}, false, err
	}
	switch d {
	case decideShared:
		e := r.entryFor(o, "")
		e.Hash, e.SharedWith = "", o.obs.owner
		return outcome{result: ObjectResult{Ref: o.ref, Action: ActionUnchanged, Message: msg}, entry: e}, true, nil
	case decideOwnedByOther:
		err := errors.New(msg)
		return outcome{result: ObjectResult{Ref: o.ref, Action: ActionFailed, Message: msg, cause: err}}, true, nil
	case decideExists:
		return outcome{result: ObjectResult{Ref: o.ref, Action: ActionUnchanged, Message: msg}, entry: r.entryFor(o, "")}, true, nil
	case decideUnchanged:
		e := r.inv[o.key()]
		e.Version, e.Resource = o.ref.Version, o.mapping.Resource.Resource
		return outcome{result: ObjectResult{Ref: o.ref, Action: ActionUnchanged}, entry: &e}, true, nil
	}
	return outcome{}, false, nil
}

// applyObject applies one main object.
func (r *run) applyObject(ctx context.Context, o *object) outcome {
	fail := func(err error) outcome {
		return outcome{result: ObjectResult{Ref: o.ref, Action: ActionFailed, Message: err.Error(), cause: err}}
	}
	if err := r.a.resolve(o); err != nil {
		return fail(err)
	}
	if o.obs == nil {
		if err := r.a.observe(ctx, o); err != nil {
			return fail(fmt.Errorf("reading live object failed: %w", apiError(err)))
		}
	}
	if out, ok, err := r.settle(ctx, o); err != nil {
		return fail(err)
	} else if ok {
		return out
	}
	out, err := r.a.ssa(ctx, r.a.resource(o), o.u, false)
	if err != nil {
		return fail(fmt.Errorf("apply failed: %w", apiError(err)))
	}
	action := ActionConfigured
	switch {
	case !o.obs.exists:
		action = ActionCreated
	case out.GetResourceVersion() == o.obs.rv:
		action = ActionUnchanged
	}
	h := objectHealth(o.ref, out)
	return outcome{result: ObjectResult{Ref: o.ref, Action: action, health: &h}, entry: r.entryFor(o, ferryFields(out))}
}

// ssa server-side-applies u, forcing ferry's ownership.
func (a *Applier) ssa(ctx context.Context, ri dynamic.ResourceInterface, u *unstructured.Unstructured, dryRun bool) (*unstructured.Unstructured, error) {
	data, err := json.Marshal(u.Object)
	if err != nil {
		return nil, err
	}
	force := true
	po := metav1.PatchOptions{FieldManager: FieldManager, Force: &force}
	if dryRun {
		po.DryRun = []string{metav1.DryRunAll}
	}
	return ri.Patch(ctx, u.GetName(), types.ApplyPatchType, data, po)
}

// observeAll reads the live state of every main object whose kind is
// served, in parallel.
func (r *run) observeAll(ctx context.Context) error {
	observe := func(objs []*object) error {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(r.a.opts.Parallelism)
		for _, o := range objs {
			g.Go(func() error {
				if err := r.a.observe(gctx, o); err != nil {
					return fmt.Errorf("%s: reading live object failed: %w", o.ref, err)
				}
				return nil
			})
		}
		return g.Wait()
	}
	// Namespaces first: objects in a namespace that does not exist yet do
	// not exist either, so a cold sync of an app with its own Namespace
	// reads one object instead of all of them.
	var namespaces, rest []*object
	for _, o := range r.plan.main {
		switch {
		case o.mapping == nil:
		case o.gk.Group == "" && o.gk.Kind == "Namespace":
			namespaces = append(namespaces, o)
		default:
			rest = append(rest, o)
		}
	}
	if err := observe(namespaces); err != nil {
		return err
	}
	missing := map[string]bool{}
	for _, o := range namespaces {
		if o.obs != nil && !o.obs.exists {
			missing[o.ref.Name] = true
		}
	}
	rest = slices.DeleteFunc(rest, func(o *object) bool {
		if o.namespaced && missing[o.ref.Namespace] {
			o.obs = &observation{}
			return true
		}
		return false
	})
	return observe(rest)
}

// applySteps applies the main objects step by step. It records every
// outcome in r.res and the new inventory entries in entries (keyed by
// object key). A step with failures ends the run with an *ApplyError.
func (r *run) applySteps(ctx context.Context) error {
	return r.applyStepsInto(ctx, nil)
}

func (r *run) applyStepsInto(ctx context.Context, entries map[string]InventoryEntry) error {
	for i, step := range r.plan.steps {
		outs, err := r.applyStep(ctx, i+1, step)
		for j, out := range outs {
			r.res.Objects = append(r.res.Objects, out.result)
			if entries != nil && out.entry != nil {
				entries[step[j].key()] = *out.entry
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *run) applyStep(ctx context.Context, n int, objs []*object) ([]outcome, error) {
	ctx, span := tracer().Start(ctx, fmt.Sprintf("apply.stage %d", n), trace.WithAttributes(
		attribute.Int("ferry.objects", len(objs)), attribute.Int("ferry.wave", objs[0].wave), attribute.Int("ferry.stage", objs[0].stage+1)))
	defer span.End()
	outs := make([]outcome, len(objs))
	var g errgroup.Group
	g.SetLimit(r.a.opts.Parallelism)
	for i, o := range objs {
		g.Go(func() error {
			outs[i] = r.applyObject(ctx, o)
			return nil
		})
	}
	_ = g.Wait()
	if err := ctx.Err(); err != nil {
		return outs, err
	}

	// CRDs this step wrote must be Established before their kinds are
	// applied.
	var crds []int
	for i, o := range objs {
		if o.gk.Kind == "CustomResourceDefinition" && o.gk.Group == "apiextensions.k8s.io" &&
			(outs[i].result.Action == ActionCreated || outs[i].result.Action == ActionConfigured) {
			crds = append(crds, i)
		}
	}
	if len(crds) > 0 {
		var g errgroup.Group
		g.SetLimit(r.a.opts.Parallelism)
		for _, i := range crds {
			g.Go(func() error {
				if err := r.a.waitEstablished(ctx, objs[i].ref.Name, r.a.opts.CRDTimeout); err != nil {
					outs[i].result = ObjectResult{Ref: objs[i].ref, Action: ActionFailed, Message: err.Error(), cause: err}
				}
				return nil
			})
		}
		_ = g.Wait()
		r.a.mapper.Reset()
		r.resolveBundleKinds(ctx)
	}

	var failed []ObjectResult
	for _, out := range outs {
		if out.result.Action == ActionFailed {
			failed = append(failed, out.result)
		}
	}
	if len(failed) > 0 {
		err := &ApplyError{Failed: failed}
		span.SetStatus(codes.Error, err.Error())
		return outs, err
	}
	return outs, nil
}

// resolveBundleKinds waits, up to CRDTimeout, until the kinds of the CRDs
// in the bundle are served, so that later steps can apply their objects.
// Kinds that stay unserved fail when their objects are applied.
func (r *run) resolveBundleKinds(ctx context.Context) {
	deadline := time.Now().Add(r.a.opts.CRDTimeout)
	for {
		pending := false
		for _, o := range append(append([]*object(nil), r.plan.main...), r.plan.hooks...) {
			if o.mapping != nil {
				continue
			}
			if _, inBundle := r.plan.crdScope[o.gk]; !inBundle {
				continue
			}
			if err := r.a.resolve(o); err != nil {
				pending = true
			}
		}
		if !pending || time.Now().After(deadline) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.a.opts.PollInterval):
		}
		r.a.mapper.Reset()
	}
}

// apiMessage returns the API server's message of err, or err itself.
func apiMessage(err error) string {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return st.Status().Message
	}
	return err.Error()
}

// apiError keeps err for IsTransient but prints only the API server's
// message.
func apiError(err error) error { return &messageError{msg: apiMessage(err), err: err} }

type messageError struct {
	msg string
	err error
}

func (e *messageError) Error() string { return e.msg }
func (e *messageError) Unwrap() error { return e.err }

// IsTransient reports whether a sync that failed with err is likely to
// pass on retry.
//
// An outcome (an *ApplyError, a *HookError, ErrEmptyBundle) records objects
// that failed: it is transient only when the API server or the network
// made one of them fail (unreachable, overloaded, timed out, a write
// conflict); an object the API server rejected, or a hook that failed, is
// terminal until Git changes. Any other error is transient, as it is for
// render.IsTransient: retrying it costs a backoff, giving up on it could
// lose a revision.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var ae *ApplyError
	var he *HookError
	if errors.As(err, &ae) || errors.As(err, &he) || errors.Is(err, ErrEmptyBundle) {
		return anyInTree(err, environmental)
	}
	return true
}

// environmental reports whether err is a failure of the API server or the
// network rather than of the object sent.
func environmental(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) ||
		apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) || apierrors.IsConflict(err)
}

// anyInTree reports whether pred holds for err or for any error it wraps,
// through both forms of Unwrap.
func anyInTree(err error, pred func(error) bool) bool {
	if err == nil {
		return false
	}
	if pred(err) {
		return true
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return anyInTree(u.Unwrap(), pred)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if anyInTree(e, pred) {
				return true
			}
		}
	}
	return false
}
