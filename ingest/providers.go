package ingest

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
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
	return newReceiver(githubProvider{}, pub, opts, log)
}

// NewGitea returns the receiver for Gitea push webhooks
// (POST /webhooks/gitea), verified with X-Gitea-Signature.
func NewGitea(pub EventPublisher, opts ReceiverOptions, log *slog.Logger) (*Receiver, error) {
	return newReceiver(giteaProvider{}, pub, opts, log)
}

// NewGitLab returns the receiver for GitLab push webhooks
// (POST /webhooks/gitlab), verified with X-Gitlab-Token.
func NewGitLab(pub EventPublisher, opts ReceiverOptions, log *slog.Logger) (*Receiver, error) {
	return newReceiver(gitlabProvider{}, pub, opts, log)
}

// hmacMatches reports whether sig, hex, is the HMAC-SHA256 of body under
// secret. hmac.Equal takes constant time.
func hmacMatches(secret, body []byte, sig string) bool {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	want := make([]byte, hex.EncodedLen(m.Size()))
	hex.Encode(want, m.Sum(nil))
	return hmac.Equal([]byte(sig), want)
}

// decodeJSON decodes body into a T; the go-playground/webhooks types are
// reused for their field names, not its Parse, which reads the body again.
func decodeJSON[T any](body []byte) (any, string, error) {
	if len(body) == 0 {
		return nil, "", errDecode{"empty or unreadable payload"}
	}
	var pl T
	if err := json.Unmarshal(body, &pl); err != nil {
		return nil, "", errDecode{"payload is not valid JSON for its event"}
	}
	return pl, "", nil
}

type githubProvider struct{}

func (githubProvider) name() string                      { return "github" }
func (githubProvider) deliveryID(r *http.Request) string { return r.Header.Get("X-GitHub-Delivery") }
func (githubProvider) event(r *http.Request) string      { return r.Header.Get("X-GitHub-Event") }

func (githubProvider) authenticate(r *http.Request, _ []byte) string {
	// X-Hub-Signature (SHA-1) is not enough.
	if r.Header.Get("X-Hub-Signature-256") == "" {
		return "missing X-Hub-Signature-256 (HMAC SHA-256 signature)"
	}
	return ""
}

func (githubProvider) verify(r *http.Request, secret, body []byte) string {
	sig := strings.TrimPrefix(r.Header.Get("X-Hub-Signature-256"), "sha256=")
	if !hmacMatches(secret, body, sig) {
		return "signature does not match"
	}
	return ""
}

func (githubProvider) decode(event string, body []byte) (any, string, error) {
	switch github.Event(event) {
	case "":
		return nil, "", errDecode{"missing X-GitHub-Event"}
	case github.PushEvent:
		return decodeJSON[github.PushPayload](body)
	case github.PingEvent:
		return decodeJSON[github.PingPayload](body)
	}
	return nil, "ferry acts on push events only", nil
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

type giteaProvider struct{}

func (giteaProvider) name() string                      { return "gitea" }
func (giteaProvider) deliveryID(r *http.Request) string { return r.Header.Get("X-Gitea-Delivery") }
func (giteaProvider) event(r *http.Request) string      { return r.Header.Get("X-Gitea-Event") }

func (giteaProvider) authenticate(r *http.Request, _ []byte) string {
	if r.Header.Get("X-Gitea-Signature") == "" {
		return "missing X-Gitea-Signature"
	}
	return ""
}

func (giteaProvider) verify(r *http.Request, secret, body []byte) string {
	if !hmacMatches(secret, body, r.Header.Get("X-Gitea-Signature")) {
		return "signature does not match"
	}
	return ""
}

func (giteaProvider) decode(event string, body []byte) (any, string, error) {
	switch gitea.Event(event) {
	case "":
		return nil, "", errDecode{"missing X-Gitea-Event"}
	case gitea.PushEvent:
		return decodeJSON[gitea.PushPayload](body)
	}
	return nil, "ferry acts on push events only", nil
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

// authenticate compares the token in constant time; hashing both sides
// first keeps the comparison from telling the secret's length.
func (gitlabProvider) authenticate(r *http.Request, secret []byte) string {
	got := sha512.Sum512([]byte(r.Header.Get("X-Gitlab-Token")))
	want := sha512.Sum512(secret)
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return "X-Gitlab-Token does not match"
	}
	return ""
}

// verify has nothing left to check: GitLab signs nothing, its token was
// checked from the headers.
func (gitlabProvider) verify(*http.Request, []byte, []byte) string { return "" }

func (gitlabProvider) decode(event string, body []byte) (any, string, error) {
	const ignored = "ferry acts on push and tag push events only"
	switch gitlab.Event(event) {
	case "":
		return nil, "", errDecode{"missing X-Gitlab-Event"}
	case gitlab.PushEvents:
		return decodeJSON[gitlab.PushEventPayload](body)
	case gitlab.TagEvents:
		return decodeJSON[gitlab.TagEventPayload](body)
	case gitlab.SystemHookEvents:
		// A system hook says what it carries in object_kind.
		var kind struct {
			ObjectKind string `json:"object_kind"`
		}
		if err := json.Unmarshal(body, &kind); err != nil {
			return nil, "", errDecode{"payload is not valid JSON for its event"}
		}
		switch kind.ObjectKind {
		case "push":
			return decodeJSON[gitlab.PushEventPayload](body)
		case "tag_push":
			return decodeJSON[gitlab.TagEventPayload](body)
		}
	}
	return nil, ignored, nil
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
