package apply

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

func hookJob(name, phase, policy string) string {
	return fmt.Sprintf(`apiVersion: batch/v1
kind: Job
metadata:
  name: %s
  annotations:
    ferry.dev/hook: %s
    ferry.dev/hook-delete-policy: %q
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: run
        image: busybox:1
        command: ["true"]
`, name, phase, policy)
}

// completeJob sets a Job's status as its controller does when the Job
// succeeded; there is no kubelet to run it.
func completeJob(t *testing.T, ns, name string) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		u := get(t, jobGVR, ns, name)
		if u == nil {
			return fmt.Errorf("job %s/%s is gone", ns, name)
		}
		now := time.Now().UTC().Format(time.RFC3339)
		start, _, _ := unstructured.NestedString(u.Object, "status", "startTime")
		if start == "" {
			start = now
		}
		cond := func(typ string) map[string]any {
			return map[string]any{"type": typ, "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods",
				"lastProbeTime": now, "lastTransitionTime": now}
		}
		u.Object["status"] = map[string]any{
			"startTime": start, "completionTime": now, "succeeded": int64(1), "active": int64(0), "ready": int64(0), "terminating": int64(0),
			"uncountedTerminatedPods": map[string]any{},
			"conditions":              []any{cond("SuccessCriteriaMet"), cond("Complete")},
		}
		_, err := testDyn.Resource(jobGVR).Namespace(ns).UpdateStatus(t.Context(), u, metav1.UpdateOptions{FieldManager: "test"})
		return err
	})
	if err != nil {
		t.Fatalf("completing job: %v", err)
	}
}

func hookCM(name, phase string) string {
	return configMap(name, nil, map[string]string{v1alpha1.AnnotationHook: phase})
}

func TestPreSyncHookRunsFirst(t *testing.T) {
	a, log := newApplier(t)
	ns := newNamespace(t)
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns}
	bundle := objects(t, configMap("main", nil, nil), hookCM("pre", "PreSync"), hookCM("on-fail", "SyncFail"))

	res := mustSync(t, a, opts, bundle)
	pre := log.index(`^PATCH .*/configmaps/pre$`)
	main := log.index(`^PATCH .*/configmaps/main$`)
	if pre < 0 || main < 0 || pre > main {
		t.Errorf("PreSync hook applied at request %d, main object at %d; want the hook first:\n%s", pre, main, strings.Join(log.all(), "\n"))
	}
	var hooks []string
	for _, h := range res.Hooks {
		hooks = append(hooks, fmt.Sprintf("%s %s %s", h.Hook, h.Ref.Name, h.Action))
	}
	if d := cmp.Diff([]string{"PreSync pre created"}, hooks); d != "" {
		t.Errorf("hooks (-want +got):\n%s", d)
	}
	if get(t, cmGVR, ns, "on-fail") != nil {
		t.Error("a SyncFail hook ran on success")
	}
	inv, err := a.Inventory(t.Context(), opts.App)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range inv.Entries {
		if e.Name != "main" {
			t.Errorf("inventory holds %s; hooks are never in it", e.Ref())
		}
	}

	// The same bundle again: the hooks ran for it already.
	log.reset()
	res = mustSync(t, a, opts, bundle)
	if d := cmp.Diff([]string(nil), log.writes()); d != "" {
		t.Errorf("writes of a repeated sync (-want +got):\n%s", d)
	}
	if len(res.Hooks) != 0 {
		t.Errorf("hooks ran again: %v", res.Hooks)
	}
}

