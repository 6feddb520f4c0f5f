package render

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
	"github.com/ferrycd/ferry/proto/job"
)

// ErrNotOnRef is wrapped by the error of a revision that is not on the ref
// its app tracks: a push naming a commit of another branch, or one that
// the repository does not hold.
var ErrNotOnRef = errors.New("not on the tracked ref")

// refKind is what an app's targetRevision names.
type refKind int

const (
	refUnknown refKind = iota
	refBranch
	refTag
	refCommit
)

// CheckRef returns nil when commit revision of repoURL is on ref, an app's
// targetRevision, and an error wrapping ErrNotOnRef when it is not. What
// "on" means depends on what ref names:
//
//   - a branch ("main", "refs/heads/main"; "" and "HEAD" mean the default
//     branch): the branch's tip or an ancestor of it;
//   - a tag ("v1.2.0", "refs/tags/v1.2.0"): exactly the tag's commit, since
//     a tag stands for one commit and its history is not a release;
//   - a commit SHA, full or abbreviated: exactly that commit.
//
// A name that is both a branch and a tag is the branch, as Resolve takes
// it. The check reads the cache first and fetches only when the cache
// cannot show the revision on the ref: a push's commit that a fetch just
// brought in is checked without touching the network again. Any other
// error means the check could not tell (the remote is unreachable).
func (c *GitCache) CheckRef(ctx context.Context, repoURL, ref, revision string) error {
	// The same gate as Resolve: no fetch from a host that is not allowed.
	if err := c.checkRemote(repoURL); err != nil {
		return err
	}
	r, err := c.open(repoURL)
	if err != nil {
		return err
	}
	rev := strings.TrimSpace(revision)
	if fullSHA.MatchString(rev) {
		if err := r.onRef(ref, rev); err == nil {
			return nil
		}
	}
	if err := r.fetch(ctx); err != nil {
		return err
	}
	return r.onRef(ref, rev)
}

// onRef checks rev against ref in what the cache holds now.
func (r *cachedRepo) onRef(ref, rev string) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	what := redactURL(r.url)
	kind, tip, alias := r.lookupRef(ref)
	var h plumbing.Hash
	switch {
	case fullSHA.MatchString(rev):
		h = plumbing.NewHash(rev)
	default:
		// Pushes and polls name full SHAs; anything else is a name the
		// payload chose, which cannot stand for a commit on the ref.
		return fmt.Errorf("%w: %q is not a commit SHA", ErrNotOnRef, rev)
	}
	short := h.String()[:12]
	switch kind {
	case refCommit:
		if strings.HasPrefix(h.String(), strings.ToLower(strings.TrimSpace(ref))) {
			return nil
		}
		return fmt.Errorf("%w: commit %s is not %s, the commit the app pins", ErrNotOnRef, short, ref)
	case refTag:
		if h == tip || h == alias {
			return nil
		}
		return fmt.Errorf("%w: commit %s is not tag %s (commit %s) of %s", ErrNotOnRef, short, ref, tip.String()[:12], what)
	case refBranch:
		if h == tip {
			return nil
		}
		commit, err := r.repo.CommitObject(h)
		if err != nil {
			return fmt.Errorf("%w: commit %s is not in %s", ErrNotOnRef, short, what)
		}
		head, err := r.repo.CommitObject(tip)
		if err != nil {
			return fmt.Errorf("reading the tip of %s in %s: %w", branchName(ref), what, err)
		}
		ok, err := commit.IsAncestor(head)
		if err != nil {
			return fmt.Errorf("walking the history of %s in %s: %w", branchName(ref), what, err)
		}
		if ok {
			return nil
		}
		return fmt.Errorf("%w: commit %s is not on branch %s of %s (tip %s)", ErrNotOnRef, short, branchName(ref), what, tip.String()[:12])
	}
	return fmt.Errorf("%w: targetRevision %q names no branch, tag or commit of %s", ErrNotOnRef, ref, what)
}

