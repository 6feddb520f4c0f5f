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

// Dispatcher decides which Applications a push touches and enqueues a sync
// request for each of them.
type Dispatcher struct {
	apps AppLister
	pub  SyncPublisher
	log  *slog.Logger
}

// NewDispatcher returns a Dispatcher over apps publishing to pub.
func NewDispatcher(apps AppLister, pub SyncPublisher, log *slog.Logger) *Dispatcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Dispatcher{apps: apps, pub: pub, log: log}
}

// maxListedCommits is the number of commits GitHub lists in a push payload;
// a push listing that many may have been truncated.
const maxListedCommits = 20

// Dispatch handles one push event. It returns an error only when the event
// should be retried (the app list or the queue was unavailable).
func (d *Dispatcher) Dispatch(ctx context.Context, ev *ferryv1.PushEvent) error {
	span := trace.SpanFromContext(ctx)
	log := d.log.With("delivery_id", ev.GetDeliveryId(), "repo", ev.GetRepoUrl(), "ref", ev.GetRef(), "revision", ev.GetAfter())
	if ev.GetDeleted() {
		log.Info("push deleted a ref; nothing to sync")
		return nil
	}
	apps, err := d.apps.ListApplications(ctx)
	if err != nil {
		return fmt.Errorf("listing applications: %w", err)
	}
	changed, known := ChangedPaths(ev)
	var n int
	for _, app := range apps {
		if !Touches(app, ev, changed, known) {
			continue
		}
		req := &ferryv1.SyncRequest{
			App:          &ferryv1.AppRef{Namespace: app.Namespace, Name: app.Name},
			RepoUrl:      ev.GetRepoUrl(),
			Revision:     ev.GetAfter(),
			Ref:          ev.GetRef(),
			Trigger:      ferryv1.Trigger_TRIGGER_PUSH,
			DeliveryId:   ev.GetDeliveryId(),
			RequestedAt:  timestamppb.Now(),
			ChangedPaths: changed,
		}
		if err := d.pub.PublishSync(ctx, req); err != nil {
			return fmt.Errorf("enqueueing sync of %s/%s: %w", app.Namespace, app.Name, err)
		}
		n++
		log.Info("sync enqueued", "app", app.Namespace+"/"+app.Name)
	}
	span.SetAttributes(attribute.Int("ferry.apps_considered", len(apps)), attribute.Int("ferry.apps_synced", n))
	if n == 0 {
		log.Info("push touches no application")
	}
	return nil
}

// ChangedPaths returns the union of files the push's commits added, modified
// or removed. known is false when the payload cannot tell: no commits listed,
// a possibly truncated list, a forced push or a new branch.
func ChangedPaths(ev *ferryv1.PushEvent) (paths []string, known bool) {
	if len(ev.GetCommits()) == 0 || len(ev.GetCommits()) >= maxListedCommits || ev.GetForced() || ev.GetCreated() {
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
	var inputs []string
	hit := false
	for _, src := range sources {
		if !slices.Contains(urls, v1alpha1.NormalizeRepoURL(src.RepoURL)) || !RefMatches(src.TargetRevision, ev.GetRef(), ev.GetDefaultBranch()) {
			continue
		}
		hit = true
		inputs = append(inputs, appInputs(src, sources)...)
	}
	if !hit {
		return false
	}
	if !known {
		return true
	}
	for _, in := range inputs {
		for _, p := range changed {
			if in == "" || p == in || strings.HasPrefix(p, in+"/") {
				return true
			}
		}
	}
	return false
}

// appInputs lists the repository paths src reads: its path, and the value
// files that other sources reach through $ref.
func appInputs(src v1alpha1.ApplicationSource, all []v1alpha1.ApplicationSource) []string {
	var in []string
	if src.Chart == "" && src.Ref == "" {
		in = append(in, cleanRepoPath(src.Path))
	}
	if src.Ref == "" {
		return in
	}
	for _, other := range all {
		if other.Helm == nil {
			continue
		}
		for _, vf := range other.Helm.ValueFiles {
			if rest, ok := strings.CutPrefix(vf, "$"+src.Ref+"/"); ok {
				in = append(in, cleanRepoPath(rest))
			}
		}
	}
	return in
}

func cleanRepoPath(p string) string {
	p = path.Clean("/" + p)
	return strings.TrimPrefix(p, "/")
}
