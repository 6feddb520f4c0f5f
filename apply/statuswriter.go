package apply

import (
	"bytes"
	"context"
	"encoding/json"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// StatusWriter changes fields of Applications' status: conditions, and
// the sync status dispatch learns of. Sync outcomes go through RecordSync,
// what the Monitor sees through RecordStatus.
type StatusWriter struct{ dyn dynamic.Interface }

// NewStatusWriter returns a StatusWriter over dyn.
func NewStatusWriter(dyn dynamic.Interface) StatusWriter { return StatusWriter{dyn: dyn} }

// Warn sets (or refreshes) the condition of type reason.
func (w StatusWriter) Warn(ctx context.Context, namespace, name, reason, message string) error {
	return w.update(ctx, namespace, name, func(st *v1alpha1.ApplicationStatus) {
		st.SetCondition(reason, message, time.Now())
	})
}

// OutOfSync marks an app that does not sync by itself as behind Git.
func (w StatusWriter) OutOfSync(ctx context.Context, namespace, name, revision string) error {
	return w.update(ctx, namespace, name, func(st *v1alpha1.ApplicationStatus) {
		st.Sync = v1alpha1.SyncStatus{Status: v1alpha1.SyncStatusOutOfSync, Revision: revision}
	})
}

// SetCondition sets (message non-empty) or clears the condition typ of
// app, writing only when that changes what app, as last read, holds.
func (w StatusWriter) SetCondition(ctx context.Context, app *v1alpha1.Application, typ, message string) error {
	if app.Status.HasCondition(typ, message) {
		return nil
	}
	return w.Warn(ctx, app.Namespace, app.Name, typ, message)
}

// update changes an Application's status with mutate, retrying on
// conflicts, and skips the write when nothing changed.
func (w StatusWriter) update(ctx context.Context, namespace, name string, mutate func(*v1alpha1.ApplicationStatus)) error {
	return UpdateStatus(ctx, w.dyn, namespace, name, func(_ *unstructured.Unstructured, st *v1alpha1.ApplicationStatus) bool {
		before, _ := json.Marshal(st)
		mutate(st)
		after, _ := json.Marshal(st)
		return !bytes.Equal(before, after)
	})
}
