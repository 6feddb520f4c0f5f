package apply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

const tracerName = "github.com/ferrycd/ferry/apply"

func tracer() trace.Tracer { return otel.Tracer(tracerName) }

// FieldManager is the server-side apply field manager of every ferry write.
const FieldManager = "ferry"

// ErrInvalidOption is wrapped by the errors of invalid Options.
var ErrInvalidOption = errors.New("invalid option")

// Options tunes an Applier.
type Options struct {
	// Parallelism bounds the objects applied, observed or pruned at once
	// within a stage.
	Parallelism int
	// InventoryNamespace is ferry's own namespace, where each app's
	// inventory ConfigMap lives.
	InventoryNamespace string
	// HookTimeout bounds the wait for one hook Job or Pod to finish, and
	// for a hook to be deleted before it is created again. SyncOptions can
	// override it per sync.
	HookTimeout time.Duration
	// CRDTimeout bounds the wait for an applied CRD to be Established and
	// for its kind to be served.
	CRDTimeout time.Duration
	// PollInterval is how often hooks and CRDs are checked while waiting.
	PollInterval time.Duration
}

// DefaultOptions returns the settings of `ferry serve`.
func DefaultOptions() Options {
	return Options{
		Parallelism:        16,
		InventoryNamespace: "ferry",
		HookTimeout:        5 * time.Minute,
		CRDTimeout:         time.Minute,
		PollInterval:       500 * time.Millisecond,
	}
}

// withDefaults fills zero fields from DefaultOptions and rejects negative
// ones.
func (o Options) withDefaults() (Options, error) {
	d := DefaultOptions()
	switch {
	case o.Parallelism < 0:
		return o, fmt.Errorf("%w: Parallelism %d is negative", ErrInvalidOption, o.Parallelism)
	case o.HookTimeout < 0, o.CRDTimeout < 0, o.PollInterval < 0:
		return o, fmt.Errorf("%w: timeouts and intervals must not be negative", ErrInvalidOption)
	}
	if o.Parallelism == 0 {
		o.Parallelism = d.Parallelism
	}
	if o.InventoryNamespace == "" {
		o.InventoryNamespace = d.InventoryNamespace
	}
	if o.HookTimeout == 0 {
		o.HookTimeout = d.HookTimeout
	}
	if o.CRDTimeout == 0 {
		o.CRDTimeout = d.CRDTimeout
	}
	if o.PollInterval == 0 {
		o.PollInterval = d.PollInterval
	}
	return o, nil
}

// Applier server-side-applies objects to one cluster. It is safe for
// concurrent use by syncs of different apps; two syncs of one app must not
// run at once (the worker serialises them).
type Applier struct {
	dyn    dynamic.Interface
	mapper meta.ResettableRESTMapper
	opts   Options
	log    *slog.Logger
}

// New returns an Applier for the cluster of cfg. Zero Options fields take
// their DefaultOptions value. The REST mapping is discovered lazily and
// cached; it is refreshed after a sync installs CRDs and when an unknown kind
// shows up.
func New(cfg *rest.Config, opts Options, log *slog.Logger) (*Applier, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	return &Applier{dyn: dyn, mapper: mapper, opts: opts, log: log}, nil
}

// Dynamic returns the dynamic client the Applier writes with.
func (a *Applier) Dynamic() dynamic.Interface { return a.dyn }

// Target says which app the objects belong to and where namespaced objects
// without a namespace go.
type Target struct {
	// App is namespace/name of the owning Application.
	App string
	// Namespace is the destination namespace.
	Namespace string
}

// Action is what happened to one object.
type Action string

// Actions reported per object.
const (
	// ActionCreated: the object did not exist and ferry created it.
	ActionCreated Action = "created"
	// ActionConfigured: the object existed and ferry's apply changed it.
	ActionConfigured Action = "configured"
	// ActionUnchanged: the object already matched; often no request was
	// written at all.
	ActionUnchanged Action = "unchanged"
	// ActionFailed: the API server rejected the object, or a hook failed.
	ActionFailed Action = "failed"
	// ActionPruned: the object left Git and ferry deleted it.
	ActionPruned Action = "pruned"
	// ActionPruneSkipped: the object left Git but ferry kept it, because
	// pruning is disabled on it, another app owns or declares it, or it is
	// a Namespace that holds another app's objects.
	ActionPruneSkipped Action = "prune-skipped"
)

// ObjectResult is the outcome of one object.
type ObjectResult struct {
	Ref    ObjectRef
	Action Action
	// Message says why, for failures the API server's message.
	Message string
	// Hook is the hook phase for hook objects, empty otherwise.
	Hook HookPhase

	cause  error           // for IsTransient
	health *ResourceHealth // from the apply's response, when there was one
}

