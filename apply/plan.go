package apply

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/releaseutil"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// HookPhase is when a hook runs.
type HookPhase string

// Hook phases, Argo CD's model.
const (
	// HookPreSync hooks run before anything else is applied.
	HookPreSync HookPhase = "PreSync"
	// HookSync hooks run after the main objects are applied.
	HookSync HookPhase = "Sync"
	// HookPostSync hooks run once the app is Healthy, through RunPostSync.
	HookPostSync HookPhase = "PostSync"
	// HookSyncFail hooks run when the sync fails.
	HookSyncFail HookPhase = "SyncFail"
)

// Hook deletion policies.
const (
	deleteBeforeCreation = "beforehookcreation"
	deleteOnSuccess      = "hooksucceeded"
	deleteOnFailure      = "hookfailed"
)

// stage numbers. Objects are applied stage by stage within a wave.
const (
	stageNamespacesAndCRDs = iota
	stageClusterScoped
	stageNamespaced
)

// object is one desired object, prepared for the cluster.
type object struct {
	u       *unstructured.Unstructured // namespace defaulted, tracking metadata set
	ref     ObjectRef
	gk      schema.GroupKind
	index   int // position in the bundle
	mapping *meta.RESTMapping
	// namespaced is known from the mapping, or from a CRD in the bundle
	// when the kind is not served yet.
	namespaced   bool
	stage, wave  int
	ifNotPresent bool
	hash         string

	hook *hookSpec // nil for main objects
	// decrypted is set when the object's values came from a SOPS
	// document: diffs mask them all.
	decrypted bool

	obs *observation // nil until observed
}

type hookSpec struct {
	phases map[HookPhase]bool
	weight int
	policy map[string]bool
}

// key identifies an object across versions of its kind.
func (o *object) key() string { return objKey(o.gk.Group, o.gk.Kind, o.ref.Namespace, o.ref.Name) }

func objKey(group, kind, namespace, name string) string {
	return group + "/" + kind + "/" + namespace + "/" + name
}

// plan is a bundle sorted into steps and hooks.
type plan struct {
	app, namespace string
	main           []*object   // every main object, bundle order
	steps          [][]*object // main objects by (wave, stage)
	hooks          []*object
	// crdScope says, for each kind a CRD in the bundle defines, whether
	// it is namespaced.
	crdScope    map[schema.GroupKind]bool
	digest      string
	mapperReset bool
}

type planInput struct {
	app, namespace string
	objects        []*unstructured.Unstructured
	hooks          bool // honour hook annotations
	label          bool // set v1alpha1.LabelManaged
	// project, when set, must allow every object.
	project *v1alpha1.Project
	// keyed objects hash with an HMAC under hashKey (SyncOptions.Decrypted).
	keyed   map[*unstructured.Unstructured]bool
	hashKey []byte
}

// plan prepares the objects. Objects that cannot be applied at all (no
// name, a bad annotation, a duplicate) come back as failed results; the
// caller applies nothing then.
func (a *Applier) plan(in planInput) (*plan, []ObjectResult) {
	p := &plan{app: in.app, namespace: in.namespace, crdScope: map[schema.GroupKind]bool{}}
	for _, u := range in.objects {
		if u.GetKind() == "CustomResourceDefinition" && u.GroupVersionKind().Group == "apiextensions.k8s.io" {
			group, _, _ := unstructured.NestedString(u.Object, "spec", "group")
			kind, _, _ := unstructured.NestedString(u.Object, "spec", "names", "kind")
			scope, _, _ := unstructured.NestedString(u.Object, "spec", "scope")
			p.crdScope[schema.GroupKind{Group: group, Kind: kind}] = scope != "Cluster"
		}
	}
	digest := sha256.New()
	fmt.Fprintf(digest, "%s\x00%s\x00", in.app, in.namespace)
	var invalid []ObjectResult
	seen := map[string]bool{}
	for i, in0 := range in.objects {
		raw, _ := in0.MarshalJSON()
		digest.Write(raw)
		digest.Write([]byte{0})
		o, err := a.prepare(p, i, in0, in)
		if o == nil {
			continue // a Skip hook
		}
		if err == nil && seen[hookPrefix(o)+o.key()] {
			err = fmt.Errorf("appears twice in the bundle")
		}
		if err != nil {
			invalid = append(invalid, ObjectResult{Ref: o.ref, Action: ActionFailed, Message: err.Error(), cause: err})
			continue
		}
		seen[hookPrefix(o)+o.key()] = true
		if o.hook != nil {
			p.hooks = append(p.hooks, o)
		} else {
			p.main = append(p.main, o)
		}
	}
	p.digest = hex.EncodeToString(digest.Sum(nil))[:32]
	p.steps = steps(p.main)
	return p, invalid
}

func hookPrefix(o *object) string {
	if o.hook != nil {
		return "hook:"
	}
	return ""
}

