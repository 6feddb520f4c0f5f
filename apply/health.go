package apply

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// HealthStatus is the health of an object or an app.
type HealthStatus string

// Health statuses, from best to worst. An app takes its worst object's.
const (
	// HealthHealthy: kstatus Current.
	HealthHealthy HealthStatus = "Healthy"
	// HealthProgressing: kstatus InProgress or Terminating; a controller
	// is still working on it.
	HealthProgressing HealthStatus = "Progressing"
	// HealthUnknown: not assessed yet (the watch has not synced) or
	// kstatus could not read the object.
	HealthUnknown HealthStatus = "Unknown"
	// HealthMissing: the object does not exist.
	HealthMissing HealthStatus = "Missing"
	// HealthDegraded: kstatus Failed, such as a Deployment past its
	// progress deadline or a failed Job.
	HealthDegraded HealthStatus = "Degraded"
)

func healthRank(s HealthStatus) int {
	switch s {
	case HealthHealthy:
		return 0
	case HealthProgressing:
		return 1
	case HealthUnknown:
		return 2
	case HealthMissing:
		return 3
	case HealthDegraded:
		return 4
	}
	return 2
}

// ResourceHealth is the health of one object.
type ResourceHealth struct {
	Ref     ObjectRef
	Status  HealthStatus
	Message string
}

// AppHealth is the health of an app: its worst object's, with that
// object's message.
type AppHealth struct {
	Status    HealthStatus
	Message   string
	Resources []ResourceHealth
}

// objectHealth assesses one live object with kstatus; nil means missing.
func objectHealth(ref ObjectRef, u *unstructured.Unstructured) ResourceHealth {
	if u == nil {
		return ResourceHealth{Ref: ref, Status: HealthMissing, Message: "not found"}
	}
	res, err := kstatus.Compute(u)
	if err != nil {
		return ResourceHealth{Ref: ref, Status: HealthUnknown, Message: err.Error()}
	}
	h := ResourceHealth{Ref: ref, Message: res.Message}
	switch res.Status {
	case kstatus.CurrentStatus:
		h.Status = HealthHealthy
	case kstatus.InProgressStatus, kstatus.TerminatingStatus:
		h.Status = HealthProgressing
	case kstatus.FailedStatus:
		h.Status = HealthDegraded
	case kstatus.NotFoundStatus:
		h.Status = HealthMissing
	default:
		h.Status = HealthUnknown
	}
	return h
}

// appHealth folds object health into the app's: the worst wins.
func appHealth(resources []ResourceHealth) AppHealth {
	h := AppHealth{Status: HealthHealthy, Resources: resources}
	for _, r := range resources {
		if healthRank(r.Status) > healthRank(h.Status) {
			h.Status = r.Status
			h.Message = fmt.Sprintf("%s: %s", r.Ref, r.Message)
		}
	}
	return h
}

// Health assesses app's objects (its inventory) once, with a read of each.
// It is for one-off checks such as RunPostSync's and the CLI; continuous
// health comes from the Monitor's watches.
func (a *Applier) Health(ctx context.Context, app string) (AppHealth, error) {
	inv, _, err := a.readInventory(ctx, app)
	if err != nil {
		return AppHealth{}, err
	}
	var entries []InventoryEntry
	for _, e := range inv.Entries {
		if !e.Orphan {
			entries = append(entries, e)
		}
	}
	out := make([]ResourceHealth, len(entries))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(a.opts.Parallelism)
	for i, e := range entries {
		g.Go(func() error {
			gvr := e.GVR()
			namespaced := e.Namespace != ""
			if m, err := a.mapper.RESTMapping(schema.GroupKind{Group: e.Group, Kind: e.Kind}, e.Version); err == nil {
				gvr, namespaced = m.Resource, m.Scope.Name() == meta.RESTScopeNameNamespace
			}
			var u *unstructured.Unstructured
			var err error
			if namespaced {
				u, err = a.dyn.Resource(gvr).Namespace(e.Namespace).Get(gctx, e.Name, metav1.GetOptions{})
			} else {
				u, err = a.dyn.Resource(gvr).Get(gctx, e.Name, metav1.GetOptions{})
			}
			switch {
			case apierrors.IsNotFound(err), meta.IsNoMatchError(err):
				u = nil
			case err != nil:
				return fmt.Errorf("%s: %w", e.Ref(), err)
			}
			out[i] = objectHealth(e.Ref(), u)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return AppHealth{}, err
	}
	return appHealth(out), nil
}
