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

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
)

const tracerName = "github.com/ferrycd/ferry/ingest"

// DefaultMaxBodyBytes caps a webhook body; GitHub sends at most 25 MiB.
const DefaultMaxBodyBytes = 25 << 20

// EventPublisher stores a push event durably. duplicate reports that an event
// with the same delivery ID was stored within the duplicate window.
type EventPublisher interface {
	PublishEvent(ctx context.Context, ev *ferryv1.PushEvent) (duplicate bool, err error)
}

// ReceiverOptions configures a webhook receiver.
type ReceiverOptions struct {
	// Secret is the webhook secret (GitHub and Gitea: HMAC key; GitLab:
	// the token). Empty is allowed only with InsecureSkipVerify.
	Secret []byte
	// InsecureSkipVerify accepts unsigned requests. For local demos only.
	InsecureSkipVerify bool
	// MaxBodyBytes caps the request body; larger gets 413.
	MaxBodyBytes int64
	// PublishTimeout bounds the wait for JetStream, so that the sender,
	// which gives up after 10 s, always gets an answer.
	PublishTimeout time.Duration
	// Metrics counts deliveries by result; nil counts nothing.
	Metrics *Metrics
}

// DefaultReceiverOptions returns the defaults of `ferry serve`.
func DefaultReceiverOptions() ReceiverOptions {
	return ReceiverOptions{MaxBodyBytes: DefaultMaxBodyBytes, PublishTimeout: 8 * time.Second}
}

// ErrNoSecret is returned when a receiver would run without a secret and
// without the explicit opt-out.
var ErrNoSecret = errors.New("webhook secret is required (or explicitly skip verification)")

// provider adapts one git host's webhooks to the receiver.
type provider interface {
	name() string
	// deliveryID and event read the provider's headers.
	deliveryID(r *http.Request) string
	event(r *http.Request) string
	// parse verifies and decodes the request with the webhooks library.
	parse(r *http.Request) (any, error)
	// rejection maps a parse error to an HTTP answer.
	rejection(err error) (code int, reason string)
	// push turns a decoded payload into a push event: ping is set for a
	// ping (answered 200), and the event is nil for events ferry does not
	// act on.
	push(delivery string, payload any) (ev *ferryv1.PushEvent, ping bool)
}

// Receiver is an http.Handler for one provider's push webhooks.
type Receiver struct {
	p    provider
	pub  EventPublisher
	opts ReceiverOptions
	log  *slog.Logger
}

func newReceiver(p provider, pub EventPublisher, opts ReceiverOptions, log *slog.Logger) (*Receiver, error) {
	if len(opts.Secret) == 0 && !opts.InsecureSkipVerify {
		return nil, ErrNoSecret
	}
	d := DefaultReceiverOptions()
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = d.MaxBodyBytes
	}
	if opts.PublishTimeout <= 0 {
		opts.PublishTimeout = d.PublishTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Receiver{p: p, pub: pub, opts: opts, log: log}, nil
}

// Response is the JSON body of every webhook answer.
type Response struct {
	Status     string `json:"status"`
	Message    string `json:"message,omitempty"`
	DeliveryID string `json:"deliveryID,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// ServeHTTP verifies, normalises and publishes one delivery. It answers 2xx
// only after JetStream stored the event.
func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	provider := rc.p.name()
	delivery := rc.p.deliveryID(r)
	event := rc.p.event(r)
	ctx, span := otel.Tracer(tracerName).Start(r.Context(), "ingest.webhook",
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("ferry.provider", provider),
			attribute.String("ferry.delivery_id", delivery),
			attribute.String("ferry.event", event)))
	defer span.End()
	log := rc.log.With("provider", provider, "delivery_id", delivery, "event", event)
	answer := func(code int, result, msg string) {
		rc.opts.Metrics.webhook(provider, result)
		span.SetAttributes(attribute.Int("http.response.status_code", code), attribute.String("ferry.result", result))
		if code >= 400 {
			span.SetStatus(codes.Error, msg)
			log.WarnContext(ctx, "webhook rejected", "status", code, "result", result, "reason", msg)
		}
		writeJSON(w, code, Response{Status: result, Message: msg, DeliveryID: delivery})
	}

	if r.Method != http.MethodPost {
		answer(http.StatusMethodNotAllowed, "method_not_allowed", "webhooks are POSTed")
		return
	}
	// The webhooks library reads the whole body without a limit, so read it
	// here first, capped, and hand it a copy.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, rc.opts.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			answer(http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body exceeds %d bytes", rc.opts.MaxBodyBytes))
			return
		}
		answer(http.StatusBadRequest, "bad_body", "reading body: "+err.Error())
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))

	payload, err := rc.p.parse(r)
	if err != nil {
		code, reason := rc.p.rejection(err)
		if code == http.StatusAccepted {
			log.InfoContext(ctx, "webhook ignored", "reason", reason)
			answer(code, "ignored", reason)
			return
		}
		result := "bad_request"
		if code == http.StatusUnauthorized {
			result = "unauthorized"
		}
		answer(code, result, reason)
		return
	}
	ev, ping := rc.p.push(delivery, payload)
	if ping {
		answer(http.StatusOK, "pong", "")
		return
	}
	if ev == nil {
		answer(http.StatusAccepted, "ignored", "ferry does not act on "+event+" events")
		return
	}
	span.SetAttributes(attribute.String("ferry.repo", ev.RepoUrl), attribute.String("ferry.revision", ev.After), attribute.String("ferry.ref", ev.Ref))
	pctx, cancel := context.WithTimeout(ctx, rc.opts.PublishTimeout)
	dup, err := rc.pub.PublishEvent(pctx, ev)
	cancel()
	if err != nil {
		rc.opts.Metrics.webhook(provider, "unavailable")
		span.SetStatus(codes.Error, err.Error())
		log.ErrorContext(ctx, "webhook not stored: queue unavailable", "error", err)
		writeJSON(w, http.StatusServiceUnavailable, Response{Status: "unavailable", Message: "the event queue is unavailable; redeliver later", DeliveryID: delivery})
		return
	}
	result := "accepted"
	if dup {
		result = "duplicate"
	}
	log.InfoContext(ctx, "webhook stored", "repo", ev.RepoUrl, "ref", ev.Ref, "revision", ev.After, "duplicate", dup)
	answer(http.StatusAccepted, result, "")
}