func (a *Applier) prepare(p *plan, index int, in *unstructured.Unstructured, pin planInput) (*object, error) {
	u := in.DeepCopy()
	gvk := u.GroupVersionKind()
	o := &object{u: u, index: index, gk: gvk.GroupKind(),
		ref: ObjectRef{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind, Namespace: u.GetNamespace(), Name: u.GetName()}}
	ann := u.GetAnnotations()
	if pin.hooks {
		h, skip, err := parseHook(ann)
		if skip {
			return nil, nil
		}
		if err != nil {
			return o, err
		}
		o.hook = h
	}
	if gvk.Kind == "" || gvk.Version == "" {
		return o, fmt.Errorf("has no apiVersion or kind")
	}
	if u.GetName() == "" && (o.hook == nil || u.GetGenerateName() == "") {
		// Only hooks, which are created rather than applied, may use
		// generateName.
		return o, fmt.Errorf("has no metadata.name")
	}
	if u.GetName() == "" {
		o.ref.Name = u.GetGenerateName()
	}
	wave, err := intAnnotation(ann, v1alpha1.AnnotationSyncWave, v1alpha1.ArgoAnnotationSyncWave)
	if err != nil {
		return o, err
	}
	o.wave = wave
	switch v := ann[v1alpha1.AnnotationSSA]; strings.ToLower(strings.ReplaceAll(v, "-", "")) {
	case "":
	case "ifnotpresent":
		o.ifNotPresent = true
	default:
		return o, fmt.Errorf("annotation %s: unknown value %q (want if-not-present)", v1alpha1.AnnotationSSA, v)
	}

	// Scope: from the cluster when it serves the kind, else from a CRD in
	// the bundle, else from what is known of built-in kinds.
	m, err := a.mapper.RESTMapping(o.gk, gvk.Version)
	if _, inBundle := p.crdScope[o.gk]; meta.IsNoMatchError(err) && !inBundle && !p.mapperReset {
		// The kind may come from a CRD installed since the cache was
		// filled; refresh once per sync.
		p.mapperReset = true
		a.mapper.Reset()
		m, err = a.mapper.RESTMapping(o.gk, gvk.Version)
	}
	if err == nil {
		o.mapping = m
		o.namespaced = m.Scope.Name() == meta.RESTScopeNameNamespace
	} else if ns, ok := p.crdScope[o.gk]; ok {
		o.namespaced = ns
	} else {
		o.namespaced = !clusterScoped[o.gk] && !(o.gk.Group == "" && o.gk.Kind == "Namespace") &&
			!(o.gk.Group == "apiextensions.k8s.io" && o.gk.Kind == "CustomResourceDefinition")
	}
	if o.namespaced {
		if u.GetNamespace() == "" {
			u.SetNamespace(p.namespace)
		}
		if u.GetNamespace() == "" {
			return o, fmt.Errorf("namespaced object has no namespace and the app has no destination namespace")
		}
	} else {
		u.SetNamespace("")
	}
	o.ref.Namespace = u.GetNamespace()
	if pin.project != nil {
		if err := a.admitObject(pin.project, o); err != nil {
			return o, err
		}
	}
	switch {
	case o.gk.Group == "" && o.gk.Kind == "Namespace",
		o.gk.Group == "apiextensions.k8s.io" && o.gk.Kind == "CustomResourceDefinition":
		o.stage = stageNamespacesAndCRDs
	case !o.namespaced:
		o.stage = stageClusterScoped
	default:
		o.stage = stageNamespaced
	}

	// Fields the server owns have no place in an apply configuration.
	for _, f := range []string{"resourceVersion", "uid", "creationTimestamp", "managedFields", "generation", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"} {
		unstructured.RemoveNestedField(u.Object, "metadata", f)
	}
	if pin.app != "" {
		if ann == nil {
			ann = map[string]string{}
		}
		ann[v1alpha1.AnnotationApp] = pin.app
		u.SetAnnotations(ann)
	}
	if pin.label && o.hook == nil {
		labels := u.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[v1alpha1.LabelManaged] = "true"
		u.SetLabels(labels)
	}
	data, err := json.Marshal(u.Object)
	if err != nil {
		return o, err
	}
	o.hash = shortHash(data)
	if pin.keyed[in] {
		o.decrypted = true
		mac := hmac.New(sha256.New, pin.hashKey)
		mac.Write(data)
		o.hash = "k:" + hex.EncodeToString(mac.Sum(nil))[:16]
	}
	if o.ifNotPresent {
		o.hash = "inp:" + o.hash
	}
	return o, nil
}

func shortHash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:16])
}