// ObjectRef identifies an object.
type ObjectRef struct {
	Group, Version, Kind, Namespace, Name string
}

// String formats the reference as Kind.group/namespace/name.
func (r ObjectRef) String() string {
	gk := r.Kind
	if r.Group != "" {
		gk += "." + r.Group
	}
	if r.Namespace == "" {
		return gk + "/" + r.Name
	}
	return gk + "/" + r.Namespace + "/" + r.Name
}

// Result is the outcome of a Sync, Apply or RunPostSync.
type Result struct {
	// Objects are the main objects in the order they were applied, then
	// the pruned ones.
	Objects []ObjectResult
	// Hooks are the hooks that ran in this call, in the order they ran.
	Hooks []ObjectResult
	// PostSyncPending says the bundle has PostSync hooks that have not run
	// yet: the caller runs them with RunPostSync once the app is Healthy
	// (Monitor reports that).
	PostSyncPending bool
	// Noop says the sync found everything in place and made no write
	// request.
	Noop bool
	// Health is the app's health judged from the objects the API server
	// returned to this sync's applies, when every object was applied; the
	// status records it at once, so the Monitor need not write it again.
	Health AppHealth
	// Err is the failure of the sync as an outcome to record: objects the
	// API server rejected (*ApplyError), a failed hook (*HookError), or a
	// refused empty bundle (ErrEmptyBundle). Nil when the sync succeeded.
	Err error
}

// Failed returns the failed objects and hooks.
func (r *Result) Failed() []ObjectResult {
	var out []ObjectResult
	for _, o := range append(append([]ObjectResult(nil), r.Objects...), r.Hooks...) {
		if o.Action == ActionFailed {
			out = append(out, o)
		}
	}
	return out
}

// Count returns how many objects (not hooks) ended with action.
func (r *Result) Count(action Action) int {
	n := 0
	for _, o := range r.Objects {
		if o.Action == action {
			n++
		}
	}
	return n
}

var (
	_ error = (*ApplyError)(nil)
	_ error = (*HookError)(nil)
)

// ApplyError reports the objects of a stage that failed; later stages did
// not run. Prune failures are reported the same way.
type ApplyError struct {
	Failed []ObjectResult
}

// Unwrap returns the errors the failed objects failed with, so that
// errors.Is and errors.As see them.
func (e *ApplyError) Unwrap() []error { return causes(e.Failed) }

// causes returns the errors of failed objects, in order.
func causes(failed []ObjectResult) []error {
	out := make([]error, 0, len(failed))
	for _, f := range failed {
		if f.cause != nil {
			out = append(out, f.cause)
		}
	}
	return out
}

func (e *ApplyError) Error() string {
	msgs := make([]string, 0, len(e.Failed))
	for _, f := range e.Failed {
		msgs = append(msgs, fmt.Sprintf("%s: %s", f.Ref, f.Message))
	}
	return strings.Join(msgs, "; ")
}

// Decode turns canonical JSON documents into unstructured objects.
func Decode(docs [][]byte) ([]*unstructured.Unstructured, error) {
	out := make([]*unstructured.Unstructured, len(docs))
	for i, d := range docs {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(d); err != nil {
			return nil, fmt.Errorf("object %d: %w", i, err)
		}
		out[i] = u
	}
	return out, nil
}

// Apply server-side-applies objects for target, stage by stage, forcing
// ferry's ownership of every field Git declares. It keeps no inventory,
// runs no hooks (hook annotations are ignored) and prunes nothing: it is
// for ferry's own objects, such as its CRD. Apps go through Sync. When a
// stage has failures they are all reported in an *ApplyError and later
// stages are skipped.
func (a *Applier) Apply(ctx context.Context, target Target, objects []*unstructured.Unstructured) (*Result, error) {
	ctx, span := tracer().Start(ctx, "apply.objects", trace.WithAttributes(
		attribute.String("ferry.app", target.App), attribute.Int("ferry.objects", len(objects))))
	defer span.End()

	p, invalid := a.plan(planInput{app: target.App, namespace: target.Namespace, objects: objects})
	res := &Result{}
	if len(invalid) > 0 {
		res.Objects = invalid
		err := &ApplyError{Failed: invalid}
		span.SetStatus(codes.Error, err.Error())
		return res, err
	}
	r := &run{a: a, plan: p, res: res, app: target.App}
	if err := r.applySteps(ctx); err != nil {
		span.SetStatus(codes.Error, err.Error())
		return res, err
	}
	span.SetAttributes(attribute.Int("ferry.objects.created", res.Count(ActionCreated)),
		attribute.Int("ferry.objects.configured", res.Count(ActionConfigured)),
		attribute.Int("ferry.objects.unchanged", res.Count(ActionUnchanged)))
	return res, nil
}
