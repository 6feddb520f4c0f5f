package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
)

// ProviderPoll is the provider name of push events the poller makes.
const ProviderPoll = "poll"

// Remote reads a git server: its refs (ls-remote) and the files changed
// between two commits.
type Remote interface {
	// Refs returns the remote's refs by full name, and the ref HEAD points
	// at (the default branch), when the server says.
	Refs(ctx context.Context, repoURL string) (refs map[string]string, head string, err error)
	Comparer
}

// PollerOptions configures a Poller.
type PollerOptions struct {
	// Interval between polls; each waits a random extra of up to a tenth.
	Interval time.Duration
	Log      *slog.Logger
}

// Poller is the fallback for missed webhooks: it lists the refs of every
// watched repository, once per repository, and turns a moved head into a
// push event that goes through the same dispatch as a webhook.
type Poller struct {
	apps   AppLister
	remote Remote
	heads  HeadStore
	pub    EventPublisher
	opts   PollerOptions
	log    *slog.Logger
}

// NewPoller returns a Poller.
func NewPoller(apps AppLister, remote Remote, heads HeadStore, pub EventPublisher, opts PollerOptions) *Poller {
	if opts.Interval <= 0 {
		opts.Interval = 3 * time.Minute
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Poller{apps: apps, remote: remote, heads: heads, pub: pub, opts: opts, log: log}
}

// Start polls until ctx is done.
func (p *Poller) Start(ctx context.Context) error {
	for {
		wait := p.opts.Interval + time.Duration(rand.Int64N(int64(p.opts.Interval)/10+1))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		if n, err := p.PollOnce(ctx); err != nil {
			p.log.Warn("poll failed", "error", err)
		} else if n > 0 {
			p.log.Info("poll found new revisions", "events", n)
		}
	}
}

// watched is one repository and the targetRevisions apps follow in it.
type watched struct {
	url  string
	revs map[string]bool
}

// PollOnce lists every watched repository once and publishes a push event
// for each followed ref whose head moved since it was last dispatched. It
// returns how many events it published.
func (p *Poller) PollOnce(ctx context.Context) (int, error) {
	apps, err := p.apps.ListApplications(ctx)
	if err != nil {
		return 0, err
	}
	repos := map[string]*watched{}
	var order []string
	for _, app := range apps {
		for _, src := range app.Spec.AllSources() {
			rev := strings.TrimSpace(src.TargetRevision)
			if commitSHA.MatchString(rev) || src.RepoURL == "" || src.Chart != "" {
				continue
			}
			if rev == "" {
				rev = "HEAD"
			}
			key := v1alpha1.NormalizeRepoURL(src.RepoURL)
			w := repos[key]
			if w == nil {
				w = &watched{url: src.RepoURL, revs: map[string]bool{}}
				repos[key] = w
				order = append(order, key)
			}
			w.revs[rev] = true
		}
	}
	published := 0
	for _, key := range order {
		w := repos[key]
		refs, head, err := p.remote.Refs(ctx, w.url)
		if err != nil {
			p.log.Warn("ls-remote failed", "repo", v1alpha1.RedactRepoURL(w.url), "error", err)
			continue
		}
		defaultBranch := strings.TrimPrefix(head, "refs/heads/")
		seen := map[string]bool{}
		for rev := range w.revs {
			ref := resolveRef(rev, head, refs)
			if ref == "" || seen[ref] {
				continue
			}
			seen[ref] = true
			n, err := p.pollRef(ctx, w.url, ref, refs[ref], defaultBranch)
			if err != nil {
				return published, err
			}
			published += n
		}
	}
	return published, nil
}

func resolveRef(rev, head string, refs map[string]string) string {
	switch {
	case rev == "HEAD":
		return head
	case strings.HasPrefix(rev, "refs/"):
		if _, ok := refs[rev]; ok {
			return rev
		}
	default:
		for _, r := range []string{"refs/heads/" + rev, "refs/tags/" + rev} {
			if _, ok := refs[r]; ok {
				return r
			}
		}
	}
	return ""
}

// pollRef publishes a push event when ref's head, sha, moved. sha is the
// ref's tip as ls-remote reported it, never a commit from a payload, so
// the render role's ref check (render.GitCache.CheckRef) accepts it by
// construction: the tip, or an ancestor of the tip once the branch moved
// on. Only a force push between the poll and the render makes it fail the
// check, and then the next poll brings the new tip.
func (p *Poller) pollRef(ctx context.Context, url, ref, sha, defaultBranch string) (int, error) {
	key := HeadKey(url, ref)
	last, err := p.heads.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	if last == sha {
		return 0, nil
	}
	sum := sha256.Sum256([]byte(key))
	ev := &ferryv1.PushEvent{
		Provider:      ProviderPoll,
		DeliveryId:    "poll-" + hex.EncodeToString(sum[:6]) + "-" + sha,
		RepoUrl:       url,
		Ref:           ref,
		Before:        last,
		After:         sha,
		DefaultBranch: defaultBranch,
		ReceivedAt:    timestamppb.Now(),
		Created:       last == "",
	}
	if last != "" {
		files, err := p.remote.ChangedFiles(ctx, url, last, sha)
		if err != nil {
			p.log.Warn("diff unavailable; the new head syncs every app on its ref", "repo", v1alpha1.RedactRepoURL(url), "ref", ref, "error", err)
			ev.CommitsTruncated = true
		} else {
			ev.Commits = []*ferryv1.Commit{{Id: sha, Modified: files}}
		}
	}
	if _, err := p.pub.PublishEvent(ctx, ev); err != nil {
		return 0, err
	}
	p.log.Info("new head found by polling", "repo", v1alpha1.RedactRepoURL(url), "ref", ref, "revision", sha, "previous", last)
	return 1, nil
}