// parseHook reads the hook annotations: ferry's, then Argo CD's, then
// Helm's. skip reports an object that is never applied (Argo CD's Skip, or
// a Helm hook of a phase ferry has no equivalent for).
func parseHook(ann map[string]string) (h *hookSpec, skip bool, err error) {
	value, helm := ann[v1alpha1.AnnotationHook], false
	if value == "" {
		value = ann[v1alpha1.ArgoAnnotationHook]
	}
	if value == "" && ann[release.HookAnnotation] != "" {
		value, helm = ann[release.HookAnnotation], true
	}
	if value == "" {
		return nil, false, nil
	}
	h = &hookSpec{phases: map[HookPhase]bool{}, policy: map[string]bool{}}
	for _, v := range strings.Split(value, ",") {
		v = strings.TrimSpace(v)
		if helm {
			switch release.HookEvent(v) {
			case release.HookPreInstall, release.HookPreUpgrade:
				h.phases[HookPreSync] = true
			case release.HookPostInstall, release.HookPostUpgrade:
				h.phases[HookPostSync] = true
			}
			continue
		}
		switch HookPhase(v) {
		case HookPreSync, HookSync, HookPostSync, HookSyncFail:
			h.phases[HookPhase(v)] = true
		case "Skip":
			return nil, true, nil
		case "PostDelete":
			// Runs when the app is deleted, which ferry does not do yet.
		default:
			return h, false, fmt.Errorf("annotation %s: unknown hook phase %q", v1alpha1.AnnotationHook, v)
		}
	}
	if len(h.phases) == 0 {
		return nil, true, nil
	}
	h.weight, err = intAnnotation(ann, v1alpha1.AnnotationHookWeight, v1alpha1.ArgoAnnotationHookWeight, release.HookWeightAnnotation, v1alpha1.AnnotationSyncWave, v1alpha1.ArgoAnnotationSyncWave)
	if err != nil {
		return h, false, err
	}
	policy := ann[v1alpha1.AnnotationHookDeletePolicy]
	if policy == "" {
		policy = ann[v1alpha1.ArgoAnnotationHookDeletePolicy]
	}
	if policy == "" {
		policy = ann[release.HookDeleteAnnotation]
	}
	for _, v := range strings.Split(policy, ",") {
		v = strings.ToLower(strings.ReplaceAll(strings.TrimSpace(v), "-", ""))
		switch v {
		case "":
		case deleteBeforeCreation, deleteOnSuccess, deleteOnFailure:
			h.policy[v] = true
		default:
			return h, false, fmt.Errorf("annotation %s: unknown deletion policy %q", v1alpha1.AnnotationHookDeletePolicy, v)
		}
	}
	if len(h.policy) == 0 {
		h.policy[deleteBeforeCreation] = true
	}
	return h, false, nil
}

// intAnnotation returns the first of keys that is set, as an int.
func intAnnotation(ann map[string]string, keys ...string) (int, error) {
	for _, k := range keys {
		v, ok := ann[k]
		if !ok || strings.TrimSpace(v) == "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return 0, fmt.Errorf("annotation %s: %q is not an integer", k, v)
		}
		return n, nil
	}
	return 0, nil
}

// pruneDisabled reports whether the annotations keep an object from prune.
func pruneDisabled(ann map[string]string) bool {
	if strings.EqualFold(ann[v1alpha1.AnnotationPrune], "disabled") || strings.EqualFold(ann[v1alpha1.AnnotationPrune], "false") {
		return true
	}
	for _, opt := range strings.Split(ann[v1alpha1.ArgoAnnotationSyncOptions], ",") {
		opt = strings.TrimSpace(opt)
		if strings.EqualFold(opt, "Prune=false") || strings.EqualFold(opt, "Prune=confirm") {
			return true
		}
	}
	return false
}

// steps sorts main objects into apply steps: by wave, then by stage
// (Namespaces and CRDs; other cluster-scoped kinds; namespaced kinds).
// Within a step objects start in Helm's kind order, then bundle order.
func steps(objs []*object) [][]*object {
	sorted := append([]*object(nil), objs...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		if a.wave != b.wave {
			return a.wave < b.wave
		}
		if a.stage != b.stage {
			return a.stage < b.stage
		}
		if ra, rb := kindRank(a.gk.Kind), kindRank(b.gk.Kind); ra != rb {
			return ra < rb
		}
		return a.index < b.index
	})
	var out [][]*object
	for i, o := range sorted {
		if i == 0 || o.wave != sorted[i-1].wave || o.stage != sorted[i-1].stage {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], o)
	}
	return out
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

// kindRanks is Helm's install order, releaseutil.InstallOrder, as ranks.
var kindRanks = func() map[string]int {
	m := make(map[string]int, len(releaseutil.InstallOrder))
	for i, k := range releaseutil.InstallOrder {
		m[k] = i
	}
	return m
}()

// kindRank is a kind's place in Helm's install order. Kinds Helm does not
// list all rank last, so that steps' stable sort keeps them in bundle
// order. Here ferry parts from Helm, which sorts those kinds by name: that
// would apply a chart's custom resources in alphabetical order rather than
// the order their author wrote, a Certificate before the Issuer it needs.
func kindRank(kind string) int {
	if r, ok := kindRanks[kind]; ok {
		return r
	}
	return len(releaseutil.InstallOrder)
}
