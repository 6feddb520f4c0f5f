package apply

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
)

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// WaitEstablished waits until the named CRD is Established, so that objects
// of its kind can be applied, then refreshes the Applier's REST mapping.
func (a *Applier) WaitEstablished(ctx context.Context, name string, timeout time.Duration) error {
	if err := a.waitEstablished(ctx, name, timeout); err != nil {
		return err
	}
	a.mapper.Reset()
	return nil
}

func (a *Applier) waitEstablished(ctx context.Context, name string, timeout time.Duration) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, a.opts.PollInterval/5+time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		u, err := a.dyn.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			if ctx.Err() == nil {
				last = apiMessage(err)
			}
			return false, nil
		}
		ok, msg := established(u)
		last = msg
		return ok, nil
	})
	if err != nil {
		if last != "" {
			return fmt.Errorf("CRD %s not Established within %s: %s", name, timeout, last)
		}
		return fmt.Errorf("CRD %s not Established within %s", name, timeout)
	}
	return nil
}

func established(u *unstructured.Unstructured) (bool, string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	msg := ""
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true, ""
		}
		if m["status"] == "False" {
			if s, _ := m["message"].(string); s != "" {
				msg = s
			}
		}
	}
	return false, msg
}
