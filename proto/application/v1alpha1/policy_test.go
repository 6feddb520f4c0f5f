package v1alpha1

import (
	"testing"
	"time"
)

func TestRetryDelay(t *testing.T) {
	three := int64(3)
	withRetry := func(r *Retry) *Application {
		return &Application{Spec: ApplicationSpec{SyncPolicy: &SyncPolicy{Retry: r}}}
	}
	cases := []struct {
		name    string
		app     *Application
		attempt int
		want    time.Duration
		retry   bool
	}{
		{"no retry block means no retry", &Application{}, 1, 0, false},
		{"Argo CD's defaults: 5s first", withRetry(&Retry{}), 1, 5 * time.Second, true},
		{"then doubling", withRetry(&Retry{}), 3, 20 * time.Second, true},
		{"five retries at most", withRetry(&Retry{}), 6, 0, false},
		{"capped at maxDuration", withRetry(&Retry{Limit: 10, Backoff: &Backoff{Duration: "1m", MaxDuration: "90s"}}), 3, 90 * time.Second, true},
		{"a custom factor and plain seconds", withRetry(&Retry{Limit: 4, Backoff: &Backoff{Duration: "2", Factor: &three}}), 3, 18 * time.Second, true},
		{"-1 retries forever", withRetry(&Retry{Limit: -1, Backoff: &Backoff{Duration: "1s", MaxDuration: "4s"}}), 100, 4 * time.Second, true},
	}
	for _, c := range cases {
		got, ok := RetryDelay(c.app, c.attempt)
		if ok != c.retry || got != c.want {
			t.Errorf("%s: RetryDelay(attempt %d) = %s, %v; want %s, %v", c.name, c.attempt, got, ok, c.want, c.retry)
		}
	}
}

func TestCheckDestination(t *testing.T) {
	for _, ok := range []Destination{{}, {Server: InClusterServer}, {Name: "in-cluster", Namespace: "x"}} {
		if err := CheckDestination(ok); err != nil {
			t.Errorf("%+v refused: %v", ok, err)
		}
	}
	for _, bad := range []Destination{{Server: "https://10.0.0.1:6443"}, {Name: "prod-eu"}} {
		if err := CheckDestination(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestSetCondition(t *testing.T) {
	t0, t1 := time.Unix(100, 0), time.Unix(200, 0)
	var st ApplicationStatus
	if st.SetCondition("Suspended", "", t0) {
		t.Fatal("clearing an absent condition reported a change")
	}
	if !st.SetCondition("Suspended", "paused", t0) || !st.HasCondition("Suspended", "paused") {
		t.Fatalf("condition not set: %+v", st.Conditions)
	}
	if st.SetCondition("Suspended", "paused", t1) || !st.Conditions[0].LastTransitionTime.Time.Equal(t0) {
		t.Fatalf("an unchanged message moved the transition time: %+v", st.Conditions)
	}
	if !st.SetCondition("Suspended", "again", t1) || !st.Conditions[0].LastTransitionTime.Time.Equal(t1) {
		t.Fatalf("a new message kept the old time: %+v", st.Conditions)
	}
	if !st.SetCondition("Suspended", "", t1) || len(st.Conditions) != 0 || !st.HasCondition("Suspended", "") {
		t.Fatalf("condition not cleared: %+v", st.Conditions)
	}
}

func TestPrimaryRepoURL(t *testing.T) {
	multi := ApplicationSpec{Sources: []ApplicationSource{{RepoURL: "https://a"}, {RepoURL: "https://b"}}}
	single := ApplicationSpec{Source: &ApplicationSource{RepoURL: "https://c"}}
	for spec, want := range map[*ApplicationSpec]string{&multi: "https://a", &single: "https://c", {}: ""} {
		if got := spec.PrimaryRepoURL(); got != want {
			t.Errorf("PrimaryRepoURL = %q, want %q", got, want)
		}
	}
}
