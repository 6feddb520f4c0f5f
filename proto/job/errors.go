package job

import (
	"context"
	"errors"
	"time"
)

// terminalError marks a failure that retrying cannot fix.
type terminalError struct{ err error }

func (e *terminalError) Error() string { return e.err.Error() }
func (e *terminalError) Unwrap() error { return e.err }

// Terminal wraps err so that the job ends at once instead of being retried.
func Terminal(err error) error {
	if err == nil {
		return nil
	}
	return &terminalError{err: err}
}

// IsTerminal reports whether err, or an error it wraps, is terminal.
func IsTerminal(err error) bool {
	var t *terminalError
	return errors.As(err, &t)
}

// retryError asks for a redelivery after a given delay, outside the
// worker's own delivery limit: the caller counts attempts itself (an app's
// syncPolicy.retry), through Attempt.
type retryError struct {
	err   error
	after time.Duration
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// RetryAfter wraps err so that the job is delivered again after d.
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &retryError{err: err, after: d}
}

// RetryDelay returns the delay err asked for with RetryAfter. A terminal
// error never asks for one.
func RetryDelay(err error) (time.Duration, bool) {
	var r *retryError
	if !errors.As(err, &r) || IsTerminal(err) {
		return 0, false
	}
	return r.after, true
}

// ErrSkip is returned by a role that decided, on purpose, to do nothing
// with a job (a suspended app, a stale request): the job is acked and
// nothing is published.
var ErrSkip = errors.New("job skipped")

type attemptKey struct{}

// WithAttempt returns ctx carrying n, the delivery of the job being
// handled (1 for the first).
func WithAttempt(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, attemptKey{}, n)
}

// Attempt returns which delivery of its job the handler running with ctx
// is: 1 for the first, and 1 when ctx carries none.
func Attempt(ctx context.Context) int {
	if n, ok := ctx.Value(attemptKey{}).(int); ok && n > 0 {
		return n
	}
	return 1
}
