package ingest

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/go-playground/webhooks/v6/gitea"
	"github.com/go-playground/webhooks/v6/github"
	"github.com/go-playground/webhooks/v6/gitlab"
	"google.golang.org/protobuf/types/known/timestamppb"

	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
)

// zeroSHA is what providers send as before (a new ref) or after (a deleted
// ref).
const zeroSHA = "0000000000000000000000000000000000000000"

// NewGitHub returns the receiver for GitHub push webhooks
// (POST /webhooks/github), verified with X-Hub-Signature-256.
func NewGitHub(pub EventPublisher, opts ReceiverOptions, log *slog.Logger) (*Receiver, error) {
	var o []github.Option
	if len(opts.Secret) > 0 {
		o = append(o, github.Options.Secret(string(opts.Secret)))
	}
	hook, err := github.New(o...)
	if err != nil {
		return nil, err
	}
	return newReceiver(githubProvider{hook}, pub, opts, log)
}

// NewGitea returns the receiver for Gitea push webhooks
// (POST /webhooks/gitea), verified with X-Gitea-Signature.
func NewGitea(pub EventPublisher, opts ReceiverOptions, log *slog.Logger) (*Receiver, error) {
	var o []gitea.Option
	if len(opts.Secret) > 0 {
		o = append(o, gitea.Options.Secret(string(opts.Secret)))
	}
	hook, err := gitea.New(o...)
	if err != nil {
		return nil, err
	}
	return newReceiver(giteaProvider{hook}, pub, opts, log)
}

// NewGitLab returns the receiver for GitLab push webhooks
// (POST /webhooks/gitlab), verified with X-Gitlab-Token.
func NewGitLab(pub EventPublisher, opts ReceiverOptions, log *slog.Logger) (*Receiver, error) {
	var o []gitlab.Option
	if len(opts.Secret) > 0 {
		o = append(o, gitlab.Options.Secret(string(opts.Secret)))
	}
	hook, err := gitlab.New(o...)
	if err != nil {
		return nil, err
	}
	return newReceiver(gitlabProvider{hook}, pub, opts, log)
}

type githubProvider struct{ hook *github.Webhook }

func (githubProvider) name() string                      { return "github" }
func (githubProvider) deliveryID(r *http.Request) string { return r.Header.Get("X-GitHub-Delivery") }
func (githubProvider) event(r *http.Request) string      { return r.Header.Get("X-GitHub-Event") }
func (p githubProvider) parse(r *http.Request) (any, error) {
	return p.hook.Parse(r, github.PushEvent, github.PingEvent)
}

func (githubProvider) rejection(err error) (int, string) {
	switch {
	case errors.Is(err, github.ErrMissingHubSignatureHeader):
		return http.StatusUnauthorized, "missing X-Hub-Signature-256 (HMAC SHA-256 signature)"
	case errors.Is(err, github.ErrHMACVerificationFailed):
		return http.StatusUnauthorized, "signature does not match"
	case errors.Is(err, github.ErrMissingGithubEventHeader):
		return http.StatusBadRequest, "missing X-GitHub-Event"
	case errors.Is(err, github.ErrEventNotFound):
		return http.StatusAccepted, "ferry acts on push events only"
	case errors.Is(err, github.ErrParsingPayload):
		return http.StatusBadRequest, "empty or unreadable payload"
	}
	return http.StatusBadRequest, "payload is not valid JSON for its event"
}

func (githubProvider) push(delivery string, payload any) (*ferryv1.PushEvent, bool) {
	switch p := payload.(type) {
	case github.PingPayload:
		return nil, true
	case github.PushPayload:
		ev := &ferryv1.PushEvent{
			Provider: "github", DeliveryId: delivery,
			RepoUrl: p.Repository.CloneURL, Ref: p.Ref, Before: p.Before, After: p.After,
			Created: p.Created, Deleted: p.Deleted, Forced: p.Forced,
			DefaultBranch: p.Repository.DefaultBranch, ReceivedAt: timestamppb.Now(),
			AlternateUrls: nonEmpty(p.Repository.SSHURL, p.Repository.HTMLURL, p.Repository.GitURL),
		}
		for _, c := range p.Commits {
			ev.Commits = append(ev.Commits, &ferryv1.Commit{Id: c.ID, Added: c.Added, Modified: c.Modified, Removed: c.Removed})
		}
		return ev, false
	}
	return nil, false
}

type giteaProvider struct{ hook *gitea.Webhook }

func (giteaProvider) name() string                         { return "gitea" }
func (giteaProvider) deliveryID(r *http.Request) string    { return r.Header.Get("X-Gitea-Delivery") }
func (giteaProvider) event(r *http.Request) string         { return r.Header.Get("X-Gitea-Event") }
func (p giteaProvider) parse(r *http.Request) (any, error) { return p.hook.Parse(r, gitea.PushEvent) }

