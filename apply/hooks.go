package apply

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// ErrHookFailed is wrapped by every *HookError.
var ErrHookFailed = errors.New("hook failed")

// ErrHookTimeout is the cause of a hook that did not finish in time.
var ErrHookTimeout = errors.New("hook timed out")

// HookError reports the hooks of a phase that failed or timed out.
type HookError struct {
	Phase  HookPhase
	Failed []ObjectResult
}

func (e *HookError) Error() string {
	msgs := make([]string, 0, len(e.Failed))
	for _, f := range e.Failed {
		msgs = append(msgs, fmt.Sprintf("%s: %s", f.Ref, f.Message))
	}
	return fmt.Sprintf("%s hook failed: %s", e.Phase, strings.Join(msgs, "; "))
}

// Unwrap returns ErrHookFailed, so that errors.Is(err, ErrHookFailed)
// matches, and then what each failed hook failed with.
func (e *HookError) Unwrap() []error { return append([]error{ErrHookFailed}, causes(e.Failed)...) }

// hooksOf returns the hooks of phase in the order they run: by weight,
// then Helm's kind order, then bundle order.
func (p *plan) hooksOf(phase HookPhase) []*object {
	var out []*object
	for _, h := range p.hooks {
		if h.hook.phases[phase] {
			out = append(out, h)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.hook.weight != b.hook.weight {
			return a.hook.weight < b.hook.weight
		}
		if ra, rb := kindRank(a.gk.Kind), kindRank(b.gk.Kind); ra != rb {
			return ra < rb
		}
		return a.index < b.index
	})
	return out
}

// runHooks runs the hooks of phase, a weight at a time; hooks of one weight
// run in parallel. It stops at the first weight with a failure and returns
// a *HookError then. Only the caller's context ending is returned as an
// error of its own.
func (r *run) runHooks(ctx context.Context, phase HookPhase) (*HookError, error) {
	hooks := r.plan.hooksOf(phase)
	if len(hooks) == 0 {
		return nil, nil
	}
	ctx, span := tracer().Start(ctx, "apply.hooks "+string(phase), trace.WithAttributes(attribute.Int("ferry.hooks", len(hooks))))
	defer span.End()
	for start := 0; start < len(hooks); {
		end := start + 1
		for end < len(hooks) && hooks[end].hook.weight == hooks[start].hook.weight {
			end++
		}
		group := hooks[start:end]
		results := make([]ObjectResult, len(group))
		var g errgroup.Group
		g.SetLimit(r.a.opts.Parallelism)
		for i, h := range group {
			g.Go(func() error {
				results[i] = r.runHook(ctx, h, phase)
				return nil
			})
		}
		_ = g.Wait()
		r.res.Hooks = append(r.res.Hooks, results...)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var failed []ObjectResult
		for _, res := range results {
			if res.Action == ActionFailed {
				failed = append(failed, res)
			}
		}
		if len(failed) > 0 {
			herr := &HookError{Phase: phase, Failed: failed}
			span.SetStatus(codes.Error, herr.Error())
			return herr, nil
		}
		start = end
	}
	return nil, nil
}

// runHook creates one hook, waits for a Job or Pod to finish, and deletes
// it as its policy says.
func (r *run) runHook(ctx context.Context, h *object, phase HookPhase) ObjectResult {
	res := ObjectResult{Ref: h.ref, Hook: phase}
	fail := func(err error) ObjectResult {
		res.Action, res.Message, res.cause = ActionFailed, err.Error(), err
		return res
	}
	if err := r.a.resolve(h); err != nil {
		return fail(err)
	}
	ri := r.a.resource(h)
	timeout := r.hookTimeout

	existed := false
	if name := h.u.GetName(); name != "" {
		live, err := ri.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return fail(apiError(err))
		case live.GetAnnotations()[v1alpha1.AnnotationApp] != r.app:
			// Only this app's own earlier hook is replaced: a live object
			// of the same kind and name is someone else's.
			owner := live.GetAnnotations()[v1alpha1.AnnotationApp]
			if owner == "" {
				owner = "no app of ferry's"
			} else {
				owner = "app " + owner
			}
			return fail(fmt.Errorf("%s %s exists and belongs to %s: a hook replaces only its own app's earlier hook", live.GetKind(), live.GetName(), owner))
		case h.hook.policy[deleteBeforeCreation]:
			if err := r.a.deleteAndWait(ctx, ri, live, timeout); err != nil {
				return fail(err)
			}
		default:
			existed = true
		}
	}

	var created *unstructured.Unstructured
	var err error
	if h.u.GetName() == "" {
		created, err = ri.Create(ctx, h.u, metav1.CreateOptions{FieldManager: FieldManager})
	} else {
		created, err = r.a.ssa(ctx, ri, h.u, false)
	}
	if err != nil {
		return fail(fmt.Errorf("apply failed: %w", apiError(err)))
	}
	res.Ref.Name = created.GetName()
	res.Action = ActionCreated
	if existed {
		res.Action = ActionConfigured
	}

	runErr := r.a.waitHook(ctx, ri, created, timeout)
	if ctx.Err() != nil {
		return fail(ctx.Err())
	}
	deleteIt := (runErr == nil && h.hook.policy[deleteOnSuccess]) || (runErr != nil && h.hook.policy[deleteOnFailure])
	note := ""
	if deleteIt {
		bg := metav1.DeletePropagationBackground
		uid := created.GetUID()
		err := ri.Delete(ctx, created.GetName(), metav1.DeleteOptions{PropagationPolicy: &bg, Preconditions: &metav1.Preconditions{UID: &uid}})
		switch {
		case err == nil || apierrors.IsNotFound(err):
			note = "; deleted by its deletion policy"
		default:
			note = "; deleting it failed: " + apiMessage(err)
		}
	}
	if runErr != nil {
		r := fail(runErr)
		r.Message += note
		return r
	}
	res.Message = fmt.Sprintf("%s hook succeeded%s", phase, note)
	return res
}

