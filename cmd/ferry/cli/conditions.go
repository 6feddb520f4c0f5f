package cli

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"

	"github.com/ferrycd/ferry/apply"
	"github.com/ferrycd/ferry/ingest"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// conditionWriter sets conditions on Applications' status.
type conditionWriter struct{ dyn dynamic.Interface }

var _ ingest.AppWarner = conditionWriter{}

// Warn sets (or refreshes) the condition of type reason.
func (c conditionWriter) Warn(ctx context.Context, namespace, name, reason, message string) error {
	ri := c.dyn.Resource(apply.ApplicationsResource).Namespace(namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		u, err := ri.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		var app v1alpha1.Application
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &app); err != nil {
			return fmt.Errorf("decoding application %s/%s: %w", namespace, name, err)
		}
		now := metav1.Now()
		found := false
		for i := range app.Status.Conditions {
			if app.Status.Conditions[i].Type == reason {
				app.Status.Conditions[i].Message, app.Status.Conditions[i].LastTransitionTime = message, &now
				found = true
			}
		}
		if !found {
			app.Status.Conditions = append(app.Status.Conditions, v1alpha1.Condition{Type: reason, Message: message, LastTransitionTime: &now})
		}
		st, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&app.Status)
		if err != nil {
			return err
		}
		u.Object["status"] = st
		_, err = ri.UpdateStatus(ctx, u, metav1.UpdateOptions{FieldManager: apply.FieldManager})
		return err
	})
}
