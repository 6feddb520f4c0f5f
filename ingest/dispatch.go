package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"path"
	"regexp"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
)

// AppLister lists the Applications ferry manages.
type AppLister interface {
	ListApplications(ctx context.Context) ([]*v1alpha1.Application, error)
}

// SyncPublisher enqueues sync requests.
type SyncPublisher interface {
	PublishSync(ctx context.Context, req *ferryv1.SyncRequest) error
}

// HeadStore records the newest dispatched revision per repository and ref.
type HeadStore interface {
	Get(ctx context.Context, key string) (string, error)
	Set(ctx context.Context, key, revision string) error
}

// Comparer lists the files changed between two commits of a repository,
// for pushes whose payload cannot tell (GitHub's Compare API).
type Comparer interface {
	ChangedFiles(ctx context.Context, repoURL, base, head string) ([]string, error)
}

// AppWarner writes what dispatch learned into an Application's status.
type AppWarner interface {
	// Warn sets a warning condition of type reason.
	Warn(ctx context.Context, namespace, name, reason, message string) error
	// OutOfSync marks an app that does not sync by itself (manual or
	// suspended) as behind Git at revision.
	OutOfSync(ctx context.Context, namespace, name, revision string) error
}

// StatusReporter sets commit statuses (CommitStatus does, on GitHub and
// Gitea).
type StatusReporter interface {
	Report(namespace, name, repoURL, revision, state, description string)
}

// DispatchOptions are the optional collaborators of a Dispatcher.
type DispatchOptions struct {
	// Heads, when set, makes a revision dispatch once per repository and
	// ref, whoever (webhook or poller) saw it first.
	Heads HeadStore
	// Comparer, when set, fills in the changed files of pushes whose
	// payload cannot tell.
	Comparer Comparer
	// Warner, when set, marks apps whose branch was deleted.
	Warner AppWarner
	// Statuses, when set, gets a pending commit status for each sync
	// enqueued; the final one comes from the sync's result.
	Statuses StatusReporter
	Log      *slog.Logger
}

// Dispatcher decides which Applications a push touches and enqueues a sync
// request for each of them.
type Dispatcher struct {
	apps AppLister
	pub  SyncPublisher
	opts DispatchOptions
	log  *slog.Logger
}

// NewDispatcher returns a Dispatcher over apps publishing to pub.
func NewDispatcher(apps AppLister, pub SyncPublisher, opts DispatchOptions) *Dispatcher {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Dispatcher{apps: apps, pub: pub, opts: opts, log: log}
}

// maxListedCommits is the number of commits GitHub lists in a push payload;
// a push listing that many may have been truncated.
const maxListedCommits = 20

// HeadKey is the key under which the head of repoURL's ref is recorded.
func HeadKey(repoURL, ref string) string {
	return v1alpha1.NormalizeRepoURL(repoURL) + "@" + ref
}

