package cli

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// Argo CD's retry defaults, used for the fields a retry block leaves out.
const (
	defaultRetryLimit    = 5
	defaultRetryDuration = 5 * time.Second
	defaultRetryFactor   = 2
	defaultRetryMax      = 3 * time.Minute
)

// retryDelay says whether a sync that failed on its attempt-th try (1 for
// the first) is tried again under the app's retry policy, and after how
// long. Without a retry block a failed sync is not retried.
func retryDelay(app *v1alpha1.Application, attempt int) (time.Duration, bool) {
	if app.Spec.SyncPolicy == nil || app.Spec.SyncPolicy.Retry == nil {
		return 0, false
	}
	r := app.Spec.SyncPolicy.Retry
	limit := r.Limit
	if limit == 0 {
		limit = defaultRetryLimit
	}
	if limit >= 0 && int64(attempt) > limit {
		return 0, false
	}
	base, factor, maxD := defaultRetryDuration, int64(defaultRetryFactor), defaultRetryMax
	if b := r.Backoff; b != nil {
		if d, err := parseDuration(b.Duration); err == nil && d > 0 {
			base = d
		}
		if b.Factor != nil && *b.Factor > 0 {
			factor = *b.Factor
		}
		if d, err := parseDuration(b.MaxDuration); err == nil && d > 0 {
			maxD = d
		}
	}
	d := float64(base) * math.Pow(float64(factor), float64(attempt-1))
	if d > float64(maxD) {
		return maxD, true
	}
	return time.Duration(d), true
}

// parseDuration reads a Go duration or, as Argo CD allows, plain seconds.
func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	return time.ParseDuration(s)
}

// checkDestination accepts only the cluster ferry runs against.
func checkDestination(d v1alpha1.Destination) error {
	switch {
	case d.Server != "" && d.Server != v1alpha1.InClusterServer:
		return fmt.Errorf("destination server %q is not the cluster ferry runs in: ferry deploys only to %s (name %q)", d.Server, v1alpha1.InClusterServer, v1alpha1.InClusterName)
	case d.Name != "" && d.Name != v1alpha1.InClusterName:
		return fmt.Errorf("destination name %q is not the cluster ferry runs in: use %q or server %s", d.Name, v1alpha1.InClusterName, v1alpha1.InClusterServer)
	}
	return nil
}
