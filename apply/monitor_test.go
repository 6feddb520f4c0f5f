package apply

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// testMonitor is a running Monitor whose deliveries the test can see.
type testMonitor struct {
	*Monitor
	mu        sync.Mutex
	delivered []AppStatus
}

// startMonitor runs a Monitor until the test ends. then, if set, also
// receives every delivery (as a caller such as cmd would).
func startMonitor(t *testing.T, resync time.Duration, then ...func(AppStatus)) *testMonitor {
	t.Helper()
	tm := &testMonitor{}
	m, err := NewMonitor(testCfg, MonitorOptions{
		InventoryNamespace: inventoryNS, ResyncPeriod: resync, DriftGrace: 500 * time.Millisecond,
		OnStatus: func(_ context.Context, s AppStatus) {
			tm.mu.Lock()
			tm.delivered = append(tm.delivered, s)
			tm.mu.Unlock()
			for _, f := range then {
				f(s)
			}
		},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tm.Monitor = m
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Monitor.Start: %v", err)
		}
	})
	eventually(t, "monitor synced", func() (bool, string) { return m.HasSynced(), "not synced" })
	return tm
}

// wait polls the Monitor's status of app until pred holds.
func (m *testMonitor) wait(t *testing.T, app string, pred func(AppStatus) bool) AppStatus {
	t.Helper()
	var st AppStatus
	eventually(t, "monitor status of "+app, func() (bool, string) {
		var ok bool
		st, ok = m.Status(app)
		return ok && pred(st), fmt.Sprintf("%+v", st)
	})
	return st
}

func (m *testMonitor) deliveries(app string) []AppStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []AppStatus
	for _, s := range m.delivered {
		if s.App == app {
			out = append(out, s)
		}
	}
	return out
}

func driftStrings(ds []Drift) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.String())
	}
	return out
}

func TestDriftOfAFieldFerryOwns(t *testing.T) {
	for _, selfHeal := range []bool{false, true} {
		name := "is only reported without selfHeal"
		if selfHeal {
			name = "is reverted by a re-apply with selfHeal"
		}
		t.Run(name, func(t *testing.T) {
			a, _ := newApplier(t)
			ns := newNamespace(t)
			opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns, SkipHooks: true}
			bundle := objects(t, configMap("cfg", map[string]string{"mode": "git"}, nil), configMap("calm", nil, nil))
			heals := make(chan *Result, 10)
			mon := startMonitor(t, time.Hour, func(s AppStatus) {
				// What cmd does: re-apply the last bundle, no render.
				if selfHeal && s.App == opts.App && s.OutOfSync() {
					res, err := a.Sync(context.Background(), opts, bundle)
					if err == nil {
						heals <- res
					}
				}
			})
			mustSync(t, a, opts, bundle)
			mon.wait(t, opts.App, func(s AppStatus) bool { return s.Health.Status == HealthHealthy && !s.Syncing })

			// kubectl edit: an update by another manager.
			if _, err := testDyn.Resource(cmGVR).Namespace(ns).Patch(t.Context(), "cfg", types.MergePatchType,
				[]byte(`{"data":{"mode":"edited"}}`), metav1.PatchOptions{FieldManager: "kubectl-edit"}); err != nil {
				t.Fatal(err)
			}

			want := []string{"ConfigMap/" + ns + "/cfg modified by [kubectl-edit]"}
			if !selfHeal {
				st := mon.wait(t, opts.App, func(s AppStatus) bool { return s.OutOfSync() })
				if d := cmp.Diff(want, driftStrings(st.Drift)); d != "" {
					t.Errorf("drift (-want +got):\n%s", d)
				}
				if v := get(t, cmGVR, ns, "cfg").Object["data"].(map[string]any)["mode"]; v != "edited" {
					t.Errorf("data.mode = %v; nothing should have reverted it", v)
				}
				return
			}
			var healed *Result
			select {
			case healed = <-heals:
			case <-time.After(60 * time.Second):
				t.Fatal("no self-heal re-apply happened")
			}
			diffActions(t, map[string]Action{"ConfigMap/" + ns + "/cfg": ActionConfigured, "ConfigMap/" + ns + "/calm": ActionUnchanged}, healed)
			if v := get(t, cmGVR, ns, "cfg").Object["data"].(map[string]any)["mode"]; v != "git" {
				t.Errorf("data.mode = %v after self-heal, want git", v)
			}
			mon.wait(t, opts.App, func(s AppStatus) bool { return !s.OutOfSync() && !s.Syncing })
			var reported []string
			for _, s := range mon.deliveries(opts.App) {
				if s.OutOfSync() {
					reported = driftStrings(s.Drift)
				}
			}
			if d := cmp.Diff(want, reported); d != "" {
				t.Errorf("reported drift (-want +got):\n%s", d)
			}
		})
	}
}