// Dispatch handles one push event. It returns an error only when the event
// should be retried (the app list, the queue or the head store failed).
func (d *Dispatcher) Dispatch(ctx context.Context, ev *ferryv1.PushEvent) error {
	span := trace.SpanFromContext(ctx)
	log := d.log.With("provider", ev.GetProvider(), "delivery_id", ev.GetDeliveryId(), "repo", ev.GetRepoUrl(), "ref", ev.GetRef(), "revision", ev.GetAfter())
	apps, err := d.apps.ListApplications(ctx)
	if err != nil {
		return fmt.Errorf("listing applications: %w", err)
	}
	if ev.GetDeleted() {
		d.warnDeleted(ctx, apps, ev, log)
		return nil
	}
	key := HeadKey(ev.GetRepoUrl(), ev.GetRef())
	if d.opts.Heads != nil {
		last, err := d.opts.Heads.Get(ctx, key)
		if err != nil {
			return err
		}
		if last == ev.GetAfter() {
			log.InfoContext(ctx, "revision already dispatched; nothing to do")
			span.SetAttributes(attribute.Bool("ferry.already_dispatched", true))
			return nil
		}
	}
	changed, known := ChangedPaths(ev)
	if !known && d.opts.Comparer != nil && ev.GetBefore() != "" && ev.GetBefore() != zeroSHA && !ev.GetCreated() {
		files, err := d.opts.Comparer.ChangedFiles(ctx, ev.GetRepoUrl(), ev.GetBefore(), ev.GetAfter())
		if err != nil {
			log.WarnContext(ctx, "compare unavailable; syncing every app on this repository and ref", "error", err)
		} else {
			changed, known = files, true
		}
	}
	span.SetAttributes(attribute.Bool("ferry.changed_paths_known", known), attribute.Int("ferry.changed_paths", len(changed)))

	var synced int
	for _, app := range apps {
		if !Touches(app, ev, changed, known) {
			continue
		}
		if app.Status.Sync.Revision == ev.GetAfter() && app.Status.Sync.Status == v1alpha1.SyncStatusSynced {
			log.InfoContext(ctx, "app already at this revision", "app", app.Namespace+"/"+app.Name)
			continue
		}
		if !app.Spec.IsAutomated() || app.Spec.Suspend {
			log.InfoContext(ctx, "app does not sync by itself; marked out of sync", "app", app.Namespace+"/"+app.Name, "suspended", app.Spec.Suspend)
			if d.opts.Warner != nil {
				if err := d.opts.Warner.OutOfSync(ctx, app.Namespace, app.Name, ev.GetAfter()); err != nil {
					log.WarnContext(ctx, "could not mark app out of sync", "app", app.Namespace+"/"+app.Name, "error", err)
				}
			}
			continue
		}
		req := &ferryv1.SyncRequest{
			App:          &ferryv1.AppRef{Namespace: app.Namespace, Name: app.Name},
			RepoUrl:      ev.GetRepoUrl(),
			Revision:     ev.GetAfter(),
			Ref:          ev.GetRef(),
			Trigger:      triggerOf(ev),
			DeliveryId:   ev.GetDeliveryId(),
			RequestedAt:  timestamppb.Now(),
			ChangedPaths: changed,
		}
		if err := d.pub.PublishSync(ctx, req); err != nil {
			return fmt.Errorf("enqueueing sync of %s/%s: %w", app.Namespace, app.Name, err)
		}
		synced++
		log.InfoContext(ctx, "sync enqueued", "app", app.Namespace+"/"+app.Name)
		if d.opts.Statuses != nil {
			d.opts.Statuses.Report(app.Namespace, app.Name, ev.GetRepoUrl(), ev.GetAfter(), StatePending, "ferry is syncing "+app.Name)
		}
	}
	span.SetAttributes(attribute.Int("ferry.apps_considered", len(apps)), attribute.Int("ferry.apps_synced", synced))
	if synced == 0 {
		log.InfoContext(ctx, "push touches no application")
	}
	// Record the head only once every sync is enqueued, so a retry after a
	// failure above dispatches again instead of losing apps.
	if d.opts.Heads != nil {
		if err := d.opts.Heads.Set(ctx, key, ev.GetAfter()); err != nil {
			return err
		}
	}
	return nil
}

func triggerOf(ev *ferryv1.PushEvent) ferryv1.Trigger {
	if ev.GetProvider() == ProviderPoll {
		return ferryv1.Trigger_TRIGGER_POLL
	}
	return ferryv1.Trigger_TRIGGER_PUSH
}

func (d *Dispatcher) warnDeleted(ctx context.Context, apps []*v1alpha1.Application, ev *ferryv1.PushEvent, log *slog.Logger) {
	for _, app := range apps {
		if !Touches(app, ev, nil, false) {
			continue
		}
		msg := fmt.Sprintf("%s was deleted from %s; the app keeps its last synced state", ev.GetRef(), ev.GetRepoUrl())
		log.WarnContext(ctx, "tracked ref deleted", "app", app.Namespace+"/"+app.Name)
		if d.opts.Warner == nil {
			continue
		}
		if err := d.opts.Warner.Warn(ctx, app.Namespace, app.Name, "RefDeleted", msg); err != nil {
			log.WarnContext(ctx, "could not mark app", "app", app.Namespace+"/"+app.Name, "error", err)
		}
	}
}

// ChangedPaths returns the union of files the push's commits added, modified
// or removed. known is false when the payload cannot tell: no commits listed,
// a possibly truncated list, a forced push or a new branch.
func ChangedPaths(ev *ferryv1.PushEvent) (paths []string, known bool) {
	n := len(ev.GetCommits())
	if n == 0 || n >= maxListedCommits || ev.GetCommitsTruncated() || ev.GetForced() || ev.GetCreated() {
		return nil, false
	}
	seen := map[string]bool{}
	for _, c := range ev.GetCommits() {
		for _, list := range [][]string{c.GetAdded(), c.GetModified(), c.GetRemoved()} {
			for _, p := range list {
				if !seen[p] {
					seen[p] = true
					paths = append(paths, p)
				}
			}
		}
	}
	slices.Sort(paths)
	return paths, true
}

