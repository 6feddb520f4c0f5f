package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ferrycd/ferry/apply"
	"github.com/ferrycd/ferry/ingest"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
	"github.com/ferrycd/ferry/render"
	"github.com/ferrycd/ferry/worker"
)

// roles runs the render and apply libraries behind the worker's consumers.
type roles struct {
	apps     *appStore
	renderer *render.Renderer
	git      *render.GitCache
	applier  *apply.Applier
	status   conditionWriter
	// namespace is ferry's own: where child Applications go.
	namespace string
	metrics   *metrics
	// statuses, when set, reports each sync as a commit status.
	statuses *ingest.CommitStatus
	log      *slog.Logger
}

var (
	_ worker.Renderer = (*roles)(nil)
	_ worker.Applier  = (*roles)(nil)
)

func triggerName(t ferryv1.Trigger) string {
	switch t {
	case ferryv1.Trigger_TRIGGER_PUSH:
		return "push"
	case ferryv1.Trigger_TRIGGER_POLL:
		return "poll"
	case ferryv1.Trigger_TRIGGER_MANUAL:
		return "manual"
	case ferryv1.Trigger_TRIGGER_DRIFT:
		return "drift"
	case ferryv1.Trigger_TRIGGER_ROLLBACK:
		return "rollback"
	case ferryv1.Trigger_TRIGGER_APP_CHANGED:
		return "app-changed"
	case ferryv1.Trigger_TRIGGER_RETRY:
		return "retry"
	}
	return "unknown"
}

// Render renders the app a sync request names. A failure caused by the
// sources is recorded in the app's status and, under the app's retry
// policy, tried again later; a network failure is retried by the worker.
func (r *roles) Render(ctx context.Context, req *ferryv1.SyncRequest) (*ferryv1.RenderResult, error) {
	ns, name := req.GetApp().GetNamespace(), req.GetApp().GetName()
	app, err := r.apps.Get(ns, name)
	if apierrors.IsNotFound(err) {
		return nil, worker.Terminal(fmt.Errorf("application %s/%s no longer exists", ns, name))
	}
	if err != nil {
		return nil, err
	}
	if app.Spec.Suspend {
		r.log.InfoContext(ctx, "app is suspended; sync skipped", "app", ns+"/"+name, "trigger", triggerName(req.GetTrigger()))
		r.condition(ctx, app, v1alpha1.ConditionSuspended, "the app is suspended: it neither syncs nor self-heals until spec.suspend is cleared")
		return nil, worker.ErrSkip
	}
	r.condition(ctx, app, v1alpha1.ConditionSuspended, "")
	r.condition(ctx, app, v1alpha1.ConditionUnsupportedFields, unsupportedMessage(app))
	started := time.Now()
	if err := checkDestination(app.Spec.Destination); err != nil {
		r.condition(ctx, app, v1alpha1.ConditionInvalidSpec, err.Error())
		return nil, worker.Terminal(r.failed(ctx, app, req.GetRevision(), req.GetTrigger(), started, nil, err))
	}
	r.condition(ctx, app, v1alpha1.ConditionInvalidSpec, "")
	if r.stale(ctx, app, req) {
		return nil, worker.ErrSkip
	}
	r.report(app, req.GetRepoUrl(), req.GetRevision(), ingest.StatePending, "ferry is syncing "+app.Name)
	rr, err := r.renderer.RenderWithInputs(ctx, render.Request{App: app, RepoURL: req.GetRepoUrl(), Revision: req.GetRevision()})
	r.metrics.observe("render", started, err)
	if err != nil {
		err = fmt.Errorf("render failed: %w", err)
		if render.IsTransient(err) {
			return nil, r.unavailable(ctx, app, req.GetRevision(), req.GetTrigger(), started, err)
		}
		return nil, r.retryOrFail(ctx, app, req.GetRevision(), req.GetTrigger(), started, nil, err)
	}
	out := &ferryv1.RenderResult{Bundle: rr.Bundle, Revision: rr.Revision}
	for _, in := range rr.Inputs {
		out.Inputs = append(out.Inputs, &ferryv1.InputPath{RepoUrl: in.RepoURL, Path: in.Path, Shallow: in.Shallow})
	}
	return out, nil
}

