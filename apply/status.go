package apply

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// SyncRecord is the outcome of one sync, as it goes into the status.
type SyncRecord struct {
	Revision string
	Trigger  string
	TraceID  string
	// SpanID is the span the sync ran in, kept for links from later traces.
	SpanID string
	// BundleHash names the bundle applied, for re-applies without a render.
	BundleHash string
	// DecryptedWith names the SOPS key Secret the sync decrypted with;
	// empty when it decrypted nothing.
	DecryptedWith string
	// Inputs, when set, replace the status' record of the paths the render
	// read (a re-apply leaves them nil and the record as it was).
	Inputs     []v1alpha1.InputPath
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
	err := UpdateStatus(ctx, dyn, namespace, name, func(u *unstructured.Unstructured, st *v1alpha1.ApplicationStatus) bool {
		if rec.Generation == 0 {
			rec.Generation = u.GetGeneration()
		}
		applyRecord(st, rec)
		return true
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
	var resources, current []v1alpha1.ResourceState
	if rec.Result != nil {
		for _, o := range rec.Result.Objects {
			rs := v1alpha1.ResourceState{
				Group: o.Ref.Group, Version: o.Ref.Version, Kind: o.Ref.Kind,
				Namespace: o.Ref.Namespace, Name: o.Ref.Name,
				Status: string(o.Action), Message: o.Message,
			}
			resources = append(resources, rs)
			if o.Action != ActionPruned {
				current = append(current, rs)
			}
		}
		for _, o := range rec.Result.Hooks {
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
		op.Message = fmt.Sprintf("applied %d objects", len(current))
		if rec.Result != nil {
			op.Message = summary(rec.Result)
			if rec.Result.PostSyncPending {
				phase = v1alpha1.PhaseRunning
				op.Message += "; PostSync hooks wait until the app is Healthy"
			}
		}
		st.LastError = ""
		st.Sync = v1alpha1.SyncStatus{Status: v1alpha1.SyncStatusSynced, Revision: rec.Revision, BundleHash: rec.BundleHash, DecryptedWith: rec.DecryptedWith}
		if rec.Inputs != nil {
			st.Inputs = rec.Inputs
		}
		// The first sync's health comes from its apply responses, which
		// spares the Monitor a write; after that the Monitor alone writes
		// health, so a sync finishing late cannot overwrite a newer report.
		if h := rec.Result; h != nil && h.Health.Status != "" && st.Health.Status == "" {
			st.Health = v1alpha1.HealthStatus{Status: string(h.Health.Status), Message: h.Health.Message}
		}
		st.Resources = current
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
		DeployedAt: finished, TraceID: rec.TraceID, SpanID: rec.SpanID, Message: op.Message,
		BundleHash: rec.BundleHash,
	})
	if n := len(st.History); n > v1alpha1.HistoryLimit {
		st.History = st.History[n-v1alpha1.HistoryLimit:]
	}
}

// summary counts a result's actions, such as "2 created, 5 unchanged".
func summary(r *Result) string {
	var parts []string
	for _, a := range []Action{ActionCreated, ActionConfigured, ActionUnchanged, ActionPruned, ActionPruneSkipped, ActionFailed} {
		if n := r.Count(a); n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, a))
		}
	}
	if len(parts) == 0 {
		return "no objects"
	}
	return strings.Join(parts, ", ")
}

// ConditionDrift is the status condition listing drifted objects.
const ConditionDrift = "Drift"

// RecordStatus writes what the Monitor observed into the Application's
// status: health, and OutOfSync with a Drift condition naming the drifted
// objects (Synced again once they are back, if the last sync succeeded).
// It writes only when something changed, and retries on conflicts.
func RecordStatus(ctx context.Context, dyn dynamic.Interface, namespace, name string, s AppStatus) error {
	err := UpdateStatus(ctx, dyn, namespace, name, func(_ *unstructured.Unstructured, st *v1alpha1.ApplicationStatus) bool {
		return applyStatus(st, s, time.Now())
	})
	if err != nil {
		return fmt.Errorf("recording status of %s/%s: %w", namespace, name, err)
	}
	return nil
}

// applyStatus folds s into st and reports whether st changed.
func applyStatus(st *v1alpha1.ApplicationStatus, s AppStatus, now time.Time) bool {
	before := fmt.Sprintf("%+v|%+v|%+v", st.Health, st.Sync, conditionsWithoutTime(st.Conditions))
	st.Health = v1alpha1.HealthStatus{Status: string(s.Health.Status), Message: s.Health.Message}
	var kept []v1alpha1.Condition
	var old *v1alpha1.Condition
	for i, c := range st.Conditions {
		if c.Type == ConditionDrift {
			old = &st.Conditions[i]
			continue
		}
		kept = append(kept, c)
	}
	if s.Syncing {
		// A sync is writing: keep what the last sync recorded.
		if old != nil {
			kept = append(kept, *old)
		}
	} else if len(s.Drift) > 0 {
		msgs := make([]string, len(s.Drift))
		for i, d := range s.Drift {
			msgs[i] = d.String()
		}
		c := v1alpha1.Condition{Type: ConditionDrift, Message: strings.Join(msgs, "; ")}
		if old != nil && old.Message == c.Message {
			c.LastTransitionTime = old.LastTransitionTime
		} else {
			t := metav1.NewTime(now)
			c.LastTransitionTime = &t
		}
		kept = append(kept, c)
		st.Sync.Status = v1alpha1.SyncStatusOutOfSync
	} else if old != nil && st.LastError == "" {
		st.Sync.Status = v1alpha1.SyncStatusSynced
	}
	st.Conditions = kept
	return before != fmt.Sprintf("%+v|%+v|%+v", st.Health, st.Sync, conditionsWithoutTime(st.Conditions))
}

func conditionsWithoutTime(cs []v1alpha1.Condition) []v1alpha1.Condition {
	out := make([]v1alpha1.Condition, len(cs))
	for i, c := range cs {
		c.LastTransitionTime = nil
		out[i] = c
	}
	return out
}

// UpdateStatus changes an Application's status with mutate, which reports
// whether it changed anything (nothing is written when it did not). The
// first read comes from the API server's watch cache; a conflict means it
// was stale, and the retries read from etcd.
func UpdateStatus(ctx context.Context, dyn dynamic.Interface, namespace, name string, mutate func(*unstructured.Unstructured, *v1alpha1.ApplicationStatus) bool) error {
	ri := dyn.Resource(v1alpha1.ApplicationsResource).Namespace(namespace)
	opts := metav1.GetOptions{ResourceVersion: "0"}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		for {
			fromCache := opts.ResourceVersion == "0"
			u, err := ri.Get(ctx, name, opts)
			opts = metav1.GetOptions{}
			if err != nil {
				return err
			}
			var app v1alpha1.Application
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &app); err != nil {
				return fmt.Errorf("decoding application %s/%s: %w", namespace, name, err)
			}
			if !mutate(u, &app.Status) {
				if fromCache {
					// "Nothing to change" from a possibly stale copy is
					// confirmed against etcd; a change is written, and a
					// stale copy then fails as a conflict and is retried.
					continue
				}
				return nil
			}
			return writeStatus(ctx, ri, u, &app.Status)
		}
	})
}

func writeStatus(ctx context.Context, ri dynamic.ResourceInterface, u *unstructured.Unstructured, st *v1alpha1.ApplicationStatus) error {
	{
		status, err := runtime.DefaultUnstructuredConverter.ToUnstructured(st)
		if err != nil {
			return err
		}
		u.Object["status"] = status
		_, err = ri.UpdateStatus(ctx, u, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	}
}
