package render

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
	"github.com/ferrycd/ferry/proto/job"
)

// AppGetter reads an Application, from a cache. It returns an error that
// apierrors.IsNotFound recognises when the app does not exist.
type AppGetter interface {
	Get(namespace, name string) (*v1alpha1.Application, error)
}

// Lifecycle is the part of an app's lifecycle that the render role hands
// over: whether the app may sync now, and what a failed render means for
// it (its status, and whether the job is tried again). The apply role
// implements it.
type Lifecycle interface {
	// Admit returns nil when app may sync now, job.ErrSkip when it must
	// not (suspended), or a terminal error when it never can as it is.
	Admit(ctx context.Context, app *v1alpha1.Application, req *ferryv1.SyncRequest) error
	// RenderFailed records a failed render and returns the job's error.
	RenderFailed(ctx context.Context, app *v1alpha1.Application, req *ferryv1.SyncRequest, started time.Time, err error, transient bool) error
}

// Role is the render role: it turns a sync request into a bundle, at the
// requested commit, unless the request is stale.
type Role struct {
	renderer  *Renderer
	git       *GitCache
	apps      AppGetter
	lifecycle Lifecycle
	// observe, when set, records how long each render took.
	observe func(stage string, started time.Time, err error)
	log     *slog.Logger
}

// NewRole returns the render role. observe may be nil.
func NewRole(r *Renderer, git *GitCache, apps AppGetter, l Lifecycle, observe func(stage string, started time.Time, err error), log *slog.Logger) *Role {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Role{renderer: r, git: git, apps: apps, lifecycle: l, observe: observe, log: log}
}

// Render renders the app a sync request names. A push or poll naming a
// commit that is not on the app's tracked ref is refused (checkRef). A
// failure caused by the sources, or by what they depend on, goes to the
// Lifecycle, which records it and says whether the job comes back.
func (r *Role) Render(ctx context.Context, req *ferryv1.SyncRequest) (*ferryv1.RenderResult, error) {
	ns, name := req.GetApp().GetNamespace(), req.GetApp().GetName()
	app, err := r.apps.Get(ns, name)
	if apierrors.IsNotFound(err) {
		return nil, job.Terminal(fmt.Errorf("application %s/%s no longer exists", ns, name))
	}
	if err != nil {
		return nil, err
	}
	if err := r.lifecycle.Admit(ctx, app, req); err != nil {
		return nil, err
	}
	// The ref check comes before Stale: it fetches when the cache does not
	// hold the pushed commit, so Stale and the render find it there and the
	// sync still costs one fetch.
	if err := r.checkRef(ctx, app, req); err != nil {
		return nil, err
	}
	if r.Stale(ctx, app, req) {
		return nil, job.ErrSkip
	}
	started := time.Now()
	rr, err := r.renderer.RenderWithInputs(ctx, Request{App: app, RepoURL: req.GetRepoUrl(), Revision: req.GetRevision()})
	if r.observe != nil {
		r.observe("render", started, err)
	}
	if err != nil {
		err = fmt.Errorf("render failed: %w", err)
		return nil, r.lifecycle.RenderFailed(ctx, app, req, started, err, IsTransient(err))
	}
	out := &ferryv1.RenderResult{Bundle: rr.Bundle, Revision: rr.Revision}
	for _, in := range rr.Inputs {
		out.Inputs = append(out.Inputs, &ferryv1.InputPath{RepoUrl: in.RepoURL, Path: in.Path, Shallow: in.Shallow})
	}
	return out, nil
}
