package render

import (
	"context"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
)

// Stale reports whether a push or poll asks for a commit older than the
// one the app already runs (a late redelivery, say): newest wins, so the
// job is dropped rather than rolling the app back. Rollbacks are asked for
// on purpose, through their own trigger. When ancestry cannot be told (the
// repository is unreachable), the request is not stale.
func (r *Role) Stale(ctx context.Context, app *v1alpha1.Application, req *ferryv1.SyncRequest) bool {
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
