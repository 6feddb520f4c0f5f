package apply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
	"github.com/ferrycd/ferry/proto/job"
)

// AppGetter reads an Application, from a cache. It returns an error that
// apierrors.IsNotFound recognises when the app does not exist.
type AppGetter interface {
	Get(namespace, name string) (*v1alpha1.Application, error)
}

// ProjectGetter reads a Project of ferry's namespace, from a cache. It
// returns an error that apierrors.IsNotFound recognises when there is none.
type ProjectGetter interface {
	Project(name string) (*v1alpha1.Project, error)
}

// Metrics observes what the apply role does; nil observes nothing.
type Metrics interface {
	// ObserveStage records how long a stage (render, apply, or the whole
	// sync from request to result) took and whether it failed.
	ObserveStage(stage string, started time.Time, err error)
	// ObjectHandled counts one object handled by a sync.
	ObjectHandled(action Action)
}

// unavailableBackoff spaces the tries of a sync whose dependency (the git
// server, the API server) is down: it waits for as long as that takes.
var unavailableBackoff = job.Backoff{First: time.Second, Factor: 2, Max: time.Minute}

// Role is the apply side of an app's lifecycle. It applies the bundles the
// queue hands it, keeps the app's status, history and conditions, and
// decides whether a failed sync is tried again: for its own failures and
// for those the render role reports to it.
type Role struct {
	applier  *Applier
	apps     AppGetter
	projects ProjectGetter
	status   StatusWriter
	metrics  Metrics
	sops     SOPSKeys
	log      *slog.Logger
}

// DecryptWith makes the role decrypt SOPS documents with keys. Without
// keys, an app that renders one fails its sync, naming it.
func (r *Role) DecryptWith(keys SOPSKeys) { r.sops = keys }

// NewRole returns the apply role over a, the Applications apps holds and
// the Projects projects holds.
func NewRole(a *Applier, apps AppGetter, projects ProjectGetter, m Metrics, log *slog.Logger) *Role {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Role{applier: a, apps: apps, projects: projects, status: NewStatusWriter(a.Dynamic()), metrics: m, log: log}
}

// errNoProject is the cause of a sync waiting for its app's project.
var errNoProject = errors.New("the app's project does not exist (yet)")

// project returns app's project. A project that does not exist yet (an app
// of apps may create it in the same sync as the app) is waited for.
func (r *Role) project(app *v1alpha1.Application) (*v1alpha1.Project, error) {
	name := v1alpha1.ProjectOf(app)
	p, err := r.projects.Project(name)
	switch {
	case apierrors.IsNotFound(err) && name == v1alpha1.DefaultProject:
		// Not created yet (EnsureDefaultProject runs beside the roles),
		// or deleted: the default project always exists, as in Argo CD.
		return v1alpha1.NewDefaultProject(r.applier.opts.InventoryNamespace), nil
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("project %q: %w", name, errNoProject)
	}
	return p, err
}

// app returns the Application a job names; a job for an app that no
// longer exists ends.
func (r *Role) app(ref *ferryv1.AppRef) (*v1alpha1.Application, error) {
	app, err := r.apps.Get(ref.GetNamespace(), ref.GetName())
	if apierrors.IsNotFound(err) {
		return nil, job.Terminal(fmt.Errorf("application %s/%s no longer exists", ref.GetNamespace(), ref.GetName()))
	}
	return app, err
}

// Admit decides whether app may sync now, keeping the conditions that say
// why not: a suspended app is skipped, and an app whose spec ferry cannot
// honour fails for good. It also refreshes the condition listing the Argo
// CD fields ferry ignores.
func (r *Role) Admit(ctx context.Context, app *v1alpha1.Application, req *ferryv1.SyncRequest) error {
	if app.Spec.Suspend {
		r.log.InfoContext(ctx, "app is suspended; sync skipped", "app", app.Namespace+"/"+app.Name, "trigger", req.GetTrigger().Name())
		r.condition(ctx, app, v1alpha1.ConditionSuspended, "the app is suspended: it neither syncs nor self-heals until spec.suspend is cleared")
		return job.ErrSkip
	}
	r.condition(ctx, app, v1alpha1.ConditionSuspended, "")
	r.condition(ctx, app, v1alpha1.ConditionUnsupportedFields, v1alpha1.UnsupportedMessage(app))
	p, err := r.project(app)
	if err != nil {
		return r.unavailable(ctx, app, req.GetRevision(), req.GetTrigger(), time.Now(), err)
	}
	if err := admitSpec(p, app); err != nil {
		r.condition(ctx, app, v1alpha1.ConditionInvalidSpec, err.Error())
		return job.Terminal(r.failed(ctx, app, req.GetRevision(), req.GetTrigger(), time.Now(), nil, err))
	}
	r.condition(ctx, app, v1alpha1.ConditionInvalidSpec, "")
	return nil
}