// waitHook waits until a Job or Pod hook has finished; other kinds are done
// once applied.
func (a *Applier) waitHook(ctx context.Context, ri dynamic.ResourceInterface, obj *unstructured.Unstructured, timeout time.Duration) error {
	if !isRunnable(obj) {
		return nil
	}
	var failure error
	last := "not started"
	err := wait.PollUntilContextTimeout(ctx, a.opts.PollInterval, timeout, true, func(ctx context.Context) (bool, error) {
		u, err := ri.Get(ctx, obj.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			failure = errors.New("deleted while running")
			return true, nil
		}
		if err != nil {
			if ctx.Err() == nil {
				last = apiMessage(err)
			}
			return false, nil
		}
		if u.GetUID() != obj.GetUID() {
			failure = errors.New("replaced while running")
			return true, nil
		}
		done, failed, msg := hookState(u)
		last = msg
		if failed {
			failure = errors.New(msg)
		}
		return done || failed, nil
	})
	switch {
	case failure != nil:
		return failure
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return fmt.Errorf("%w after %s: %s %s has not finished: %s", ErrHookTimeout, timeout, obj.GetKind(), obj.GetName(), last)
	}
	return nil
}

func isRunnable(u *unstructured.Unstructured) bool {
	gvk := u.GroupVersionKind()
	return (gvk.Group == "batch" && gvk.Kind == "Job") || (gvk.Group == "" && gvk.Kind == "Pod")
}

// hookState reads whether a Job or Pod finished, and how.
func hookState(u *unstructured.Unstructured) (done, failed bool, msg string) {
	if u.GetKind() == "Pod" {
		phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
		reason, _, _ := unstructured.NestedString(u.Object, "status", "message")
		switch phase {
		case "Succeeded":
			return true, false, "Pod succeeded"
		case "Failed":
			return false, true, strings.TrimSpace("Pod failed: " + reason)
		case "":
			return false, false, "Pod not scheduled"
		}
		return false, false, "Pod is " + phase
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["status"] != "True" {
			continue
		}
		switch m["type"] {
		case "Complete":
			return true, false, "Job complete"
		case "Failed":
			reason, _ := m["reason"].(string)
			message, _ := m["message"].(string)
			return false, true, strings.TrimSpace(fmt.Sprintf("Job failed: %s %s", reason, message))
		}
	}
	active, _, _ := unstructured.NestedInt64(u.Object, "status", "active")
	failedPods, _, _ := unstructured.NestedInt64(u.Object, "status", "failed")
	return false, false, fmt.Sprintf("Job running: %d active, %d failed", active, failedPods)
}

// deleteAndWait deletes live and waits until it is gone, so that a hook of
// the same name can be created again.
func (a *Applier) deleteAndWait(ctx context.Context, ri dynamic.ResourceInterface, live *unstructured.Unstructured, timeout time.Duration) error {
	bg := metav1.DeletePropagationBackground
	uid := live.GetUID()
	err := ri.Delete(ctx, live.GetName(), metav1.DeleteOptions{PropagationPolicy: &bg, Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting the previous hook failed: %w", apiError(err))
	}
	err = wait.PollUntilContextTimeout(ctx, a.opts.PollInterval/5+time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		u, err := ri.Get(ctx, live.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return err == nil && u.GetUID() != uid, nil
	})
	if err != nil {
		return fmt.Errorf("%w after %s: the previous hook %s is still being deleted", ErrHookTimeout, timeout, live.GetName())
	}
	return nil
}