// stale reports whether a push or poll asks for a commit older than the one
// the app already runs (a late redelivery, say): newest wins, so the job
// is dropped rather than rolling the app back. Rollbacks are asked for on
// purpose, through their own trigger.
func (r *roles) stale(ctx context.Context, app *v1alpha1.Application, req *ferryv1.SyncRequest) bool {
	t := req.GetTrigger()
	current := app.Status.Sync.Revision
	if (t != ferryv1.Trigger_TRIGGER_PUSH && t != ferryv1.Trigger_TRIGGER_POLL) || req.GetRevision() == "" || current == "" || current == req.GetRevision() {
		return false
	}
	for _, src := range app.Spec.AllSources() {
		if v1alpha1.NormalizeRepoURL(src.RepoURL) != v1alpha1.NormalizeRepoURL(req.GetRepoUrl()) {
			continue
		}
		older, err := r.git.IsAncestor(ctx, src.RepoURL, req.GetRevision(), current)
		if err != nil {
			r.log.WarnContext(ctx, "could not tell whether a pushed commit is older than the running one", "app", app.Namespace+"/"+app.Name, "error", err)
			return false
		}
		if older {
			r.log.InfoContext(ctx, "pushed commit is older than the one the app runs; skipped", "app", app.Namespace+"/"+app.Name, "current", current)
		}
		return older
	}
	return false
}

// unavailable handles a failure of what a sync depends on rather than of
// the app (the git server unreachable, the API server down): the app shows
// it in its status and the job is tried again, with a backoff capped at a
// minute, for as long as it takes. Giving up would lose the revision: the
// head is already recorded as dispatched. A newer request replaces it.
func (r *roles) unavailable(ctx context.Context, app *v1alpha1.Application, revision string, trigger ferryv1.Trigger, started time.Time, cause error) error {
	attempt := worker.Delivery(ctx)
	d := min(time.Second<<min(attempt-1, 6), time.Minute)
	msg := fmt.Sprintf("waiting for a dependency, retrying in %s (attempt %d): %v", d, attempt, cause)
	r.log.WarnContext(ctx, "sync cannot proceed; retrying", "app", app.Namespace+"/"+app.Name, "attempt", attempt, "retry_in", d, "error", cause)
	r.running(ctx, app, revision, trigger, started, msg, cause)
	return worker.RetryAfter(cause, d)
}

// running shows a sync that will be tried again: its operation is Running
// with msg, and lastError holds the cause.
func (r *roles) running(ctx context.Context, app *v1alpha1.Application, revision string, trigger ferryv1.Trigger, started time.Time, msg string, cause error) {
	err := r.status.update(ctx, app.Namespace, app.Name, func(st *v1alpha1.ApplicationStatus) {
		st.OperationState = &v1alpha1.OperationState{
			Phase: v1alpha1.PhaseRunning, Message: msg, Revision: revision, Trigger: triggerName(trigger),
			StartedAt: metav1.NewTime(started),
		}
		st.LastError = cause.Error()
	})
	if err != nil {
		r.log.WarnContext(ctx, "could not record a sync that waits", "app", app.Namespace+"/"+app.Name, "error", err)
	}
}

// retryOrFail retries a failed sync under the app's retry policy, noting
// the retry in the operation state, or records the failure for good.
func (r *roles) retryOrFail(ctx context.Context, app *v1alpha1.Application, revision string, trigger ferryv1.Trigger, started time.Time, res *apply.Result, cause error) error {
	attempt := worker.Delivery(ctx)
	if d, ok := retryDelay(app, attempt); ok {
		msg := fmt.Sprintf("retrying in %s (attempt %d failed): %v", d, attempt, cause)
		r.log.WarnContext(ctx, "sync failed; retrying under the app's retry policy", "app", app.Namespace+"/"+app.Name, "attempt", attempt, "retry_in", d, "error", cause)
		r.running(ctx, app, revision, trigger, started, msg, cause)
		return worker.RetryAfter(cause, d)
	}
	if attempt > 1 {
		cause = fmt.Errorf("%w (gave up after %d attempts)", cause, attempt)
	}
	return worker.Terminal(r.failed(ctx, app, revision, trigger, started, res, cause))
}

// report sets the commit status of the sync, when statuses are on.
func (r *roles) report(app *v1alpha1.Application, repoURL, revision, state, description string) {
	if r.statuses == nil {
		return
	}
	if repoURL == "" {
		if srcs := app.Spec.AllSources(); len(srcs) > 0 {
			repoURL = srcs[0].RepoURL
		}
	}
	r.statuses.Report(app.Namespace, app.Name, repoURL, revision, state, description)
}

