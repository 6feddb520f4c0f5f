package apply

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

func TestApplyStatusMarksDriftOutOfSync(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := &v1alpha1.ApplicationStatus{Sync: v1alpha1.SyncStatus{Status: v1alpha1.SyncStatusSynced, Revision: "abc"}}
	drifted := AppStatus{
		Health: AppHealth{Status: HealthMissing, Message: "ConfigMap/ns/cfg: not found"},
		Drift:  []Drift{{Ref: ObjectRef{Version: "v1", Kind: "ConfigMap", Namespace: "ns", Name: "cfg"}, Reason: DriftDeleted}},
	}
	if !applyStatus(st, drifted, now) {
		t.Fatal("applyStatus reported no change")
	}
	want := &v1alpha1.ApplicationStatus{
		Sync:       v1alpha1.SyncStatus{Status: v1alpha1.SyncStatusOutOfSync, Revision: "abc"},
		Health:     v1alpha1.HealthStatus{Status: "Missing", Message: "ConfigMap/ns/cfg: not found"},
		Conditions: []v1alpha1.Condition{{Type: ConditionDrift, Message: "ConfigMap/ns/cfg deleted", LastTransitionTime: st.Conditions[0].LastTransitionTime}},
	}
	if d := cmp.Diff(want, st); d != "" {
		t.Errorf("status (-want +got):\n%s", d)
	}
	if applyStatus(st, drifted, now.Add(time.Minute)) {
		t.Error("the same observation again reported a change")
	}
	if !applyStatus(st, AppStatus{Health: AppHealth{Status: HealthHealthy}}, now) {
		t.Fatal("clearing drift reported no change")
	}
	if st.Sync.Status != v1alpha1.SyncStatusSynced || len(st.Conditions) != 0 {
		t.Errorf("after drift cleared: sync %s, conditions %v; want Synced and none", st.Sync.Status, st.Conditions)
	}
}

func TestApplyRecordOfPendingPostSync(t *testing.T) {
	st := &v1alpha1.ApplicationStatus{}
	res := &Result{
		Objects:         []ObjectResult{{Ref: ObjectRef{Kind: "ConfigMap", Name: "a"}, Action: ActionCreated}, {Ref: ObjectRef{Kind: "ConfigMap", Name: "b"}, Action: ActionPruned}},
		Hooks:           []ObjectResult{{Ref: ObjectRef{Kind: "Job", Name: "migrate"}, Action: ActionCreated, Hook: HookPreSync, Message: "PreSync hook succeeded"}},
		PostSyncPending: true,
	}
	applyRecord(st, SyncRecord{Revision: "abc", Result: res})
	if got := st.OperationState.Phase; got != v1alpha1.PhaseRunning {
		t.Errorf("phase = %s, want %s", got, v1alpha1.PhaseRunning)
	}
	if got, want := st.OperationState.Message, "1 created, 1 pruned; PostSync hooks wait until the app is Healthy"; got != want {
		t.Errorf("message = %q, want %q", got, want)
	}
	if len(st.Resources) != 1 || len(st.OperationState.Resources) != 3 {
		t.Errorf("resources = %v, operation resources = %v; want the live object, and all three", st.Resources, st.OperationState.Resources)
	}
}

func TestApplyRecordKeepsTheBundleInHistory(t *testing.T) {
	st := &v1alpha1.ApplicationStatus{}
	applyRecord(st, SyncRecord{Revision: "abc", BundleHash: "sha256-ok", Result: &Result{}})
	applyRecord(st, SyncRecord{Revision: "def", BundleHash: "sha256-failed", Err: errors.New("apply failed")})
	var got []string
	for _, e := range st.History {
		got = append(got, e.BundleHash)
	}
	if d := cmp.Diff([]string{"sha256-ok", "sha256-failed"}, got); d != "" {
		t.Errorf("history bundle hashes (-want +got):\n%s", d)
	}
	if st.Sync.BundleHash != "sha256-ok" {
		t.Errorf("sync bundle = %q, want the last one applied in full, sha256-ok", st.Sync.BundleHash)
	}
}

func TestIsTransient(t *testing.T) {
	gr := schema.GroupResource{Resource: "configmaps"}
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"an invalid object", &ApplyError{Failed: []ObjectResult{{cause: apierrors.NewInvalid(schema.GroupKind{Kind: "ConfigMap"}, "x", nil)}}}, false},
		{"an overloaded API server", &ApplyError{Failed: []ObjectResult{{cause: apierrors.NewTooManyRequests("slow down", 1)}}}, true},
		{"an unavailable API server", apierrors.NewServiceUnavailable("down"), true},
		{"a hook timeout", &HookError{Failed: []ObjectResult{{cause: ErrHookTimeout}}}, false},
		{"an empty bundle", ErrEmptyBundle, false},
		{"a wrapped transient error", errors.Join(errors.New("x"), apierrors.NewServerTimeout(gr, "get", 1)), true},
		{"an unknown error, as in render", errors.New("connection reset by the moon"), true},
		{"a hook whose Job failed", &HookError{Failed: []ObjectResult{{cause: errors.New("BackoffLimitExceeded")}}}, false},
		{"one object invalid and one refused by an overloaded server", &ApplyError{Failed: []ObjectResult{
			{cause: apierrors.NewInvalid(schema.GroupKind{Kind: "ConfigMap"}, "x", nil)},
			{cause: apierrors.NewServiceUnavailable("down")},
		}}, true},
		{"an apply error wrapped by the caller", fmt.Errorf("sync: %w", &ApplyError{Failed: []ObjectResult{{cause: apierrors.NewForbidden(gr, "x", errors.New("no"))}}}), false},
	}
	for _, c := range cases {
		if got := IsTransient(c.err); got != c.want {
			t.Errorf("IsTransient(%s) = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestUninstallPrunesEverythingAndDropsTheInventory(t *testing.T) {
	a, _ := newApplier(t)
	ns := newNamespace(t)
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns}
	mustSync(t, a, opts, objects(t, configMap("a", nil, nil), configMap("b", nil, nil)))
	res, err := a.Uninstall(t.Context(), opts.App)
	if err != nil || res.Err != nil {
		t.Fatalf("Uninstall = %v, %v", err, res.Err)
	}
	diffActions(t, map[string]Action{"ConfigMap/" + ns + "/a": ActionPruned, "ConfigMap/" + ns + "/b": ActionPruned}, res)
	if get(t, cmGVR, inventoryNS, InventoryName(opts.App)) != nil {
		t.Error("the inventory is still there")
	}
}

func TestApplyErrorUnwraps(t *testing.T) {
	invalid := apierrors.NewInvalid(schema.GroupKind{Kind: "ConfigMap"}, "x", nil)
	err := fmt.Errorf("sync: %w", &ApplyError{Failed: []ObjectResult{{cause: invalid}}})
	var st apierrors.APIStatus
	if !errors.Is(err, invalid) || !errors.As(err, &st) || !apierrors.IsInvalid(err) {
		t.Fatalf("errors.Is/As do not see the failed object's error through ApplyError: %v", err)
	}
	herr := &HookError{Failed: []ObjectResult{{cause: ErrHookTimeout}}}
	if !errors.Is(herr, ErrHookFailed) || !errors.Is(herr, ErrHookTimeout) {
		t.Fatal("HookError hides ErrHookFailed or its hook's cause")
	}
}
