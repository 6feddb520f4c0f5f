package cli

import (
	"bytes"
	"context"
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/ferrycd/ferry/apply"
	"github.com/ferrycd/ferry/ingest"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// conditionWriter sets conditions on Applications' status.
type conditionWriter struct{ dyn dynamic.Interface }

var _ ingest.AppWarner = conditionWriter{}

// Warn sets (or refreshes) the condition of type reason.
func (c conditionWriter) Warn(ctx context.Context, namespace, name, reason, message string) error {
	return c.update(ctx, namespace, name, func(st *v1alpha1.ApplicationStatus) {
		setCondition(st, reason, message)
	})
}

// setCondition sets the condition of type typ, or clears it when message is
// empty.
func setCondition(st *v1alpha1.ApplicationStatus, typ, message string) {
	now := metav1.Now()
	for i := range st.Conditions {
		if st.Conditions[i].Type != typ {
			continue
		}
		if message == "" {
			st.Conditions = append(st.Conditions[:i], st.Conditions[i+1:]...)
			return
		}
		if st.Conditions[i].Message != message {
			st.Conditions[i].Message, st.Conditions[i].LastTransitionTime = message, &now
		}
		return
	}
	if message != "" {
		st.Conditions = append(st.Conditions, v1alpha1.Condition{Type: typ, Message: message, LastTransitionTime: &now})
	}
}

// update changes an Application's status with mutate, retrying on
// conflicts, and skips the write when nothing changed.
func (c conditionWriter) update(ctx context.Context, namespace, name string, mutate func(*v1alpha1.ApplicationStatus)) error {
	return apply.UpdateStatus(ctx, c.dyn, namespace, name, func(_ *unstructured.Unstructured, st *v1alpha1.ApplicationStatus) bool {
		before, _ := json.Marshal(st)
		mutate(st)
		after, _ := json.Marshal(st)
		return !bytes.Equal(before, after)
	})
}

// OutOfSync marks an app that does not sync by itself as behind Git.
func (c conditionWriter) OutOfSync(ctx context.Context, namespace, name, revision string) error {
	return c.update(ctx, namespace, name, func(st *v1alpha1.ApplicationStatus) {
		st.Sync = v1alpha1.SyncStatus{Status: v1alpha1.SyncStatusOutOfSync, Revision: revision}
	})
}
