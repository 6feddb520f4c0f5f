package apply

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDeploymentBecomesHealthy(t *testing.T) {
	a, _ := newApplier(t)
	ns := newNamespace(t)
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns}
	mon := startMonitor(t, time.Hour)
	mustSync(t, a, opts, objects(t, deployment("web", "0", "nginx:1"), service("web"), configMap("cfg", nil, nil)))

	// kube-controller-manager makes a Deployment of 0 replicas Available.
	st := mon.wait(t, opts.App, func(s AppStatus) bool { return s.Health.Status == HealthHealthy })
	var got []string
	for _, r := range st.Health.Resources {
		got = append(got, r.Ref.Kind+" "+string(r.Status))
	}
	if d := cmp.Diff([]string{"ConfigMap Healthy", "Service Healthy", "Deployment Healthy"}, got); d != "" {
		t.Errorf("resource health (-want +got):\n%s", d)
	}
	h, err := a.Health(t.Context(), opts.App)
	if err != nil {
		t.Fatal(err)
	}
	if h.Status != HealthHealthy {
		t.Errorf("Applier.Health = %s (%s), want Healthy", h.Status, h.Message)
	}
}

// Without a scheduler or kubelet no Pod ever runs, so neither a bad image
// nor a missing ConfigMap can show as such: the Deployment is honestly
// Progressing (not Healthy) until its progress deadline passes, and then
// Degraded.
func TestUnhealthyDeploymentsAreReportedHonestly(t *testing.T) {
	cases := map[string]string{
		"with an image that does not exist": `
      containers:
      - name: app
        image: registry.invalid/no/such-image:0`,
		"with a ConfigMap that does not exist": `
      containers:
      - name: app
        image: nginx:1
        envFrom:
        - configMapRef: {name: not-there}`,
	}
	for name, podSpec := range cases {
		t.Run(name, func(t *testing.T) {
			a, _ := newApplier(t)
			ns := newNamespace(t)
			opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns}
			mon := startMonitor(t, time.Hour)
			mustSync(t, a, opts, objects(t, configMap("fine", nil, nil), `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  progressDeadlineSeconds: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:`+podSpec+"\n"))

			st := mon.wait(t, opts.App, func(s AppStatus) bool { return s.Health.Status == HealthDegraded })
			t.Logf("reported: %s: %s", st.Health.Status, st.Health.Message)
			if want := "Deployment.apps/" + ns + "/web: Progress deadline exceeded"; st.Health.Message != want {
				t.Errorf("health message = %q, want %q", st.Health.Message, want)
			}
			var seen []HealthStatus
			for _, s := range mon.deliveries(opts.App) {
				if len(seen) == 0 || seen[len(seen)-1] != s.Health.Status {
					seen = append(seen, s.Health.Status)
				}
			}
			for _, s := range seen {
				if s == HealthHealthy {
					t.Errorf("reported Healthy on the way: %v", seen)
				}
			}
		})
	}
}

func TestAppHealthTakesTheWorstObject(t *testing.T) {
	res := func(statuses ...HealthStatus) []ResourceHealth {
		var out []ResourceHealth
		for i, s := range statuses {
			out = append(out, ResourceHealth{Ref: ObjectRef{Kind: "ConfigMap", Namespace: "ns", Name: string(rune('a' + i))}, Status: s, Message: "m"})
		}
		return out
	}
	cases := []struct {
		in   []HealthStatus
		want HealthStatus
	}{
		{nil, HealthHealthy},
		{[]HealthStatus{HealthHealthy, HealthProgressing}, HealthProgressing},
		{[]HealthStatus{HealthProgressing, HealthMissing, HealthHealthy}, HealthMissing},
		{[]HealthStatus{HealthMissing, HealthDegraded, HealthProgressing}, HealthDegraded},
	}
	for _, c := range cases {
		if got := appHealth(res(c.in...)).Status; got != c.want {
			t.Errorf("appHealth(%v) = %s, want %s", c.in, got, c.want)
		}
	}
}
