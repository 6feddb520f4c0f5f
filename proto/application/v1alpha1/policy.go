package v1alpha1

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ferrycd/ferry/proto/job"
)

// Argo CD's retry defaults, used for the fields a retry block leaves out.
const (
	defaultRetryLimit    = 5
	defaultRetryDuration = 5 * time.Second
	defaultRetryFactor   = 2
	defaultRetryMax      = 3 * time.Minute
)

// RetryDelay says whether a sync that failed on its attempt-th try (1 for
// the first) is tried again under the app's retry policy, and after how
// long. Without a retry block a failed sync is not retried.
func RetryDelay(app *Application, attempt int) (time.Duration, bool) {
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
	b := job.Backoff{First: defaultRetryDuration, Factor: defaultRetryFactor, Max: defaultRetryMax}
	if rb := r.Backoff; rb != nil {
		if d, err := parseDuration(rb.Duration); err == nil && d > 0 {
			b.First = d
		}
		if rb.Factor != nil && *rb.Factor > 0 {
			b.Factor = float64(*rb.Factor)
		}
		if d, err := parseDuration(rb.MaxDuration); err == nil && d > 0 {
			b.Max = d
		}
	}
	return b.Delay(attempt), true
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

// CheckDestination accepts only the cluster ferry runs against.
func CheckDestination(d Destination) error {
	switch {
	case d.Server != "" && d.Server != InClusterServer:
		return fmt.Errorf("destination server %q is not the cluster ferry runs in: ferry deploys only to %s (name %q)", d.Server, InClusterServer, InClusterName)
	case d.Name != "" && d.Name != InClusterName:
		return fmt.Errorf("destination name %q is not the cluster ferry runs in: use %q or server %s", d.Name, InClusterName, InClusterServer)
	}
	return nil
}

// PrimaryRepoURL is the repository of the app's first source: the one its
// commit statuses and re-applies are reported against. Empty when the app
// has no source.
func (s *ApplicationSpec) PrimaryRepoURL() string {
	if srcs := s.AllSources(); len(srcs) > 0 {
		return srcs[0].RepoURL
	}
	return ""
}

// UnsupportedMessage is the message of the UnsupportedFields condition of
// an app converted from an Argo CD document, empty when nothing was
// dropped.
func UnsupportedMessage(app *Application) string {
	fields := app.Annotations[AnnotationUnsupported]
	if fields == "" {
		return ""
	}
	return "ferry does not support these fields of the Argo CD Application yet, and ignores them: " + strings.ReplaceAll(fields, ",", ", ")
}
