package apply

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// benchParallelism caps the requests in flight, for ferry and for the
// bare loop alike.
const benchParallelism = 16

// benchApp returns the 4 objects of one benchmark app: the Flux workload
// shape.
func benchApp(i int) []*unstructured.Unstructured {
	name := fmt.Sprintf("app%04d", i)
	docs := []map[string]any{
		{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": name}},
		{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": name},
			"spec": map[string]any{"selector": map[string]any{"app": name}, "ports": []any{map[string]any{"port": int64(80)}}}},
		{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": name},
			"spec": map[string]any{
				"replicas": int64(0),
				"selector": map[string]any{"matchLabels": map[string]any{"app": name}},
				"template": map[string]any{
					"metadata": map[string]any{"labels": map[string]any{"app": name}},
					"spec": map[string]any{"serviceAccountName": name,
						"containers": []any{map[string]any{"name": "app", "image": "nginx:1"}}},
				},
			}},
		{"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": map[string]any{"name": name},
			"spec": map[string]any{"rules": []any{map[string]any{"host": name + ".example.com", "http": map[string]any{
				"paths": []any{map[string]any{"path": "/", "pathType": "Prefix", "backend": map[string]any{
					"service": map[string]any{"name": name, "port": map[string]any{"number": int64(80)}}}}}}}}}},
	}
	out := make([]*unstructured.Unstructured, len(docs))
	for i, d := range docs {
		out[i] = &unstructured.Unstructured{Object: d}
	}
	return out
}

// limitedConfig caps the requests in flight through cfg at n and logs
// them.
func limitedConfig(n int, log *requestLog) *rest.Config {
	cfg := countingConfig(log)
	slots := make(chan struct{}, n)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			slots <- struct{}{}
			defer func() { <-slots }()
			return rt.RoundTrip(r)
		})
	})
	return cfg
}

var benchGVR = map[string]schema.GroupVersionResource{
	"ServiceAccount": {Version: "v1", Resource: "serviceaccounts"},
	"Service":        {Version: "v1", Resource: "services"},
	"Deployment":     deployGVR,
	"Ingress":        {Group: "networking.k8s.io", Version: "v1", Resource: "ingresses"},
}

// BenchmarkSync applies N apps of 4 objects each with ferry's Sync, and
// the same objects with a bare client-go server-side-apply loop, both at
// most benchParallelism requests in flight, and reports ferry's time as a
// multiple of the bare loop's, and the requests of a first and of a no-op
// sync.
func BenchmarkSync(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("apps=%d", n), func(b *testing.B) { benchSync(b, n) })
	}
}

func benchSync(b *testing.B, n int) {
	ctx := b.Context()
	var ferryTotal, bareTotal, noopTotal time.Duration
	var firstReqs, noopReqs, noopWrites int
	for iter := 0; iter < b.N; iter++ {
		b.StopTimer()
		ferryNS := benchNamespace(b, fmt.Sprintf("bench-ferry-%d-%d-%d", n, iter, time.Now().UnixNano()%1e6))
		bareNS := benchNamespace(b, fmt.Sprintf("bench-bare-%d-%d-%d", n, iter, time.Now().UnixNano()%1e6))

		// The bare loop: one SSA patch per object.
		bareLog := &requestLog{}
		bareDyn := dynamic.NewForConfigOrDie(limitedConfig(benchParallelism, bareLog))
		b.StartTimer()
		start := time.Now()
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(benchParallelism)
		for i := range n {
			for _, obj := range benchApp(i) {
				g.Go(func() error {
					obj.SetNamespace(bareNS)
					data, err := json.Marshal(obj.Object)
					if err != nil {
						return err
					}
					force := true
					_, err = bareDyn.Resource(benchGVR[obj.GetKind()]).Namespace(bareNS).Patch(gctx, obj.GetName(), types.ApplyPatchType, data,
						metav1.PatchOptions{FieldManager: "bare", Force: &force})
					return err
				})
			}
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		bareTotal += time.Since(start)
		b.StopTimer()
		waitDeploymentsObserved(b, bareNS, n)

		// ferry: every app a Sync of its own, with inventory, prune and
		// health bookkeeping.
		ferryLog := &requestLog{}
		a, err := New(limitedConfig(benchParallelism, ferryLog), Options{InventoryNamespace: inventoryNS, Parallelism: benchParallelism}, nil)
		if err != nil {
			b.Fatal(err)
		}
		syncAll := func() error {
			g, gctx := errgroup.WithContext(ctx)
			g.SetLimit(benchParallelism)
			for i := range n {
				g.Go(func() error {
					opts := SyncOptions{App: fmt.Sprintf("%s/app%04d", ferryNS, i), Namespace: ferryNS, Prune: true}
					res, err := a.Sync(gctx, opts, benchApp(i))
					if err == nil && res.Err != nil {
						err = res.Err
					}
					return err
				})
			}
			return g.Wait()
		}
		// Warm the REST mapping, as a running ferry has it.
		for _, gvr := range benchGVR {
			_, _ = a.mapper.ResourceFor(gvr)
		}
		ferryLog.reset()
		b.StartTimer()
		start = time.Now()
		if err := syncAll(); err != nil {
			b.Fatal(err)
		}
		ferryTotal += time.Since(start)
		b.StopTimer()
		firstReqs += len(ferryLog.all())
		waitDeploymentsObserved(b, ferryNS, n)

		ferryLog.reset()
		start = time.Now()
		if err := syncAll(); err != nil {
			b.Fatal(err)
		}
		noopTotal += time.Since(start)
		noopReqs += len(ferryLog.all())
		noopWrites += len(ferryLog.writes())
		b.StartTimer()
	}
	iters := float64(b.N)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ferryTotal.Seconds()/iters, "ferry-s")
	b.ReportMetric(bareTotal.Seconds()/iters, "bare-s")
	b.ReportMetric(ferryTotal.Seconds()/bareTotal.Seconds(), "ferry/bare")
	b.ReportMetric(float64(firstReqs)/iters/float64(n), "req/app-first")
	b.ReportMetric(noopTotal.Seconds()/iters, "noop-s")
	b.ReportMetric(float64(noopReqs)/iters/float64(n), "req/app-noop")
	b.ReportMetric(float64(noopWrites)/iters/float64(n), "writes/app-noop")
}

func benchNamespace(b *testing.B, name string) string {
	b.Helper()
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": name}}}
	if _, err := testDyn.Resource(namespaces).Create(b.Context(), ns, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = testDyn.Resource(namespaces).Delete(context.Background(), name, metav1.DeleteOptions{}) })
	return name
}

// waitDeploymentsObserved waits until kube-controller-manager has caught
// up with the Deployments just applied, so that its writes do not load
// the API server during the next measurement.
func waitDeploymentsObserved(b *testing.B, ns string, n int) {
	b.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		l, err := testDyn.Resource(deployGVR).Namespace(ns).List(b.Context(), metav1.ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
		done := 0
		for _, d := range l.Items {
			og, _, _ := unstructured.NestedInt64(d.Object, "status", "observedGeneration")
			if og == d.GetGeneration() {
				done++
			}
		}
		if done == n {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.Fatalf("kube-controller-manager did not observe %d Deployments in %s", n, ns)
}