// lookupRef says what ref names in the cache, and the commit it is at. For
// a tag, alias is the annotated tag object's own hash, which ls-remote
// reports in place of the commit. The caller holds r.mu.
func (r *cachedRepo) lookupRef(ref string) (kind refKind, tip, alias plumbing.Hash) {
	ref = strings.TrimSpace(ref)
	// Any other full ref (refs/pull/1/head, say) is no branch or tag to
	// be on: it falls through to unknown.
	branches, tags, _ := refCandidates(ref)
	for _, name := range branches {
		if got, err := r.repo.Reference(name, true); err == nil {
			return refBranch, got.Hash(), plumbing.ZeroHash
		}
	}
	for _, name := range tags {
		got, err := r.repo.Reference(name, true)
		if err != nil {
			continue
		}
		h := got.Hash()
		if tag, err := r.repo.TagObject(h); err == nil {
			if c, err := tag.Commit(); err == nil {
				return refTag, c.Hash, h
			}
		}
		return refTag, h, plumbing.ZeroHash
	}
	if isHexPrefix(ref) {
		return refCommit, plumbing.ZeroHash, plumbing.ZeroHash
	}
	return refUnknown, plumbing.ZeroHash, plumbing.ZeroHash
}

// isHexPrefix reports whether s can be a commit SHA, full or abbreviated as
// git abbreviates (at least 7 digits).
func isHexPrefix(s string) bool {
	if len(s) < 7 || len(s) > 40 {
		return false
	}
	for _, c := range strings.ToLower(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func branchName(ref string) string {
	if ref == "" || ref == "HEAD" {
		return "HEAD (the default branch)"
	}
	return strings.TrimPrefix(ref, "refs/heads/")
}

// checkRef refuses a push or poll whose commit is not on the ref the app
// tracks, for the sources reading the repository that moved: a signed
// payload names a commit, and a replayed or forged one could name any
// commit the repository holds (another branch's, say). When several
// sources read that repository, being on one of their refs is enough: the
// commit is then one the app follows. The refusal ends the job
// (job.Terminal) and is logged with the delivery ID; it is not written
// into the app's status, which it does not concern and which anyone able
// to send such payloads could otherwise fill. When the check cannot tell
// (the remote is unreachable), the app waits as for any failed fetch.
func (r *Role) checkRef(ctx context.Context, app *v1alpha1.Application, req *ferryv1.SyncRequest) error {
	t := req.GetTrigger()
	if (t != ferryv1.Trigger_TRIGGER_PUSH && t != ferryv1.Trigger_TRIGGER_POLL) || req.GetRevision() == "" {
		return nil
	}
	started := time.Now()
	var refused, unknown error
	checked := false
	for _, src := range app.Spec.AllSources() {
		if src.Chart != "" || v1alpha1.NormalizeRepoURL(src.RepoURL) != v1alpha1.NormalizeRepoURL(req.GetRepoUrl()) {
			continue
		}
		checked = true
		err := r.git.CheckRef(ctx, src.RepoURL, src.TargetRevision, req.GetRevision())
		switch {
		case err == nil:
			if r.observe != nil {
				r.observe("refcheck", started, nil)
			}
			return nil
		case errors.Is(err, ErrNotOnRef):
			refused = errors.Join(refused, err)
		default:
			unknown = err
		}
	}
	if !checked {
		return nil
	}
	if unknown != nil {
		if r.observe != nil {
			r.observe("refcheck", started, unknown)
		}
		err := fmt.Errorf("checking that revision %s is on the tracked ref: %w", req.GetRevision(), unknown)
		return r.lifecycle.RenderFailed(ctx, app, req, started, err, IsTransient(err))
	}
	if r.observe != nil {
		r.observe("refcheck", started, refused)
	}
	r.log.WarnContext(ctx, "refused a revision that is not on the tracked ref",
		"app", app.Namespace+"/"+app.Name, "revision", req.GetRevision(), "delivery_id", req.GetDeliveryId(),
		"trigger", t.String(), "error", refused)
	return job.Terminal(fmt.Errorf("refused revision %s: %w", req.GetRevision(), refused))
}