func (giteaProvider) rejection(err error) (int, string) {
	switch {
	case errors.Is(err, gitea.ErrMissingGiteaSignatureHeader):
		return http.StatusUnauthorized, "missing X-Gitea-Signature"
	case errors.Is(err, gitea.ErrHMACVerificationFailed):
		return http.StatusUnauthorized, "signature does not match"
	case errors.Is(err, gitea.ErrMissingGiteaEventHeader):
		return http.StatusBadRequest, "missing X-Gitea-Event"
	case errors.Is(err, gitea.ErrEventNotFound):
		return http.StatusAccepted, "ferry acts on push events only"
	case errors.Is(err, gitea.ErrParsingPayload):
		return http.StatusBadRequest, "empty or unreadable payload"
	}
	return http.StatusBadRequest, "payload is not valid JSON for its event"
}

func (giteaProvider) push(delivery string, payload any) (*ferryv1.PushEvent, bool) {
	p, ok := payload.(gitea.PushPayload)
	if !ok || p.Repo == nil {
		return nil, false
	}
	ev := &ferryv1.PushEvent{
		Provider: "gitea", DeliveryId: delivery,
		RepoUrl: p.Repo.CloneURL, Ref: p.Ref, Before: p.Before, After: p.After,
		Created: p.Before == zeroSHA, Deleted: p.After == zeroSHA,
		DefaultBranch: p.Repo.DefaultBranch, ReceivedAt: timestamppb.Now(),
		AlternateUrls: nonEmpty(p.Repo.SSHURL, p.Repo.HTMLURL),
	}
	for _, c := range p.Commits {
		if c != nil {
			ev.Commits = append(ev.Commits, &ferryv1.Commit{Id: c.ID, Added: c.Added, Modified: c.Modified, Removed: c.Removed})
		}
	}
	return ev, false
}

type gitlabProvider struct{ hook *gitlab.Webhook }

func (gitlabProvider) name() string { return "gitlab" }
func (gitlabProvider) deliveryID(r *http.Request) string {
	if id := r.Header.Get("X-Gitlab-Event-UUID"); id != "" {
		return id
	}
	return r.Header.Get("X-Gitlab-Webhook-UUID")
}
func (gitlabProvider) event(r *http.Request) string { return r.Header.Get("X-Gitlab-Event") }
func (p gitlabProvider) parse(r *http.Request) (any, error) {
	return p.hook.Parse(r, gitlab.PushEvents, gitlab.TagEvents)
}

func (gitlabProvider) rejection(err error) (int, string) {
	switch {
	case errors.Is(err, gitlab.ErrGitLabTokenVerificationFailed):
		return http.StatusUnauthorized, "X-Gitlab-Token does not match"
	case errors.Is(err, gitlab.ErrMissingGitLabEventHeader):
		return http.StatusBadRequest, "missing X-Gitlab-Event"
	case errors.Is(err, gitlab.ErrEventNotFound):
		return http.StatusAccepted, "ferry acts on push and tag push events only"
	case errors.Is(err, gitlab.ErrParsingPayload):
		return http.StatusBadRequest, "empty or unreadable payload"
	}
	return http.StatusBadRequest, "payload is not valid JSON for its event"
}

func (gitlabProvider) push(delivery string, payload any) (*ferryv1.PushEvent, bool) {
	var ev *ferryv1.PushEvent
	var commits []gitlab.Commit
	switch p := payload.(type) {
	case gitlab.PushEventPayload:
		ev = &ferryv1.PushEvent{
			RepoUrl: p.Project.GitHTTPURL, Ref: p.Ref, Before: p.Before, After: p.After,
			DefaultBranch: p.Project.DefaultBranch,
			AlternateUrls: nonEmpty(p.Project.GitSSHURL, p.Project.WebURL),
		}
		commits = p.Commits
		// GitLab lists at most 20 commits and says how many there were.
		if p.TotalCommitsCount > int64(len(p.Commits)) {
			ev.Forced = true
		}
	case gitlab.TagEventPayload:
		ev = &ferryv1.PushEvent{
			RepoUrl: p.Project.GitHTTPURL, Ref: p.Ref, Before: p.Before, After: p.After,
			DefaultBranch: p.Project.DefaultBranch,
			AlternateUrls: nonEmpty(p.Project.GitSSHURL, p.Project.WebURL),
		}
		commits = p.Commits
	default:
		return nil, false
	}
	ev.Provider, ev.DeliveryId, ev.ReceivedAt = "gitlab", delivery, timestamppb.Now()
	ev.Created, ev.Deleted = ev.Before == zeroSHA, ev.After == zeroSHA
	for _, c := range commits {
		ev.Commits = append(ev.Commits, &ferryv1.Commit{Id: c.ID, Added: c.Added, Modified: c.Modified, Removed: c.Removed})
	}
	return ev, false
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