// RenderFailed records a render that failed and returns what the job
// should do: wait and try again when a dependency was down (transient),
// else retry under the app's retry policy or fail for good.
func (r *Role) RenderFailed(ctx context.Context, app *v1alpha1.Application, req *ferryv1.SyncRequest, started time.Time, cause error, transient bool) error {
	if transient {
		return r.unavailable(ctx, app, req.GetRevision(), req.GetTrigger(), started, cause)
	}
	return r.retryOrFail(ctx, app, req.GetRevision(), req.GetTrigger(), started, nil, cause)
}

// Apply applies a rendered bundle and records the outcome in the status:
// a full sync (hooks, stages, prune), the pending PostSync phase, or a
// self-heal re-apply of the last bundle without hooks.
func (r *Role) Apply(ctx context.Context, req *ferryv1.ApplyRequest, b *ferryv1.Bundle) (*ferryv1.SyncResult, error) {
	app, err := r.app(req.GetApp())
	if err != nil {
		return nil, err
	}
	if app.Spec.Suspend {
		return nil, job.ErrSkip
	}
	ns, name := app.Namespace, app.Name
	started := time.Now()
	objs, err := Decode(b.GetObjects())
	if err != nil {
		return nil, job.Terminal(fmt.Errorf("bundle %s: %w", b.GetHash(), err))
	}
	p, err := r.project(app)
	if err != nil {
		return nil, r.unavailable(ctx, app, req.GetRevision(), req.GetTrigger(), started, err)
	}
	if err := admitSpec(p, app); err != nil {
		// The project narrowed since the render: nothing of it is applied.
		return nil, job.Terminal(r.failed(ctx, app, req.GetRevision(), req.GetTrigger(), started, nil, err))
	}
	decrypted, hashKey, err := decryptSOPS(ctx, r.sops, app.Spec.DecryptionSecret(), objs)
	if err != nil {
		// Nothing of the app is applied or pruned; the app's retry policy
		// decides when it is tried again.
		return nil, r.retryOrFail(ctx, app, req.GetRevision(), req.GetTrigger(), started, nil, err)
	}
	opts := SyncOptionsFor(app)
	opts.Decrypted, opts.DecryptedHashKey = decrypted, hashKey
	opts.Project = p
	opts.Revision = req.GetRevision()
	opts.SkipHooks = req.GetTrigger() == ferryv1.Trigger_TRIGGER_DRIFT
	var res *Result
	if req.GetPostSync() {
		res, err = r.applier.RunPostSync(ctx, opts, objs)
		if errors.Is(err, ErrNoPostSyncPending) || errors.Is(err, ErrNotHealthy) {
			return nil, job.ErrSkip
		}
	} else {
		res, err = r.applier.Sync(ctx, opts, objs)
	}
	r.observe("apply", started, err)
	if err != nil {
		return nil, r.unavailable(ctx, app, req.GetRevision(), req.GetTrigger(), started, err)
	}
	applyErr := res.Err
	if r.metrics != nil {
		for _, o := range res.Objects {
			r.metrics.ObjectHandled(o.Action)
		}
	}
	if applyErr != nil && IsTransient(applyErr) {
		// Objects the API server could not take for now (timeouts, too
		// many requests): the same wait as for an unreachable server.
		return nil, r.unavailable(ctx, app, req.GetRevision(), req.GetTrigger(), started, applyErr)
	}
	if applyErr != nil {
		attempt := job.Attempt(ctx)
		if _, ok := v1alpha1.RetryDelay(app, attempt); ok {
			return nil, r.retryOrFail(ctx, app, req.GetRevision(), req.GetTrigger(), started, res, applyErr)
		}
		if attempt > 1 {
			applyErr = fmt.Errorf("%w (gave up after %d attempts)", applyErr, attempt)
		}
	}
	if res.Noop && applyErr == nil && (req.GetTrigger() == ferryv1.Trigger_TRIGGER_DRIFT || app.Status.Sync.BundleHash == b.GetHash()) &&
		app.Status.Sync.Status == v1alpha1.SyncStatusSynced && app.Status.Sync.Revision == req.GetRevision() {
		// Nothing changed and the status already says so: no write at all.
		r.log.DebugContext(ctx, "sync changed nothing", "app", ns+"/"+name)
		return result(req, started, time.Now(), traceID(ctx), res, nil), nil
	}
	sc := trace.SpanContextFromContext(ctx)
	rec := SyncRecord{
		Revision: req.GetRevision(), Trigger: applyTrigger(req), TraceID: traceID(ctx), SpanID: sc.SpanID().String(),
		BundleHash: b.GetHash(), StartedAt: started, FinishedAt: time.Now(), Result: res, Err: applyErr, Generation: app.Generation,
	}
	if len(decrypted) > 0 {
		rec.DecryptedWith = app.Spec.DecryptionSecret()
		if rec.DecryptedWith == "" {
			rec.DecryptedWith = DefaultSOPSSecret
		}
	}
	if len(req.GetInputs()) > 0 || req.GetTrigger() != ferryv1.Trigger_TRIGGER_DRIFT && !req.GetPostSync() {
		rec.Inputs = []v1alpha1.InputPath{}
		for _, in := range req.GetInputs() {
			rec.Inputs = append(rec.Inputs, v1alpha1.InputPath{RepoURL: in.GetRepoUrl(), Path: in.GetPath(), Shallow: in.GetShallow()})
		}
	}
	if err := RecordSync(ctx, r.applier.Dynamic(), ns, name, rec); err != nil {
		return nil, err
	}
	if req.GetRequestedAt() != nil {
		r.observe("sync", req.GetRequestedAt().AsTime(), applyErr)
	}
	out := result(req, started, rec.FinishedAt, rec.TraceID, res, applyErr)
	r.log.InfoContext(ctx, "sync finished", "app", ns+"/"+name, "revision", req.GetRevision(), "phase", out.Phase.String(),
		"objects", len(res.Objects), "trigger", applyTrigger(req), "duration", rec.FinishedAt.Sub(started))
	return out, nil
}

