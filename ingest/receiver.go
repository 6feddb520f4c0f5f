package ingest

import (
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
	// MaxBytesInFlight caps the body bytes this receiver holds at once,
	// across its concurrent requests; a request that would pass it gets
	// 503 with Retry-After before its body is read. Ignored when Budget is
	// set.
	MaxBytesInFlight int64
	// Budget, when set, is the in-flight cap shared with other receivers.
	Budget *ByteBudget
	// PublishTimeout bounds the wait for JetStream, so that the sender,
	// which gives up after 10 s, always gets an answer.
	PublishTimeout time.Duration
	// Metrics counts deliveries by result; nil counts nothing.
	Metrics *Metrics
}

// DefaultReceiverOptions returns the defaults of `ferry serve`.
func DefaultReceiverOptions() ReceiverOptions {
	return ReceiverOptions{MaxBodyBytes: DefaultMaxBodyBytes, MaxBytesInFlight: DefaultMaxBytesInFlight, PublishTimeout: 8 * time.Second}
}

// ErrNoSecret is returned when a receiver would run without a secret and
// without the explicit opt-out.
var ErrNoSecret = errors.New("webhook secret is required (or explicitly skip verification)")

// retryAfterBusy is the Retry-After, in seconds, of a delivery refused
// because too many body bytes are in flight.
const retryAfterBusy = "5"

// provider adapts one git host's webhooks to the receiver. The receiver
// reads the body once; the provider checks it before it decodes it.
type provider interface {
	name() string
	// deliveryID and event read the provider's headers.
	deliveryID(r *http.Request) string
	event(r *http.Request) string
	// authenticate checks what the headers alone can tell, before the body
	// is read: a token, or that a signature is there at all. It returns
	// the reason of a refusal, or "".
	authenticate(r *http.Request, secret []byte) string
	// verify checks the signature of body. It returns the reason of a
	// refusal, or "".
	verify(r *http.Request, secret, body []byte) string
	// decode parses a verified body. ignore is set for an event ferry does
	// not act on; err for a payload that cannot be decoded.
	decode(event string, body []byte) (payload any, ignore string, err error)
	// push turns a decoded payload into a push event: ping is set for a
	// ping (answered 200), and the event is nil for events ferry does not
	// act on.
	push(delivery string, payload any) (ev *ferryv1.PushEvent, ping bool)
}

// errDecode is a body that does not decode; the receiver answers 400.
type errDecode struct{ reason string }

func (e errDecode) Error() string { return e.reason }

// Receiver is an http.Handler for one provider's push webhooks.
type Receiver struct {
	p      provider
	pub    EventPublisher
	opts   ReceiverOptions
	budget *ByteBudget
	log    *slog.Logger
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
	budget := opts.Budget
	if budget == nil {
		budget = NewByteBudget(opts.MaxBytesInFlight)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Receiver{p: p, pub: pub, opts: opts, budget: budget, log: log}, nil
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
	// Everything the headers can refuse is refused before a byte of the
	// body is read: an unsigned flood costs no memory.
	if r.ContentLength > rc.opts.MaxBodyBytes {
		answer(http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body exceeds %d bytes", rc.opts.MaxBodyBytes))
		return
	}
	if !rc.opts.InsecureSkipVerify {
		if reason := rc.p.authenticate(r, rc.opts.Secret); reason != "" {
			answer(http.StatusUnauthorized, "unauthorized", reason)
			return
		}
	}
	body, release, err := rc.readBody(w, r)
	defer release()
	if err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.Is(err, errBusy):
			w.Header().Set("Retry-After", retryAfterBusy)
			answer(http.StatusServiceUnavailable, "busy", "too many webhook bytes in flight; redeliver later")
		case errors.As(err, &tooBig):
			answer(http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body exceeds %d bytes", rc.opts.MaxBodyBytes))
		default:
			answer(http.StatusBadRequest, "bad_request", "reading body: "+err.Error())
		}
		return
	}
	// The signature is checked on the bytes as read, before any JSON
	// parser sees them.
	if !rc.opts.InsecureSkipVerify {
		if reason := rc.p.verify(r, rc.opts.Secret, body); reason != "" {
			answer(http.StatusUnauthorized, "unauthorized", reason)
			return
		}
	}
	payload, ignore, err := rc.p.decode(event, body)
	if err != nil {
		answer(http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if ignore != "" {
		log.InfoContext(ctx, "webhook ignored", "reason", ignore)
		answer(http.StatusAccepted, "ignored", ignore)
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

// errBusy is a body that would pass the in-flight budget.
var errBusy = errors.New("webhook bytes in flight exceed the budget")

// readBody reads the body once, capped at MaxBodyBytes, and reserves its
// bytes in the in-flight budget: a declared length up front, before
// anything is read, and a body of unknown length as it arrives. release
// gives the reservation back; it is never nil.
func (rc *Receiver) readBody(w http.ResponseWriter, r *http.Request) (body []byte, release func(), err error) {
	var reserved int64
	release = func() { rc.budget.release(reserved) }
	rd := http.MaxBytesReader(w, r.Body, rc.opts.MaxBodyBytes)
	if r.ContentLength >= 0 {
		if !rc.budget.tryAcquire(r.ContentLength) {
			return nil, release, errBusy
		}
		reserved = r.ContentLength
		body = make([]byte, r.ContentLength)
		if _, err := io.ReadFull(rd, body); err != nil {
			return nil, release, err
		}
		return body, release, nil
	}
	chunk := make([]byte, 32<<10)
	for {
		n, err := rd.Read(chunk)
		if n > 0 {
			if !rc.budget.tryAcquire(int64(n)) {
				return nil, release, errBusy
			}
			reserved += int64(n)
			body = append(body, chunk[:n]...)
		}
		if errors.Is(err, io.EOF) {
			return body, release, nil
		}
		if err != nil {
			return nil, release, err
		}
	}
}