func TestDeletedObjectIsDriftAndIsRecreated(t *testing.T) {
	a, _ := newApplier(t)
	ns := newNamespace(t)
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns, SkipHooks: true}
	bundle := objects(t, configMap("cfg", nil, nil))
	mon := startMonitor(t, time.Hour)
	mustSync(t, a, opts, bundle)
	mon.wait(t, opts.App, func(s AppStatus) bool { return s.Health.Status == HealthHealthy && !s.Syncing })

	if err := testDyn.Resource(cmGVR).Namespace(ns).Delete(t.Context(), "cfg", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	st := mon.wait(t, opts.App, func(s AppStatus) bool { return s.OutOfSync() })
	if d := cmp.Diff([]string{"ConfigMap/" + ns + "/cfg deleted"}, driftStrings(st.Drift)); d != "" {
		t.Errorf("drift (-want +got):\n%s", d)
	}
	if st.Health.Status != HealthMissing {
		t.Errorf("health = %s, want %s", st.Health.Status, HealthMissing)
	}

	res := mustSync(t, a, opts, bundle)
	diffActions(t, map[string]Action{"ConfigMap/" + ns + "/cfg": ActionCreated}, res)
	mon.wait(t, opts.App, func(s AppStatus) bool { return !s.OutOfSync() && s.Health.Status == HealthHealthy })
}

func TestReplicaChangeByAnAutoscalerIsNotDrift(t *testing.T) {
	a, log := newApplier(t)
	ns := newNamespace(t)
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns}
	// As with an HPA, Git leaves replicas to the autoscaler.
	bundle := objects(t, deployment("web", "", "nginx:1"))
	mon := startMonitor(t, time.Hour)
	mustSync(t, a, opts, bundle)

	// The HPA controller writes the scale subresource.
	scale := `{"spec":{"replicas":3}}`
	if _, err := testDyn.Resource(deployGVR).Namespace(ns).Patch(t.Context(), "web", types.MergePatchType, []byte(scale),
		metav1.PatchOptions{FieldManager: "horizontal-pod-autoscaler"}, "scale"); err != nil {
		t.Fatal(err)
	}
	// Once the Monitor sees 3 replicas wanted (none can run here), it has
	// assessed drift on the scaled object too.
	st := mon.wait(t, opts.App, func(s AppStatus) bool {
		return s.Health.Status == HealthProgressing && !s.Syncing && len(s.Health.Resources) == 1 &&
			s.Health.Resources[0].Message != "" && strings.Contains(s.Health.Resources[0].Message, "/3")
	})
	if len(st.Drift) != 0 {
		t.Errorf("drift = %v, want none", driftStrings(st.Drift))
	}

	log.reset()
	res := mustSync(t, a, opts, bundle)
	if !res.Noop || len(log.writes()) != 0 {
		t.Errorf("sync after scaling: Noop = %v, writes = %v; want a no-op", res.Noop, log.writes())
	}
	if r := get(t, deployGVR, ns, "web").Object["spec"].(map[string]any)["replicas"]; r != int64(3) {
		t.Errorf("replicas = %v after sync, want the autoscaler's 3", r)
	}
}

func TestMonitorDeliversAgainAtResync(t *testing.T) {
	a, _ := newApplier(t)
	ns := newNamespace(t)
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns}
	mustSync(t, a, opts, objects(t, configMap("cfg", nil, nil)))
	mon := startMonitor(t, 200*time.Millisecond)
	eventually(t, "a resync delivery", func() (bool, string) {
		for _, s := range mon.deliveries(opts.App) {
			if s.Resync {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d deliveries, none a resync", len(mon.deliveries(opts.App)))
	})
}