var commitSHA = regexp.MustCompile(`^[0-9a-fA-F]{40}$|^[0-9a-fA-F]{64}$`)

// RefMatches reports whether a push of ref moves an app source's
// targetRevision. "" and HEAD follow the default branch; a commit SHA never
// moves.
func RefMatches(targetRevision, ref, defaultBranch string) bool {
	t := strings.TrimSpace(targetRevision)
	switch {
	case commitSHA.MatchString(t):
		return false
	case t == "" || t == "HEAD":
		return defaultBranch != "" && ref == "refs/heads/"+defaultBranch
	case strings.HasPrefix(t, "refs/"):
		return ref == t
	default:
		return ref == "refs/heads/"+t || ref == "refs/tags/"+t
	}
}

// Touches reports whether the push ev, which changed paths (when known),
// concerns app.
func Touches(app *v1alpha1.Application, ev *ferryv1.PushEvent, changed []string, known bool) bool {
	urls := []string{v1alpha1.NormalizeRepoURL(ev.GetRepoUrl())}
	for _, u := range ev.GetAlternateUrls() {
		urls = append(urls, v1alpha1.NormalizeRepoURL(u))
	}
	sources := app.Spec.AllSources()
	var inputs []v1alpha1.InputPath
	hit := false
	for _, src := range sources {
		if !slices.Contains(urls, v1alpha1.NormalizeRepoURL(src.RepoURL)) || !RefMatches(src.TargetRevision, ev.GetRef(), ev.GetDefaultBranch()) {
			continue
		}
		hit = true
		inputs = append(inputs, AppInputs(app, src)...)
	}
	if !hit {
		return false
	}
	if !known {
		return true
	}
	for _, in := range inputs {
		for _, p := range changed {
			if inputCovers(in, p) {
				return true
			}
		}
	}
	return false
}

// inputCovers reports whether a change of repository path p touches in.
func inputCovers(in v1alpha1.InputPath, p string) bool {
	switch {
	case in.Path == "" && !in.Shallow:
		return true
	case in.Shallow:
		return path.Dir(p) == in.Path || (in.Path == "" && !strings.Contains(p, "/"))
	}
	return p == in.Path || strings.HasPrefix(p, in.Path+"/")
}

// AppInputs lists the repository paths that src of app reads: its path
// (only the files directly in it when the last render said the source is a
// directory without recurse); the value files other sources reach through
// $ref; and what the last render read elsewhere (local chart
// dependencies, Kustomize bases).
func AppInputs(app *v1alpha1.Application, src v1alpha1.ApplicationSource) []v1alpha1.InputPath {
	var in []v1alpha1.InputPath
	norm := v1alpha1.NormalizeRepoURL(src.RepoURL)
	recorded := func(p string) (v1alpha1.InputPath, bool) {
		for _, r := range app.Status.Inputs {
			if v1alpha1.NormalizeRepoURL(r.RepoURL) == norm && cleanRepoPath(r.Path) == p {
				return r, true
			}
		}
		return v1alpha1.InputPath{}, false
	}
	if src.Chart == "" && src.Ref == "" {
		own := cleanRepoPath(src.Path)
		shallow := false
		if r, ok := recorded(own); ok {
			shallow = r.Shallow
		}
		in = append(in, v1alpha1.InputPath{RepoURL: src.RepoURL, Path: own, Shallow: shallow})
	}
	if src.Ref != "" {
		for _, other := range app.Spec.AllSources() {
			if other.Helm == nil {
				continue
			}
			for _, vf := range other.Helm.ValueFiles {
				if rest, ok := strings.CutPrefix(vf, "$"+src.Ref+"/"); ok {
					in = append(in, v1alpha1.InputPath{RepoURL: src.RepoURL, Path: cleanRepoPath(rest)})
				}
			}
		}
	}
	for _, r := range app.Status.Inputs {
		if v1alpha1.NormalizeRepoURL(r.RepoURL) == norm {
			in = append(in, v1alpha1.InputPath{RepoURL: r.RepoURL, Path: cleanRepoPath(r.Path), Shallow: r.Shallow})
		}
	}
	return in
}

func cleanRepoPath(p string) string {
	p = path.Clean("/" + p)
	return strings.TrimPrefix(p, "/")
}