// failed records a failed sync in the app's status and returns cause.
func (r *roles) failed(ctx context.Context, app *v1alpha1.Application, revision string, trigger ferryv1.Trigger, started time.Time, res *apply.Result, cause error) error {
	r.report(app, "", revision, ingest.StateFailure, cause.Error())
	rec := apply.SyncRecord{
		Revision: revision, Trigger: triggerName(trigger), TraceID: traceID(ctx),
		StartedAt: started, FinishedAt: time.Now(), Result: res, Err: cause, Generation: app.Generation,
	}
	if err := apply.RecordSync(ctx, r.applier.Dynamic(), app.Namespace, app.Name, rec); err != nil {
		r.log.WarnContext(ctx, "could not record a failed sync", "app", app.Namespace+"/"+app.Name, "error", err)
	}
	return cause
}

// condition sets (message non-empty) or clears a condition, writing only
// when that changes something.
func (r *roles) condition(ctx context.Context, app *v1alpha1.Application, typ, message string) {
	i := slices.IndexFunc(app.Status.Conditions, func(c v1alpha1.Condition) bool { return c.Type == typ })
	if (i < 0 && message == "") || (i >= 0 && app.Status.Conditions[i].Message == message) {
		return
	}
	if err := r.status.update(ctx, app.Namespace, app.Name, func(st *v1alpha1.ApplicationStatus) { setCondition(st, typ, message) }); err != nil {
		r.log.WarnContext(ctx, "could not set condition", "app", app.Namespace+"/"+app.Name, "condition", typ, "error", err)
	}
}

func unsupportedMessage(app *v1alpha1.Application) string {
	fields := app.Annotations[v1alpha1.AnnotationUnsupported]
	if fields == "" {
		return ""
	}
	return "ferry does not support these fields of the Argo CD Application yet, and ignores them: " + strings.ReplaceAll(fields, ",", ", ")
}

// childApplications rewrites the Application documents among objs (ferry's
// or Argo CD's) into ferry Applications in ferry's namespace, so that app
// of apps works and no argoproj.io object reaches the cluster.
func (r *roles) childApplications(ctx context.Context, objs []*unstructured.Unstructured) error {
	for _, o := range objs {
		if !v1alpha1.IsApplication(o.GetAPIVersion(), o.GetKind()) {
			continue
		}
		child, unsupported, err := v1alpha1.ChildApplication(o.Object, r.namespace)
		if err != nil {
			return err
		}
		if len(unsupported) > 0 {
			r.log.InfoContext(ctx, "child application has fields ferry does not support", "app", o.GetName(), "fields", unsupported)
		}
		o.Object = child
	}
	return nil
}

