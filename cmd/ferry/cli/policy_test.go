package cli

import (
	"testing"
	"time"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

func TestRetryDelay(t *testing.T) {
	three := int64(3)
	withRetry := func(r *v1alpha1.Retry) *v1alpha1.Application {
		return &v1alpha1.Application{Spec: v1alpha1.ApplicationSpec{SyncPolicy: &v1alpha1.SyncPolicy{Retry: r}}}
	}
	cases := []struct {
		name    string
		app     *v1alpha1.Application
		attempt int
		want    time.Duration
		retry   bool
	}{
		{"no retry block means no retry", &v1alpha1.Application{}, 1, 0, false},
		{"Argo CD's defaults: 5s first", withRetry(&v1alpha1.Retry{}), 1, 5 * time.Second, true},
		{"then doubling", withRetry(&v1alpha1.Retry{}), 3, 20 * time.Second, true},
		{"five retries at most", withRetry(&v1alpha1.Retry{}), 6, 0, false},
		{"capped at maxDuration", withRetry(&v1alpha1.Retry{Limit: 10, Backoff: &v1alpha1.Backoff{Duration: "1m", MaxDuration: "90s"}}), 3, 90 * time.Second, true},
		{"a custom factor and plain seconds", withRetry(&v1alpha1.Retry{Limit: 4, Backoff: &v1alpha1.Backoff{Duration: "2", Factor: &three}}), 3, 18 * time.Second, true},
		{"-1 retries forever", withRetry(&v1alpha1.Retry{Limit: -1, Backoff: &v1alpha1.Backoff{Duration: "1s", MaxDuration: "4s"}}), 100, 4 * time.Second, true},
	}
	for _, c := range cases {
		got, ok := retryDelay(c.app, c.attempt)
		if ok != c.retry || got != c.want {
			t.Errorf("%s: retryDelay(attempt %d) = %s, %v; want %s, %v", c.name, c.attempt, got, ok, c.want, c.retry)
		}
	}
}

func TestCheckDestination(t *testing.T) {
	for _, ok := range []v1alpha1.Destination{{}, {Server: v1alpha1.InClusterServer}, {Name: "in-cluster", Namespace: "x"}} {
		if err := checkDestination(ok); err != nil {
			t.Errorf("%+v refused: %v", ok, err)
		}
	}
	for _, bad := range []v1alpha1.Destination{{Server: "https://10.0.0.1:6443"}, {Name: "prod-eu"}} {
		if err := checkDestination(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
