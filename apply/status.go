package apply

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// ApplicationsResource is the GroupVersionResource of ferry Applications.
var ApplicationsResource = schema.GroupVersionResource{Group: v1alpha1.Group, Version: v1alpha1.Version, Resource: v1alpha1.Resource}

// SyncRecord is the outcome of one sync, as it goes into the status.
type SyncRecord struct {
	Revision   string
	Trigger    string
	TraceID    string
	StartedAt  time.Time
	FinishedAt time.Time
	Result     *Result
	// Err is the sync's failure, nil when it succeeded.
	Err error
	// Generation is the Application generation the sync used; 0 means the
	// one read when recording.
	Generation int64
}

// RecordSync writes the outcome of a sync into the Application's status:
// sync status and revision, the operation state, the resources, and a
// history entry (the last v1alpha1.HistoryLimit are kept). It retries on
// write conflicts.
func RecordSync(ctx context.Context, dyn dynamic.Interface, namespace, name string, rec SyncRecord) error {
	ctx, span := tracer().Start(ctx, "status")
	defer span.End()
	span.SetAttributes(attribute.String("ferry.app", namespace+"/"+name), attribute.String("ferry.revision", rec.Revision))
	ri := dyn.Resource(ApplicationsResource).Namespace(namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		u, err := ri.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		var app v1alpha1.Application
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &app); err != nil {
			return fmt.Errorf("decoding application %s/%s: %w", namespace, name, err)
		}
		if rec.Generation == 0 {
			rec.Generation = u.GetGeneration()
		}
		applyRecord(&app.Status, rec)
		status, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&app.Status)
		if err != nil {
			return err
		}
		u.Object["status"] = status
		_, err = ri.UpdateStatus(ctx, u, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return fmt.Errorf("recording sync of %s/%s: %w", namespace, name, err)
	}
	return nil
}

func applyRecord(st *v1alpha1.ApplicationStatus, rec SyncRecord) {
	finished := metav1.NewTime(rec.FinishedAt)
	op := &v1alpha1.OperationState{
		Revision:   rec.Revision,
		Trigger:    rec.Trigger,
		StartedAt:  metav1.NewTime(rec.StartedAt),
		FinishedAt: &finished,
	}
	var resources []v1alpha1.ResourceState
	if rec.Result != nil {
		for _, o := range rec.Result.Objects {
			resources = append(resources, v1alpha1.ResourceState{
				Group: o.Ref.Group, Version: o.Ref.Version, Kind: o.Ref.Kind,
				Namespace: o.Ref.Namespace, Name: o.Ref.Name,
				Status: string(o.Action), Message: o.Message,
			})
		}
	}
	op.Resources = resources
	phase := v1alpha1.PhaseSucceeded
	if rec.Err != nil {
		phase = v1alpha1.PhaseFailed
		op.Message = rec.Err.Error()
		st.LastError = rec.Err.Error()
		st.Sync.Status = v1alpha1.SyncStatusOutOfSync
	} else {
		op.Message = fmt.Sprintf("applied %d objects", len(resources))
		st.LastError = ""
		st.Sync = v1alpha1.SyncStatus{Status: v1alpha1.SyncStatusSynced, Revision: rec.Revision}
		st.Resources = resources
	}
	op.Phase = phase
	st.OperationState = op
	st.ObservedGeneration = rec.Generation
	st.ReconciledAt = &finished

	var nextID int64
	if n := len(st.History); n > 0 {
		nextID = st.History[n-1].ID + 1
	}
	st.History = append(st.History, v1alpha1.SyncHistory{
		ID: nextID, Revision: rec.Revision, Phase: phase, Trigger: rec.Trigger,
		DeployedAt: finished, TraceID: rec.TraceID, Message: op.Message,
	})
	if n := len(st.History); n > v1alpha1.HistoryLimit {
		st.History = st.History[n-v1alpha1.HistoryLimit:]
	}
}