func TestPreSyncJobThatNeverCompletesFailsTheSync(t *testing.T) {
	a, _ := newApplier(t)
	ns := newNamespace(t)
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns, Prune: true, HookTimeout: 2 * time.Second}
	mustSync(t, a, opts, objects(t, configMap("old", nil, nil)))

	bundle := objects(t, configMap("main", nil, nil), hookJob("migrate", "PreSync", ""), hookCM("on-fail", "SyncFail"))
	res, err := a.Sync(t.Context(), opts, bundle)
	if err != nil {
		t.Fatal(err)
	}
	var herr *HookError
	if !errors.As(res.Err, &herr) || !errors.Is(res.Err, ErrHookFailed) {
		t.Fatalf("Result.Err = %v, want a *HookError", res.Err)
	}
	if herr.Phase != HookPreSync || len(herr.Failed) != 1 || !errors.Is(herr.Failed[0].cause, ErrHookTimeout) {
		t.Errorf("hook error = %+v, want the PreSync Job timed out", herr)
	}
	t.Logf("reported: %v", res.Err)
	if get(t, cmGVR, ns, "main") != nil {
		t.Error("a main object was applied after a failed PreSync hook")
	}
	if get(t, cmGVR, ns, "old") == nil {
		t.Error("a failed PreSync hook pruned")
	}
	if get(t, cmGVR, ns, "on-fail") == nil {
		t.Error("the SyncFail hook did not run")
	}
	if IsTransient(res.Err) {
		t.Error("IsTransient(hook timeout) = true, want false")
	}
	_, names := inventoryNames(t, a, opts.App)
	if d := cmp.Diff([]string{"old"}, names); d != "" {
		t.Errorf("inventory (-want +got):\n%s", d)
	}
}

func TestJobHookThatCompletesLetsTheSyncGoOn(t *testing.T) {
	a, _ := newApplier(t)
	ns := newNamespace(t)
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns, HookTimeout: 60 * time.Second}
	bundle := objects(t, configMap("main", nil, nil), hookJob("migrate", "PreSync", "HookSucceeded"))

	type out struct {
		res *Result
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := a.Sync(t.Context(), opts, bundle)
		done <- out{res, err}
	}()
	eventually(t, "hook Job created", func() (bool, string) { return get(t, jobGVR, ns, "migrate") != nil, "no Job yet" })
	if get(t, cmGVR, ns, "main") != nil {
		t.Error("the main object was applied while the PreSync Job ran")
	}
	completeJob(t, ns, "migrate")

	var o out
	select {
	case o = <-done:
	case <-time.After(90 * time.Second):
		t.Fatal("Sync did not return after the Job completed")
	}
	if o.err != nil || o.res.Err != nil {
		t.Fatalf("Sync = %v, %v", o.err, o.res.Err)
	}
	diffActions(t, map[string]Action{"ConfigMap/" + ns + "/main": ActionCreated}, o.res)
	if len(o.res.Hooks) != 1 || o.res.Hooks[0].Action != ActionCreated || !strings.Contains(o.res.Hooks[0].Message, "deleted") {
		t.Errorf("hook results = %+v, want the Job created, succeeded and deleted", o.res.Hooks)
	}
	eventually(t, "HookSucceeded Job deleted", func() (bool, string) { return get(t, jobGVR, ns, "migrate") == nil, "still there" })
}

func TestHookIsReplacedBeforeCreation(t *testing.T) {
	a, _ := newApplier(t)
	ns := newNamespace(t)
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns}
	mustSync(t, a, opts, objects(t, configMap("main", map[string]string{"v": "1"}, nil), hookCM("pre", "PreSync")))
	first := get(t, cmGVR, ns, "pre").GetUID()
	mustSync(t, a, opts, objects(t, configMap("main", map[string]string{"v": "2"}, nil), hookCM("pre", "PreSync")))
	if second := get(t, cmGVR, ns, "pre").GetUID(); second == first {
		t.Error("the hook was not deleted and created again (BeforeHookCreation)")
	}
}