// Diff compares objs, app's rendered objects, with the cluster, under the
// same project check as a sync: an object the project does not allow fails
// the diff as it would fail the sync, and is never dry-run.
func (r *Role) Diff(ctx context.Context, app *v1alpha1.Application, objs []*unstructured.Unstructured) ([]ObjectDiff, error) {
	p, err := r.project(app)
	if err != nil {
		return nil, err
	}
	if err := admitSpec(p, app); err != nil {
		return nil, err
	}
	// Secrets are masked in diffs; their decrypted values are compared.
	decrypted, hashKey, err := decryptSOPS(ctx, r.sops, app.Spec.DecryptionSecret(), objs)
	if err != nil {
		return nil, err
	}
	opts := SyncOptionsFor(app)
	opts.Decrypted, opts.DecryptedHashKey = decrypted, hashKey
	opts.Project = p
	return r.applier.Diff(ctx, opts, objs)
}

// admitSpec checks what the app's spec asks of its project: the cluster,
// every source repository, and the destination namespace.
func admitSpec(p *v1alpha1.Project, app *v1alpha1.Application) error {
	if err := v1alpha1.CheckDestination(app.Spec.Destination); err != nil {
		return err
	}
	for _, src := range app.Spec.AllSources() {
		if err := p.AllowsSource(src.RepoURL); err != nil {
			return err
		}
	}
	if secret := app.Spec.DecryptionSecret(); secret != "" {
		if err := p.AllowsDecryptionSecret(secret); err != nil {
			return err
		}
	}
	if ns := app.Spec.Destination.Namespace; ns != "" {
		return p.AllowsDestination(ns)
	}
	return nil
}

// RecordMonitorStatus writes what the Monitor observed of an app into its
// status.
func (r *Role) RecordMonitorStatus(ctx context.Context, s AppStatus) {
	ns, name, _ := strings.Cut(s.App, "/")
	if _, err := r.apps.Get(ns, name); err != nil {
		return // deleted, or not ours
	}
	if err := RecordStatus(ctx, r.applier.Dynamic(), ns, name, s); err != nil {
		r.log.WarnContext(ctx, "could not record app status", "app", s.App, "error", err)
	}
}

// unavailable handles a failure of what a sync depends on rather than of
// the app (the git server unreachable, the API server down): the app shows
// it in its status and the job is tried again, with a backoff capped at a
// minute, for as long as it takes. Giving up would lose the revision: the
// head is already recorded as dispatched. A newer request replaces it.
func (r *Role) unavailable(ctx context.Context, app *v1alpha1.Application, revision string, trigger ferryv1.Trigger, started time.Time, cause error) error {
	attempt := job.Attempt(ctx)
	d := unavailableBackoff.Delay(attempt)
	msg := fmt.Sprintf("waiting for a dependency, retrying in %s (attempt %d): %v", d, attempt, cause)
	r.log.WarnContext(ctx, "sync cannot proceed; retrying", "app", app.Namespace+"/"+app.Name, "attempt", attempt, "retry_in", d, "error", cause)
	r.running(ctx, app, revision, trigger, started, msg, cause)
	return job.RetryAfter(cause, d)
}

