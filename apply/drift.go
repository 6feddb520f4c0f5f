package apply

import (
	"fmt"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// DriftReason says how an object drifted from what ferry applied.
type DriftReason string

// Drift reasons.
const (
	// DriftDeleted: the object is gone or being deleted.
	DriftDeleted DriftReason = "deleted"
	// DriftModified: another field manager changed fields ferry owns.
	DriftModified DriftReason = "modified"
)

// Drift is one object that no longer matches what ferry applied.
type Drift struct {
	Ref    ObjectRef
	Reason DriftReason
	// Managers are the field managers that wrote the object since ferry
	// did, for DriftModified.
	Managers []string
}

// String reads as "Deployment.apps/ns/web modified by kubectl-edit".
func (d Drift) String() string {
	if len(d.Managers) == 0 {
		return fmt.Sprintf("%s %s", d.Ref, d.Reason)
	}
	return fmt.Sprintf("%s %s by %v", d.Ref, d.Reason, d.Managers)
}

// driftOf compares a live object (nil when gone) with its inventory entry.
//
// Ownership, not values, is compared. Server-side apply moves a field to
// whichever manager last changed it, so when anyone else changes a field
// ferry applied, ferry's managed-fields entry shrinks and its hash no
// longer matches the one recorded right after ferry's apply. Fields ferry
// never declared (replicas set by an HPA, status, defaults) are not in
// ferry's entry, so changing them is not drift.
func driftOf(e InventoryEntry, live *unstructured.Unstructured) *Drift {
	if !e.tracked() {
		return nil
	}
	ref := e.Ref()
	if live == nil || live.GetDeletionTimestamp() != nil {
		return &Drift{Ref: ref, Reason: DriftDeleted}
	}
	if ferryFields(live) == e.Fields {
		return nil
	}
	return &Drift{Ref: ref, Reason: DriftModified, Managers: writersAfterFerry(live)}
}

// writersAfterFerry names the managers that wrote the object's main
// resource at or after ferry's last apply.
func writersAfterFerry(u *unstructured.Unstructured) []string {
	mfs := u.GetManagedFields()
	var since *metav1.Time
	for _, mf := range mfs {
		if mf.Manager == FieldManager && mf.Operation == metav1.ManagedFieldsOperationApply && mf.Subresource == "" {
			since = mf.Time
		}
	}
	var out []string
	for _, mf := range mfs {
		if mf.Manager == FieldManager && mf.Operation == metav1.ManagedFieldsOperationApply {
			continue
		}
		if mf.Subresource != "" && mf.Subresource != "scale" {
			continue
		}
		if since != nil && mf.Time != nil && mf.Time.Before(since) {
			continue
		}
		if !slices.Contains(out, mf.Manager) {
			out = append(out, mf.Manager)
		}
	}
	slices.Sort(out)
	return out
}
