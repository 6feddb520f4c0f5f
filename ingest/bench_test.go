package ingest_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrycd/ferry/ingest"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// thousandApps registers 1,000 apps on one repository, one folder each.
func thousandApps(repoURL string) apps {
	list := make(apps, 0, 1000)
	for i := range 1000 {
		list = append(list, app(fmt.Sprintf("app-%04d", i), v1alpha1.ApplicationSource{RepoURL: repoURL, TargetRevision: "main", Path: fmt.Sprintf("apps/app-%04d", i)}))
	}
	return list
}

// BenchmarkWebhook measures signed GitHub push deliveries over HTTP on
// loopback, from request to answer, which ferry sends only once JetStream
// has stored the event (file store, embedded server).
func BenchmarkWebhook(b *testing.B) {
	rc, err := ingest.NewGitHub(queue, ingest.ReceiverOptions{Secret: secret}, nil)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	body := githubPush()
	sig := sign256(body)
	var seq atomic.Int64
	var mu sync.Mutex
	lat := make([]time.Duration, 0, b.N)
	b.SetParallelism(4)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		client := srv.Client()
		local := make([]time.Duration, 0, 1024)
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
			req.Header.Set("X-GitHub-Event", "push")
			req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), seq.Add(1)))
			req.Header.Set("X-Hub-Signature-256", sig)
			t0 := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 202 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
			local = append(local, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, local...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "req/s")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	}
}

// BenchmarkDispatch measures the dispatch of one push against 1,000
// registered apps: matching every app, then enqueueing the one it touches.
func BenchmarkDispatch(b *testing.B) {
	repoURL := "https://github.com/acme/bench-dispatch.git"
	d := ingest.NewDispatcher(thousandApps(repoURL), queue, ingest.DispatchOptions{})
	b.Run("touches one app", func(b *testing.B) {
		ev := push("apps/app-0420/values.yaml")
		ev.RepoUrl = repoURL
		for b.Loop() {
			if err := d.Dispatch(b.Context(), ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("touches no app", func(b *testing.B) {
		ev := push("docs/readme.md")
		ev.RepoUrl = repoURL
		for b.Loop() {
			if err := d.Dispatch(b.Context(), ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}
