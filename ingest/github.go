package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-playground/webhooks/v6/github"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
)

// DefaultMaxBodyBytes caps a webhook body; GitHub sends at most 25 MiB.
const DefaultMaxBodyBytes = 25 << 20

// EventPublisher stores a push event durably. duplicate reports that an event
// with the same delivery ID was stored before.
type EventPublisher interface {
	PublishEvent(ctx context.Context, ev *ferryv1.PushEvent) (duplicate bool, err error)
}

// GitHubOptions configures the GitHub receiver.
type GitHubOptions struct {
	// Secret is the webhook secret. Empty is allowed only with
	// InsecureSkipVerify.
	Secret []byte
	// InsecureSkipVerify accepts unsigned requests. For local demos only.
	InsecureSkipVerify bool
	// MaxBodyBytes caps the request body; larger gets 413.
	MaxBodyBytes int64
	// PublishTimeout bounds the wait for JetStream, so that GitHub, which
	// gives up after 10 s, always gets an answer.
	PublishTimeout time.Duration
}

// DefaultGitHubOptions returns the defaults of `ferry serve`.
func DefaultGitHubOptions() GitHubOptions {
	return GitHubOptions{MaxBodyBytes: DefaultMaxBodyBytes, PublishTimeout: 8 * time.Second}
}

// ErrNoSecret is returned when a receiver would run without a secret and
// without the explicit opt-out.
var ErrNoSecret = errors.New("webhook secret is required (or explicitly skip verification)")

// GitHub receives GitHub push webhooks at POST /webhooks/github.
type GitHub struct {
	hook *github.Webhook
	pub  EventPublisher
	opts GitHubOptions
	log  *slog.Logger
}

// NewGitHub returns a GitHub receiver publishing through pub.
func NewGitHub(pub EventPublisher, opts GitHubOptions, log *slog.Logger) (*GitHub, error) {
	if len(opts.Secret) == 0 && !opts.InsecureSkipVerify {
		return nil, ErrNoSecret
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.PublishTimeout <= 0 {
		opts.PublishTimeout = DefaultGitHubOptions().PublishTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var hookOpts []github.Option
	if len(opts.Secret) > 0 {
		hookOpts = append(hookOpts, github.Options.Secret(string(opts.Secret)))
	}
	hook, err := github.New(hookOpts...)
	if err != nil {
		return nil, err
	}
	return &GitHub{hook: hook, pub: pub, opts: opts, log: log}, nil
}

type response struct {
	Status     string `json:"status"`
	Message    string `json:"message,omitempty"`
	DeliveryID string `json:"deliveryID,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, r response) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(r)
}

// ServeHTTP verifies, normalises and publishes one delivery.
func (g *GitHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	delivery := r.Header.Get("X-GitHub-Delivery")
	event := r.Header.Get("X-GitHub-Event")
	ctx, span := otel.Tracer(tracerName).Start(r.Context(), "ingest.webhook",
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("ferry.provider", "github"),
			attribute.String("ferry.delivery_id", delivery),
			attribute.String("ferry.event", event)))
	defer span.End()
	log := g.log.With("provider", "github", "delivery_id", delivery, "event", event)
	reject := func(code int, status, msg string) {
		span.SetStatus(codes.Error, msg)
		span.SetAttributes(attribute.Int("http.response.status_code", code))
		log.Warn("webhook rejected", "status", code, "reason", msg)
		writeJSON(w, code, response{Status: status, Message: msg, DeliveryID: delivery})
	}

	if r.Method != http.MethodPost {
		reject(http.StatusMethodNotAllowed, "method_not_allowed", "webhooks are POSTed")
		return
	}
	// The webhooks library reads the whole body without a limit, so read it
	// here first, capped, and hand it a copy.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.opts.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			reject(http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body exceeds %d bytes", g.opts.MaxBodyBytes))
			return
		}
		reject(http.StatusBadRequest, "bad_body", "reading body: "+err.Error())
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))

	payload, err := g.hook.Parse(r, github.PushEvent, github.PingEvent)
	switch {
	case err == nil:
	case errors.Is(err, github.ErrMissingHubSignatureHeader):
		reject(http.StatusUnauthorized, "unauthorized", "missing X-Hub-Signature-256")
		return
	case errors.Is(err, github.ErrHMACVerificationFailed):
		reject(http.StatusUnauthorized, "unauthorized", "signature does not match")
		return
	case errors.Is(err, github.ErrMissingGithubEventHeader):
		reject(http.StatusBadRequest, "bad_request", "missing X-GitHub-Event")
		return
	case errors.Is(err, github.ErrEventNotFound):
		log.Info("webhook ignored: event not acted on")
		writeJSON(w, http.StatusAccepted, response{Status: "ignored", Message: "ferry does not act on " + event + " events", DeliveryID: delivery})
		return
	default:
		reject(http.StatusBadRequest, "bad_payload", "payload is not a valid "+event+" event")
		return
	}

	switch p := payload.(type) {
	case github.PingPayload:
		writeJSON(w, http.StatusOK, response{Status: "pong", DeliveryID: delivery})
	case github.PushPayload:
		ev := pushFromGitHub(delivery, &p)
		span.SetAttributes(attribute.String("ferry.repo", ev.RepoUrl), attribute.String("ferry.revision", ev.After), attribute.String("ferry.ref", ev.Ref))
		pctx, cancel := context.WithTimeout(ctx, g.opts.PublishTimeout)
		dup, err := g.pub.PublishEvent(pctx, ev)
		cancel()
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
			log.Error("webhook not stored: queue unavailable", "error", err)
			writeJSON(w, http.StatusServiceUnavailable, response{Status: "unavailable", Message: "the event queue is unavailable; redeliver later", DeliveryID: delivery})
			return
		}
		status := "accepted"
		if dup {
			status = "duplicate"
		}
		log.Info("webhook stored", "repo", ev.RepoUrl, "ref", ev.Ref, "revision", ev.After, "duplicate", dup)
		writeJSON(w, http.StatusAccepted, response{Status: status, DeliveryID: delivery})
	}
}

const tracerName = "github.com/ferrycd/ferry/ingest"

func pushFromGitHub(delivery string, p *github.PushPayload) *ferryv1.PushEvent {
	ev := &ferryv1.PushEvent{
		Provider:      "github",
		DeliveryId:    delivery,
		RepoUrl:       p.Repository.CloneURL,
		Ref:           p.Ref,
		Before:        p.Before,
		After:         p.After,
		Created:       p.Created,
		Deleted:       p.Deleted,
		Forced:        p.Forced,
		DefaultBranch: p.Repository.DefaultBranch,
		ReceivedAt:    timestamppb.Now(),
	}
	for _, u := range []string{p.Repository.SSHURL, p.Repository.HTMLURL, p.Repository.GitURL} {
		if u != "" {
			ev.AlternateUrls = append(ev.AlternateUrls, u)
		}
	}
	for _, c := range p.Commits {
		ev.Commits = append(ev.Commits, &ferryv1.Commit{Id: c.ID, Added: c.Added, Modified: c.Modified, Removed: c.Removed})
	}
	return ev
}