func TestHookReplacesOnlyItsOwnApps(t *testing.T) {
	a, _ := newApplier(t)
	ns := newNamespace(t)
	// A live ConfigMap of the hook's name that another app (or a person)
	// owns: the hook must not delete it.
	for owner, ann := range map[string]map[string]string{
		"another app": {v1alpha1.AnnotationApp: "ferry/someone-else"},
		"nobody":      nil,
	} {
		t.Run("refuses to replace an object of "+owner, func(t *testing.T) {
			name := uniqueName(t)
			live := objects(t, configMap(name, map[string]string{"keep": "me"}, ann))[0]
			if _, err := testDyn.Resource(cmGVR).Namespace(ns).Create(t.Context(), live, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			uid := get(t, cmGVR, ns, name).GetUID()
			opts := SyncOptions{App: inventoryNS + "/" + uniqueName(t), Namespace: ns}
			res, err := a.Sync(t.Context(), opts, objects(t, configMap("main-"+name, nil, nil), hookCM(name, "PreSync")))
			if err != nil {
				t.Fatal(err)
			}
			if !errors.Is(res.Err, ErrHookFailed) || !strings.Contains(res.Err.Error(), "a hook replaces only its own app's earlier hook") {
				t.Fatalf("sync outcome %v; want the hook refused", res.Err)
			}
			if got := get(t, cmGVR, ns, name); got == nil || got.GetUID() != uid {
				t.Error("the other owner's object was replaced")
			}
		})
	}
}

func TestPostSyncHooksWaitForHealth(t *testing.T) {
	a, log := newApplier(t)
	ns := newNamespace(t)
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns}
	bundle := objects(t, deployment("web", "0", "nginx:1"), hookCM("post", "PostSync"))

	mon := startMonitor(t, time.Hour)
	res := mustSync(t, a, opts, bundle)
	if !res.PostSyncPending {
		t.Fatal("Result.PostSyncPending = false, want true")
	}
	if get(t, cmGVR, ns, "post") != nil {
		t.Fatal("the PostSync hook ran before the app was healthy")
	}

	// The caller waits for the Monitor, not in the sync.
	st := mon.wait(t, opts.App, func(s AppStatus) bool { return s.Health.Status == HealthHealthy && s.PostSyncPending })
	t.Logf("monitor: %s, PostSync pending", st.Health.Status)
	post, err := a.RunPostSync(t.Context(), opts, bundle)
	if err != nil {
		t.Fatal(err)
	}
	if post.Err != nil || len(post.Hooks) != 1 || post.Hooks[0].Hook != HookPostSync {
		t.Fatalf("RunPostSync = %+v", post)
	}
	if get(t, cmGVR, ns, "post") == nil {
		t.Error("the PostSync hook was not applied")
	}
	if _, err := a.RunPostSync(t.Context(), opts, bundle); !errors.Is(err, ErrNoPostSyncPending) {
		t.Errorf("second RunPostSync error = %v, want ErrNoPostSyncPending", err)
	}
	mon.wait(t, opts.App, func(s AppStatus) bool { return !s.PostSyncPending })

	log.reset()
	res = mustSync(t, a, opts, bundle)
	if res.PostSyncPending || len(log.writes()) != 0 {
		t.Errorf("a repeated sync: PostSyncPending = %v, writes = %v; want false and none", res.PostSyncPending, log.writes())
	}
}

func TestRunPostSyncRefusesAnUnhealthyApp(t *testing.T) {
	a, _ := newApplier(t)
	ns := newNamespace(t)
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns}
	// One replica never becomes available: there is no kubelet.
	bundle := objects(t, deployment("web", "1", "nginx:1"), hookCM("post", "PostSync"))
	mustSync(t, a, opts, bundle)
	if _, err := a.RunPostSync(t.Context(), opts, bundle); !errors.Is(err, ErrNotHealthy) {
		t.Errorf("RunPostSync error = %v, want ErrNotHealthy", err)
	}
	if get(t, cmGVR, ns, "post") != nil {
		t.Error("the PostSync hook ran")
	}
}

func TestFailedSyncDropsPendingPostSync(t *testing.T) {
	a, _ := newApplier(t)
	ns := newNamespace(t)
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns}
	bundle := objects(t, configMap("cfg", nil, nil), hookCM("post", "PostSync"))
	if res := mustSync(t, a, opts, bundle); !res.PostSyncPending {
		t.Fatal("Result.PostSyncPending = false, want true")
	}
	res, err := a.Sync(t.Context(), opts, objects(t, configMap("cfg", map[string]string{"bad key!": "x"}, nil), hookCM("post", "PostSync")))
	if err != nil || res.Err == nil {
		t.Fatalf("Sync of an invalid object = %v, %v; want a failed outcome", err, res.Err)
	}
	if _, err := a.RunPostSync(t.Context(), opts, bundle); !errors.Is(err, ErrNoPostSyncPending) {
		t.Errorf("RunPostSync of the replaced bundle: error = %v, want ErrNoPostSyncPending", err)
	}
}
