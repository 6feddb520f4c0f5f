package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-github/v62/github"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
	"github.com/ferrycd/ferry/proto/job"
)

// CommitStatusOptions configures commit status reporting.
type CommitStatusOptions struct {
	// APIURL is the API root: https://api.github.com/ (default), a GitHub
	// Enterprise https://ghe.example.com/api/v3/, or a Gitea
	// https://gitea.example.com/api/v1/, whose status API has the same shape.
	APIURL string
	// Token authenticates the calls.
	Token string
	// GitHost is the host of the clone URLs this API serves; default
	// github.com, or the API URL's host.
	GitHost string
	// ExternalURL is ferry's dashboard; statuses link to the app there.
	ExternalURL string
	// MaxAttempts bounds the tries of one status, rate limits aside.
	MaxAttempts int
	// MaxRateLimitWait caps how long a rate limit may hold a status back.
	MaxRateLimitWait time.Duration
	HTTPClient       *http.Client
	Log              *slog.Logger
}

// CommitStatus sets ferry/<app> commit statuses on GitHub or Gitea: pending
// when a sync of a commit starts, success or failure when it ends. Posting
// happens in the background, with retries; it never slows or fails a sync.
type CommitStatus struct {
	client *github.Client
	host   string
	opts   CommitStatusOptions
	log    *slog.Logger
	jobs   chan statusJob
}

type statusJob struct {
	owner, repo, sha string
	status           *github.RepoStatus
}

// NewCommitStatus returns a reporter; Start runs its sender.
func NewCommitStatus(opts CommitStatusOptions) (*CommitStatus, error) {
	c := github.NewClient(opts.HTTPClient)
	if opts.Token != "" {
		c = c.WithAuthToken(opts.Token)
	}
	host := opts.GitHost
	if opts.APIURL != "" {
		u, err := url.Parse(opts.APIURL)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("commit status API URL %q is not an absolute URL", opts.APIURL)
		}
		if !strings.HasSuffix(u.Path, "/") {
			u.Path += "/"
		}
		c.BaseURL = u
		if host == "" && u.Hostname() != "api.github.com" {
			host = u.Host
		}
	}
	if host == "" {
		host = "github.com"
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 5
	}
	if opts.MaxRateLimitWait <= 0 {
		opts.MaxRateLimitWait = time.Hour
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &CommitStatus{client: c, host: strings.ToLower(host), opts: opts, log: log, jobs: make(chan statusJob, 1024)}, nil
}

// State names of commit statuses.
const (
	StatePending = "pending"
	StateSuccess = "success"
	StateFailure = "failure"
)

// Report queues the status of app's sync of revision in repoURL. It does
// nothing for repositories of another host or for revisions that are not
// full commit SHAs, and drops the status (with a log line) when the queue
// is full rather than block a sync.
func (c *CommitStatus) Report(namespace, name, repoURL, revision, state, description string) {
	if !commitSHA.MatchString(revision) {
		return
	}
	rest, ok := strings.CutPrefix(v1alpha1.NormalizeRepoURL(repoURL), c.host+"/")
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 2 {
		return
	}
	if len(description) > 140 {
		description = description[:137] + "..."
	}
	st := &github.RepoStatus{
		State:       github.String(state),
		Context:     github.String("ferry/" + name),
		Description: github.String(description),
	}
	if c.opts.ExternalURL != "" {
		st.TargetURL = github.String(strings.TrimSuffix(c.opts.ExternalURL, "/") + "/apps/" + url.PathEscape(namespace) + "/" + url.PathEscape(name))
	}
	select {
	case c.jobs <- statusJob{owner: parts[0], repo: parts[1], sha: revision, status: st}:
	default:
		c.log.Warn("commit status dropped: queue full", "app", namespace+"/"+name, "revision", revision, "state", state)
	}
}

// ReportResult sets the final status of the sync res ended: failure with
// its message, or success. Self-heal re-applies and the PostSync phase
// alone report only failures: their commit already has its success.
func (c *CommitStatus) ReportResult(res *ferryv1.SyncResult) {
	app := res.GetApp()
	switch {
	case res.GetPhase() == ferryv1.SyncPhase_SYNC_PHASE_FAILED:
		c.Report(app.GetNamespace(), app.GetName(), res.GetRepoUrl(), res.GetRevision(), StateFailure, res.GetMessage())
	case res.GetPhase() == ferryv1.SyncPhase_SYNC_PHASE_SUCCEEDED && !res.GetPostSync() && res.GetTrigger() != ferryv1.Trigger_TRIGGER_DRIFT:
		n := 0
		for _, r := range res.GetResources() {
			if r.GetAction() != "pruned" {
				n++
			}
		}
		c.Report(app.GetNamespace(), app.GetName(), res.GetRepoUrl(), res.GetRevision(), StateSuccess, fmt.Sprintf("synced %d objects", n))
	}
}

// statusBackoff spaces the tries of a status the API refused.
var statusBackoff = job.Backoff{First: time.Second, Factor: 2}

// Start posts queued statuses until ctx is done.
func (c *CommitStatus) Start(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case j := <-c.jobs:
			c.post(ctx, j)
		}
	}
}

func (c *CommitStatus) post(ctx context.Context, j statusJob) {
	log := c.log.With("repo", j.owner+"/"+j.repo, "revision", j.sha, "context", j.status.GetContext(), "state", j.status.GetState())
	deadline := time.Now().Add(c.opts.MaxRateLimitWait)
	for attempt := 1; ; attempt++ {
		_, _, err := c.client.Repositories.CreateStatus(ctx, j.owner, j.repo, j.sha, j.status)
		if err == nil {
			log.Debug("commit status posted")
			return
		}
		wait := statusBackoff.Delay(attempt)
		var rl *github.RateLimitError
		var abuse *github.AbuseRateLimitError
		switch {
		case errors.As(err, &rl):
			// Honour the reset time GitHub gave, however many tries that
			// takes, up to the cap.
			wait = time.Until(rl.Rate.Reset.Time) + time.Second
			attempt--
		case errors.As(err, &abuse) && abuse.RetryAfter != nil:
			wait = *abuse.RetryAfter
			attempt--
		default:
			if attempt >= c.opts.MaxAttempts {
				log.Warn("commit status not posted; giving up", "attempts", attempt, "error", err)
				return
			}
		}
		if time.Now().Add(wait).After(deadline) {
			log.Warn("commit status not posted: rate limited for too long", "wait", wait, "error", err)
			return
		}
		wait = max(wait, 100*time.Millisecond)
		log.Info("commit status not posted yet; will retry", "retry_in", wait.Round(time.Millisecond), "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
