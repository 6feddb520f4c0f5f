package apply

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

const tracerName = "github.com/ferrycd/ferry/apply"

func tracer() trace.Tracer { return otel.Tracer(tracerName) }

// Annotations ferry reads and writes on managed objects.
const (
	// AnnotationApp names the app that owns an object, as namespace/name.
	AnnotationApp = "ferry.dev/app"
)

// FieldManager is the server-side apply field manager of every ferry write.
const FieldManager = "ferry"

// Options tunes an Applier.
type Options struct {
	// Parallelism bounds the objects applied at once within a stage.
	Parallelism int
}

// DefaultOptions returns the settings of `ferry serve`.
func DefaultOptions() Options { return Options{Parallelism: 16} }

// Applier server-side-applies objects to one cluster.
type Applier struct {
	dyn    dynamic.Interface
	mapper meta.ResettableRESTMapper
	opts   Options
	log    *slog.Logger
}

// New returns an Applier for the cluster of cfg. The REST mapping is
// discovered lazily and cached; it is refreshed when an unknown kind shows
// up, such as the kind of a CRD the same sync installs.
func New(cfg *rest.Config, opts Options, log *slog.Logger) (*Applier, error) {
	if opts.Parallelism < 1 {
		opts.Parallelism = DefaultOptions().Parallelism
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
	ActionCreated    Action = "created"
	ActionConfigured Action = "configured"
	ActionUnchanged  Action = "unchanged"
	ActionFailed     Action = "failed"
	ActionPruned     Action = "pruned"
)

// ObjectResult is the outcome of one object.
type ObjectResult struct {
	Ref     ObjectRef
	Action  Action
	Message string
}

// ObjectRef identifies an object.
type ObjectRef struct {
	Group, Version, Kind, Namespace, Name string
}

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

// Result is the outcome of an Apply.
type Result struct {
	Objects []ObjectResult
}

// Failed returns the failed objects.
func (r *Result) Failed() []ObjectResult {
	var out []ObjectResult
	for _, o := range r.Objects {
		if o.Action == ActionFailed {
			out = append(out, o)
		}
	}
	return out
}

// Count returns how many objects ended with action.
func (r *Result) Count(action Action) int {
	n := 0
	for _, o := range r.Objects {
		if o.Action == action {
			n++
		}
	}
	return n
}

// ApplyError reports the objects of a stage that failed; later stages did
// not run.
type ApplyError struct {
	Failed []ObjectResult
}

func (e *ApplyError) Error() string {
	msgs := make([]string, 0, len(e.Failed))
	for _, f := range e.Failed {
		msgs = append(msgs, fmt.Sprintf("%s apply failed: %s", f.Ref, f.Message))
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
// ferry's ownership of every field Git declares. When a stage has failures
// they are all reported in an *ApplyError and later stages are skipped.
func (a *Applier) Apply(ctx context.Context, target Target, objects []*unstructured.Unstructured) (*Result, error) {
	ctx, span := tracer().Start(ctx, "apply.objects", trace.WithAttributes(
		attribute.String("ferry.app", target.App), attribute.Int("ferry.objects", len(objects))))
	defer span.End()

	res := &Result{}
	for i, stage := range stages(objects) {
		if len(stage) == 0 {
			continue
		}
		results, err := a.applyStage(ctx, i+1, target, stage)
		res.Objects = append(res.Objects, results...)
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
			return res, err
		}
	}
	span.SetAttributes(attribute.Int("ferry.objects.created", res.Count(ActionCreated)),
		attribute.Int("ferry.objects.configured", res.Count(ActionConfigured)),
		attribute.Int("ferry.objects.unchanged", res.Count(ActionUnchanged)))
	return res, nil
}

func (a *Applier) applyStage(ctx context.Context, n int, target Target, objs []*unstructured.Unstructured) ([]ObjectResult, error) {
	ctx, span := tracer().Start(ctx, fmt.Sprintf("apply.stage %d", n), trace.WithAttributes(attribute.Int("ferry.objects", len(objs))))
	defer span.End()
	results := make([]ObjectResult, len(objs))
	var g errgroup.Group
	g.SetLimit(a.opts.Parallelism)
	for i, obj := range objs {
		g.Go(func() error {
			results[i] = a.applyOne(ctx, target, obj)
			return nil
		})
	}
	_ = g.Wait()
	var failed []ObjectResult
	for _, r := range results {
		if r.Action == ActionFailed {
			failed = append(failed, r)
		}
	}
	if len(failed) > 0 {
		err := &ApplyError{Failed: failed}
		span.SetStatus(codes.Error, err.Error())
		return results, err
	}
	return results, nil
}

func (a *Applier) applyOne(ctx context.Context, target Target, in *unstructured.Unstructured) ObjectResult {
	obj := in.DeepCopy()
	gvk := obj.GroupVersionKind()
	ref := ObjectRef{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind, Namespace: obj.GetNamespace(), Name: obj.GetName()}
	fail := func(err error) ObjectResult {
		return ObjectResult{Ref: ref, Action: ActionFailed, Message: err.Error()}
	}
	mapping, err := a.mapping(gvk)
	if err != nil {
		return fail(err)
	}
	var ri dynamic.ResourceInterface
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		if obj.GetNamespace() == "" {
			obj.SetNamespace(target.Namespace)
			ref.Namespace = target.Namespace
		}
		if obj.GetNamespace() == "" {
			return fail(errors.New("namespaced object has no namespace and the app has no destination namespace"))
		}
		ri = a.dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace())
	} else {
		obj.SetNamespace("")
		ref.Namespace = ""
		ri = a.dyn.Resource(mapping.Resource)
	}
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationApp] = target.App
	obj.SetAnnotations(ann)

	data, err := json.Marshal(obj.Object)
	if err != nil {
		return fail(err)
	}
	force := true
	_, err = ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: FieldManager, Force: &force})
	if err != nil {
		return fail(apiMessage(err))
	}
	// Server-side apply does not say whether it created or changed the
	// object, so every successful apply counts as configured here.
	return ObjectResult{Ref: ref, Action: ActionConfigured}
}