// retryOrFail retries a failed sync under the app's retry policy, noting
// the retry in the operation state, or records the failure for good.
func (r *Role) retryOrFail(ctx context.Context, app *v1alpha1.Application, revision string, trigger ferryv1.Trigger, started time.Time, res *Result, cause error) error {
	attempt := job.Attempt(ctx)
	if d, ok := v1alpha1.RetryDelay(app, attempt); ok {
		msg := fmt.Sprintf("retrying in %s (attempt %d failed): %v", d, attempt, cause)
		r.log.WarnContext(ctx, "sync failed; retrying under the app's retry policy", "app", app.Namespace+"/"+app.Name, "attempt", attempt, "retry_in", d, "error", cause)
		r.running(ctx, app, revision, trigger, started, msg, cause)
		return job.RetryAfter(cause, d)
	}
	if attempt > 1 {
		cause = fmt.Errorf("%w (gave up after %d attempts)", cause, attempt)
	}
	return job.Terminal(r.failed(ctx, app, revision, trigger, started, res, cause))
}

// running shows a sync that will be tried again: its operation is Running
// with msg, and lastError holds the cause.
func (r *Role) running(ctx context.Context, app *v1alpha1.Application, revision string, trigger ferryv1.Trigger, started time.Time, msg string, cause error) {
	err := r.status.update(ctx, app.Namespace, app.Name, func(st *v1alpha1.ApplicationStatus) {
		st.OperationState = &v1alpha1.OperationState{
			Phase: v1alpha1.PhaseRunning, Message: msg, Revision: revision, Trigger: trigger.Name(),
			StartedAt: metav1.NewTime(started),
		}
		st.LastError = cause.Error()
	})
	if err != nil {
		r.log.WarnContext(ctx, "could not record a sync that waits", "app", app.Namespace+"/"+app.Name, "error", err)
	}
}

// failed records a failed sync in the app's status and returns cause.
func (r *Role) failed(ctx context.Context, app *v1alpha1.Application, revision string, trigger ferryv1.Trigger, started time.Time, res *Result, cause error) error {
	rec := SyncRecord{
		Revision: revision, Trigger: trigger.Name(), TraceID: traceID(ctx),
		StartedAt: started, FinishedAt: time.Now(), Result: res, Err: cause, Generation: app.Generation,
	}
	if err := RecordSync(ctx, r.applier.Dynamic(), app.Namespace, app.Name, rec); err != nil {
		r.log.WarnContext(ctx, "could not record a failed sync", "app", app.Namespace+"/"+app.Name, "error", err)
	}
	return cause
}

// condition sets (message non-empty) or clears a condition, writing only
// when that changes something.
func (r *Role) condition(ctx context.Context, app *v1alpha1.Application, typ, message string) {
	if err := r.status.SetCondition(ctx, app, typ, message); err != nil {
		r.log.WarnContext(ctx, "could not set condition", "app", app.Namespace+"/"+app.Name, "condition", typ, "error", err)
	}
}

func (r *Role) observe(stage string, started time.Time, err error) {
	if r.metrics != nil {
		r.metrics.ObserveStage(stage, started, err)
	}
}

// applyTrigger names what an apply job does, for the history.
func applyTrigger(req *ferryv1.ApplyRequest) string {
	if req.GetPostSync() {
		return "postsync"
	}
	return req.GetTrigger().Name()
}

// result is the SyncResult published for an apply job.
func result(req *ferryv1.ApplyRequest, started, finished time.Time, trace string, res *Result, applyErr error) *ferryv1.SyncResult {
	out := &ferryv1.SyncResult{
		App: req.GetApp(), Revision: req.GetRevision(), Phase: ferryv1.SyncPhase_SYNC_PHASE_SUCCEEDED,
		StartedAt: timestamppb.New(started), FinishedAt: timestamppb.New(finished),
		TraceId: trace, Trigger: req.GetTrigger(), DeliveryId: req.GetDeliveryId(),
		RepoUrl: req.GetRepoUrl(), PostSync: req.GetPostSync(),
	}
	if applyErr != nil {
		out.Phase = ferryv1.SyncPhase_SYNC_PHASE_FAILED
		out.Message = applyErr.Error()
	}
	for _, o := range append(append([]ObjectResult(nil), res.Objects...), res.Hooks...) {
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