// Apply applies a rendered bundle and records the outcome in the status:
// a full sync (hooks, stages, prune), the pending PostSync phase, or a
// self-heal re-apply of the last bundle without hooks.
func (r *roles) Apply(ctx context.Context, req *ferryv1.ApplyRequest, b *ferryv1.Bundle) (*ferryv1.SyncResult, error) {
	ns, name := req.GetApp().GetNamespace(), req.GetApp().GetName()
	app, err := r.apps.Get(ns, name)
	if apierrors.IsNotFound(err) {
		return nil, worker.Terminal(fmt.Errorf("application %s/%s no longer exists", ns, name))
	}
	if err != nil {
		return nil, err
	}
	if app.Spec.Suspend {
		return nil, worker.ErrSkip
	}
	started := time.Now()
	objs, err := apply.Decode(b.GetObjects())
	if err != nil {
		return nil, worker.Terminal(fmt.Errorf("bundle %s: %w", b.GetHash(), err))
	}
	if err := r.childApplications(ctx, objs); err != nil {
		return nil, r.retryOrFail(ctx, app, req.GetRevision(), req.GetTrigger(), started, nil, err)
	}
	opts := apply.SyncOptionsFor(app)
	opts.Revision = req.GetRevision()
	opts.SkipHooks = req.GetTrigger() == ferryv1.Trigger_TRIGGER_DRIFT
	var res *apply.Result
	if req.GetPostSync() {
		res, err = r.applier.RunPostSync(ctx, opts, objs)
		if errors.Is(err, apply.ErrNoPostSyncPending) || errors.Is(err, apply.ErrNotHealthy) {
			return nil, worker.ErrSkip
		}
	} else {
		res, err = r.applier.Sync(ctx, opts, objs)
	}
	r.metrics.observe("apply", started, err)
	if err != nil {
		return nil, r.unavailable(ctx, app, req.GetRevision(), req.GetTrigger(), started, err)
	}
	applyErr := res.Err
	for _, o := range res.Objects {
		r.metrics.objects.WithLabelValues(string(o.Action)).Inc()
	}
	if applyErr != nil && apply.IsTransient(applyErr) {
		// Objects the API server could not take for now (timeouts, too
		// many requests): the same wait as for an unreachable server.
		return nil, r.unavailable(ctx, app, req.GetRevision(), req.GetTrigger(), started, applyErr)
	}
	if applyErr != nil {
		if _, ok := retryDelay(app, worker.Delivery(ctx)); ok {
			return nil, r.retryOrFail(ctx, app, req.GetRevision(), req.GetTrigger(), started, res, applyErr)
		}
		if worker.Delivery(ctx) > 1 {
			applyErr = fmt.Errorf("%w (gave up after %d attempts)", applyErr, worker.Delivery(ctx))
		}
	}
	if res.Noop && applyErr == nil && (req.GetTrigger() == ferryv1.Trigger_TRIGGER_DRIFT || app.Status.Sync.BundleHash == b.GetHash()) &&
		app.Status.Sync.Status == v1alpha1.SyncStatusSynced && app.Status.Sync.Revision == req.GetRevision() {
		// Nothing changed and the status already says so: no write at all.
		r.log.DebugContext(ctx, "sync changed nothing", "app", ns+"/"+name)
		return r.result(req, started, time.Now(), traceID(ctx), res, nil), nil
	}
	sc := trace.SpanContextFromContext(ctx)
	rec := apply.SyncRecord{
		Revision: req.GetRevision(), Trigger: applyTrigger(req), TraceID: traceID(ctx), SpanID: sc.SpanID().String(),
		BundleHash: b.GetHash(), StartedAt: started, FinishedAt: time.Now(), Result: res, Err: applyErr, Generation: app.Generation,
	}
	if len(req.GetInputs()) > 0 || req.GetTrigger() != ferryv1.Trigger_TRIGGER_DRIFT && !req.GetPostSync() {
		rec.Inputs = []v1alpha1.InputPath{}
		for _, in := range req.GetInputs() {
			rec.Inputs = append(rec.Inputs, v1alpha1.InputPath{RepoURL: in.GetRepoUrl(), Path: in.GetPath(), Shallow: in.GetShallow()})
		}
	}
	if err := apply.RecordSync(ctx, r.applier.Dynamic(), ns, name, rec); err != nil {
		return nil, err
	}
	if req.GetRequestedAt() != nil {
		r.metrics.observe("sync", req.GetRequestedAt().AsTime(), applyErr)
	}
	if applyErr != nil {
		r.report(app, req.GetRepoUrl(), req.GetRevision(), ingest.StateFailure, applyErr.Error())
	} else if !req.GetPostSync() && req.GetTrigger() != ferryv1.Trigger_TRIGGER_DRIFT {
		r.report(app, req.GetRepoUrl(), req.GetRevision(), ingest.StateSuccess, fmt.Sprintf("synced %d objects", len(res.Objects)))
	}
	out := r.result(req, started, rec.FinishedAt, rec.TraceID, res, applyErr)
	r.log.InfoContext(ctx, "sync finished", "app", ns+"/"+name, "revision", req.GetRevision(), "phase", out.Phase.String(),
		"objects", len(res.Objects), "trigger", applyTrigger(req), "duration", rec.FinishedAt.Sub(started))
	return out, nil
}

// applyTrigger names what an apply job does, for the history.
func applyTrigger(req *ferryv1.ApplyRequest) string {
	if req.GetPostSync() {
		return "postsync"
	}
	return triggerName(req.GetTrigger())
}

func (r *roles) result(req *ferryv1.ApplyRequest, started, finished time.Time, trace string, res *apply.Result, applyErr error) *ferryv1.SyncResult {
	out := &ferryv1.SyncResult{
		App: req.GetApp(), Revision: req.GetRevision(), Phase: ferryv1.SyncPhase_SYNC_PHASE_SUCCEEDED,
		StartedAt: timestamppb.New(started), FinishedAt: timestamppb.New(finished),
		TraceId: trace, Trigger: req.GetTrigger(), DeliveryId: req.GetDeliveryId(),
	}
	if applyErr != nil {
		out.Phase = ferryv1.SyncPhase_SYNC_PHASE_FAILED
		out.Message = applyErr.Error()
	}
	for _, o := range append(append([]apply.ObjectResult(nil), res.Objects...), res.Hooks...) {
		out.Resources = append(out.Resources, &ferryv1.ResourceResult{
			Group: o.Ref.Group, Version: o.Ref.Version, Kind: o.Ref.Kind, Namespace: o.Ref.Namespace,
			Name: o.Ref.Name, Action: string(o.Action), Message: o.Message,
		})
	}
	return out
}

func traceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}