func (a *Applier) mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		// The kind may come from a CRD installed since the cache was filled.
		a.mapper.Reset()
		m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, fmt.Errorf("no API for %s: %w", gvk, err)
	}
	return m, nil
}

func apiMessage(err error) error {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return errors.New(st.Status().Message)
	}
	return err
}

// stages splits objects into apply stages: Namespaces and CRDs; other
// cluster-scoped kinds known to be so; everything else. Order within a stage
// follows Helm's kind order, then the input order.
func stages(objs []*unstructured.Unstructured) [3][]*unstructured.Unstructured {
	var s [3][]*unstructured.Unstructured
	for _, o := range objs {
		gk := o.GroupVersionKind().GroupKind()
		switch {
		case gk.Kind == "Namespace" && gk.Group == "",
			gk.Kind == "CustomResourceDefinition" && gk.Group == "apiextensions.k8s.io":
			s[0] = append(s[0], o)
		case clusterScoped[gk]:
			s[1] = append(s[1], o)
		default:
			s[2] = append(s[2], o)
		}
	}
	for i := range s {
		sort.SliceStable(s[i], func(a, b int) bool { return kindRank(s[i][a]) < kindRank(s[i][b]) })
	}
	return s
}

var clusterScoped = map[schema.GroupKind]bool{
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRole"}:                       true,
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRoleBinding"}:                true,
	{Group: "storage.k8s.io", Kind: "StorageClass"}:                                 true,
	{Group: "", Kind: "PersistentVolume"}:                                           true,
	{Group: "scheduling.k8s.io", Kind: "PriorityClass"}:                             true,
	{Group: "networking.k8s.io", Kind: "IngressClass"}:                              true,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingWebhookConfiguration"}: true,
	{Group: "admissionregistration.k8s.io", Kind: "MutatingWebhookConfiguration"}:   true,
	{Group: "apiregistration.k8s.io", Kind: "APIService"}:                           true,
}

// helmKindOrder is Helm's install order of kinds.
var helmKindOrder = []string{
	"PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy",
	"PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass",
	"PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole",
	"ClusterRoleList", "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding",
	"RoleBindingList", "Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
	"HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
}

var kindRanks = func() map[string]int {
	m := make(map[string]int, len(helmKindOrder))
	for i, k := range helmKindOrder {
		m[k] = i
	}
	return m
}()

func kindRank(o *unstructured.Unstructured) int {
	if r, ok := kindRanks[o.GetKind()]; ok {
		return r
	}
	return len(helmKindOrder)
}
