package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/ferrycd/ferry/cmd/ferry/cli"
	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/integration/testenv"
	"github.com/ferrycd/ferry/integration/webhook"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	"github.com/ferrycd/ferry/worker"
)

// fluxApp is one app of Flux's benchmark workload: a ServiceAccount, a
// Service, a Deployment with 0 replicas and an Ingress, in its own
// Namespace.
func fluxApp(ns, image string) string {
	return strings.NewReplacer("NS", ns, "IMAGE", image).Replace(`apiVersion: v1
kind: Namespace
metadata:
  name: NS
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: podinfo
  namespace: NS
---
apiVersion: v1
kind: Service
metadata:
  name: podinfo
  namespace: NS
spec:
  selector: {app: podinfo}
  ports:
    - {name: http, port: 9898, targetPort: 9898}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
  namespace: NS
spec:
  replicas: 0
  selector:
    matchLabels: {app: podinfo}
  template:
    metadata:
      labels: {app: podinfo}
    spec:
      serviceAccountName: podinfo
      containers:
        - name: podinfo
          image: IMAGE
          ports:
            - {containerPort: 9898}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: podinfo
  namespace: NS
spec:
  rules:
    - host: NS.example.com
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service: {name: podinfo, port: {number: 9898}}
`)
}

// floorApply is the floor ferry is measured against: a bare client-go
// server-side-apply loop over the same objects at the same parallelism,
// Namespaces first.
func floorApply(ctx context.Context, cfg *rest.Config, docs []string, parallelism int) error {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	gvr := map[string]schema.GroupVersionResource{
		"Namespace":      {Version: "v1", Resource: "namespaces"},
		"ServiceAccount": {Version: "v1", Resource: "serviceaccounts"},
		"Service":        {Version: "v1", Resource: "services"},
		"Deployment":     {Group: "apps", Version: "v1", Resource: "deployments"},
		"Ingress":        {Group: "networking.k8s.io", Version: "v1", Resource: "ingresses"},
	}
	var nss, rest []*unstructured.Unstructured
	for _, d := range docs {
		for _, part := range strings.Split(d, "\n---\n") {
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(part), &u.Object); err != nil {
				return err
			}
			if u.GetKind() == "Namespace" {
				nss = append(nss, u)
			} else {
				rest = append(rest, u)
			}
		}
	}
	force := true
	for _, batch := range [][]*unstructured.Unstructured{nss, rest} {
		g, ctx := errgroup.WithContext(ctx)
		g.SetLimit(parallelism)
		for _, u := range batch {
			g.Go(func() error {
				data, _ := json.Marshal(u.Object)
				ri := dyn.Resource(gvr[u.GetKind()])
				var err error
				if ns := u.GetNamespace(); ns != "" {
					_, err = ri.Namespace(ns).Patch(ctx, u.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: "floor", Force: &force})
				} else {
					_, err = ri.Patch(ctx, u.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: "floor", Force: &force})
				}
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkColdSync syncs N apps of Flux's benchmark workload from cold
// through the whole of ferry (git, NATS, render, apply, status) and, in the
// same run against the same control plane, applies the same objects with a
// bare server-side-apply loop; it reports both and their ratio. It then
// pushes image-tag bumps of one app and reports the push-to-applied p50,
// and ferry's peak heap.
//
//	go tool task bench:e2e   (N=1000; FERRY_BENCH_APPS overrides)
func BenchmarkColdSync(b *testing.B) {
	n := 1000
	if v := os.Getenv("FERRY_BENCH_APPS"); v != "" {
		fmt.Sscan(v, &n)
	}
	opts := testenv.DefaultOptions()
	opts.WithControllerManager = false // as when the floor was first measured
	cp, err := testenv.Start(b.Context(), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer cp.Stop()
	const parallelism = 16

	git := gitserver.New(b)
	repo := git.NewRepo(b, "platform/bench")
	var floorDocs []string
	for i := range n {
		repo.WriteFile(b, fmt.Sprintf("apps/app-%04d/all.yaml", i), fluxApp(fmt.Sprintf("app-%04d", i), "ghcr.io/stefanprodan/podinfo:6.7.0"))
		floorDocs = append(floorDocs, fluxApp(fmt.Sprintf("floor-%04d", i), "ghcr.io/stefanprodan/podinfo:6.7.0"))
	}
	head := repo.Commit(b, "apps")

	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = 1000, 2000
	a0, e0, s0 := cpuSeconds()
	start := time.Now()
	if err := floorApply(b.Context(), cfg, floorDocs, parallelism); err != nil {
		b.Fatal(err)
	}
	floor := time.Since(start)
	a1, e1, s1 := cpuSeconds()
	b.Logf("floor CPU: kube-apiserver %.2fs, etcd %.2fs, test process %.2fs", a1-a0, e1-e0, s1-s0)

	// The Applications exist before ferry starts, as after a restart with
	// an empty store: every one of them is due.
	dyn := dynamic.NewForConfigOrDie(cfg)
	if _, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Apply(b.Context(), "ferry",
		&unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "ferry"}}},
		metav1.ApplyOptions{FieldManager: "bench"}); err != nil {
		b.Fatal(err)
	}
	crd := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(v1alpha1.CRD, &crd.Object); err != nil {
		b.Fatal(err)
	}
	crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	if _, err := dyn.Resource(crds).Apply(b.Context(), crd.GetName(), crd, metav1.ApplyOptions{FieldManager: "bench"}); err != nil {
		b.Fatal(err)
	}
	waitFor(b, "the CRD", func() bool {
		_, err := dyn.Resource(appGVR).Namespace("ferry").List(b.Context(), metav1.ListOptions{Limit: 1})
		return err == nil
	})
	g, gctx := errgroup.WithContext(b.Context())
	g.SetLimit(parallelism)
	for i := range n {
		g.Go(func() error {
			app := map[string]any{
				"apiVersion": v1alpha1.APIVersion, "kind": v1alpha1.Kind,
				"metadata": map[string]any{"name": fmt.Sprintf("app-%04d", i), "namespace": "ferry"},
				"spec": map[string]any{
					"source":      map[string]any{"repoURL": repo.URL(), "targetRevision": "main", "path": fmt.Sprintf("apps/app-%04d", i)},
					"destination": map[string]any{"namespace": fmt.Sprintf("app-%04d", i)},
					"syncPolicy":  map[string]any{"automated": map[string]any{"prune": true}},
				},
			}
			_, err := dyn.Resource(appGVR).Namespace("ferry").Create(gctx, &unstructured.Unstructured{Object: app}, metav1.CreateOptions{})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peakHeap atomic.Uint64
	stopSampling := make(chan struct{})
	go func() {
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peakHeap.Load() {
				peakHeap.Store(ms.HeapInuse)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	defer close(stopSampling)

	dir := b.TempDir()
	secretFile := filepath.Join(dir, "secret")
	_ = os.WriteFile(secretFile, []byte(testSecret), 0o600)
	o := cli.DefaultServeOptions()
	var reads, writes atomic.Int64
	counted := rest.CopyConfig(cp.Config)
	counted.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodGet && r.URL.Query().Get("watch") != "true" {
				reads.Add(1)
			} else if r.Method != http.MethodGet {
				writes.Add(1)
			}
			return rt.RoundTrip(r)
		})
	})
	o.Listen, o.DataDir, o.RestConfig, o.GitHubWebhookSecretFile = "127.0.0.1:0", filepath.Join(dir, "data"), counted, secretFile
	o.LogLevel, o.Stderr, o.PollInterval = "error", os.Stderr, 0
	// The benchmark reads only /metrics, on a loopback listener of its own.
	o.APIListen, o.AnonymousRead = "127.0.0.1:0", true
	ready := make(chan cli.ServeInfo, 1)
	o.OnReady = func(i cli.ServeInfo) { ready <- i }
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	b.ResetTimer()
	a0, e0, s0 = cpuSeconds()
	start = time.Now()
	go func() { served <- cli.Serve(ctx, o) }()
	info := <-ready
	startup := time.Since(start)
	if path := os.Getenv("FERRY_BENCH_APISERVER_PROFILE"); path != "" {
		// A CPU profile of kube-apiserver while ferry syncs, to see where
		// the API server's work goes.
		go func() {
			rc, err := rest.RESTClientFor(func() *rest.Config {
				c := rest.CopyConfig(cp.Config)
				c.GroupVersion = &schema.GroupVersion{Version: "v1"}
				c.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
				c.APIPath = "/api"
				c.Timeout = time.Minute
				return c
			}())
			if err != nil {
				b.Log(err)
				return
			}
			data, err := rc.Get().AbsPath("/debug/pprof/profile").Param("seconds", "4").DoRaw(context.Background())
			if err != nil {
				b.Log(err)
				return
			}
			_ = os.WriteFile(path, data, 0o644)
		}()
	}
	f := &ferry{url: "http://" + info.HTTPAddr, api: "http://" + info.APIAddr, info: info}
	// Count finished syncs from ferry's result stream rather than by
	// listing Applications: a poll of the API server would load the very
	// thing being measured.
	js, err := jetstream.New(info.NATS)
	if err != nil {
		b.Fatal(err)
	}
	synced := func() int {
		st, err := js.Stream(context.Background(), worker.StreamResults)
		if err != nil {
			return 0
		}
		si, err := st.Info(context.Background(), jetstream.WithSubjectFilter("ferry.results.>"))
		if err != nil {
			return 0
		}
		return len(si.State.Subjects)
	}
	waitFor(b, "every app to sync", func() bool { return synced() == n })
	cold := time.Since(start)
	b.StopTimer()
	coldReads, coldWrites := reads.Load(), writes.Load()
	a1, e1, s1 = cpuSeconds()
	b.Logf("ferry CPU: kube-apiserver %.2fs, etcd %.2fs, test process (ferry, git server) %.2fs", a1-a0, e1-e0, s1-s0)
	if resp, err := http.Get(f.api + "/metrics"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, stage := range []string{"render", "apply", "sync"} {
			re := regexp.MustCompile(`ferry_sync_duration_seconds_sum\{result="success",stage="` + stage + `"\} ([0-9.e+-]+)`)
			if m := re.FindStringSubmatch(string(body)); m != nil {
				v, _ := strconv.ParseFloat(m[1], 64)
				b.ReportMetric(v/float64(n)*1000, stage+"-ms/app")
			}
		}
	}

	// One-app pushes: an image-tag bump of one app, webhook to applied.
	var lat []time.Duration
	prev := head
	kube := dynamic.NewForConfigOrDie(cfg)
	deploys := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	for i := range 15 {
		tag := fmt.Sprintf("ghcr.io/stefanprodan/podinfo:6.7.%d", i+1)
		repo.WriteFile(b, "apps/app-0042/all.yaml", fluxApp("app-0042", tag))
		next := repo.Commit(b, "bump app-0042")
		body := webhook.Push{CloneURL: repo.URL(), FullName: "platform/bench", DefaultBranch: "main", Ref: "refs/heads/main",
			Before: prev, After: next, Commits: []webhook.Commit{{ID: next, Modified: []string{"apps/app-0042/all.yaml"}}}}.Payload()
		sent := time.Now()
		if resp, err := webhook.Send(context.Background(), f.url+"/webhooks/github", "push", "bench-"+next, []byte(testSecret), body); err != nil || resp.Status != 202 {
			b.Fatalf("webhook: %v %+v", err, resp)
		}
		waitFor(b, "the bump", func() bool {
			d, err := kube.Resource(deploys).Namespace("app-0042").Get(context.Background(), "podinfo", metav1.GetOptions{})
			if err != nil {
				return false
			}
			cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
			return len(cs) > 0 && cs[0].(map[string]any)["image"] == tag
		})
		lat = append(lat, time.Since(sent))
		prev = next
	}
	slices.Sort(lat)
	cancel()
	<-served

	b.ReportMetric(floor.Seconds(), "floor-s")
	b.ReportMetric(cold.Seconds(), "ferry-s")
	b.ReportMetric(cold.Seconds()/floor.Seconds(), "ratio")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "push-p50-ms")
	b.ReportMetric(float64(peakHeap.Load())/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(peakHeap.Load()-min(base.HeapInuse, peakHeap.Load()))/(1<<20), "ferry-heap-MiB")
	b.ReportMetric(startup.Seconds(), "startup-s")
	b.ReportMetric(float64(coldWrites)/float64(n), "writes/app")
	b.ReportMetric(float64(coldReads)/float64(n), "reads/app")
	b.Logf("%d apps (%d objects): floor %s, ferry %s (%.2fx); one-app push p50 %s; peak heap %d MiB (process, test harness included)",
		n, n*5, floor.Round(time.Millisecond), cold.Round(time.Millisecond), cold.Seconds()/floor.Seconds(), lat[len(lat)/2].Round(time.Millisecond), peakHeap.Load()>>20)
}

func waitFor(b *testing.B, what string, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(15 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("%s did not happen within 15 minutes", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cpuSeconds returns the CPU time used so far by the processes named
// kube-apiserver, etcd, and this one, to split where a phase's CPU went.
func cpuSeconds() (apiserver, etcd, self float64) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		text := string(stat)
		open, close := strings.Index(text, "("), strings.LastIndex(text, ")")
		if open < 0 || close < 0 {
			continue
		}
		comm := text[open+1 : close]
		fields := strings.Fields(text[close+2:])
		if len(fields) < 13 {
			continue
		}
		ut, _ := strconv.ParseFloat(fields[11], 64)
		st, _ := strconv.ParseFloat(fields[12], 64)
		secs := (ut + st) / 100
		switch {
		case comm == "kube-apiserver":
			apiserver += secs
		case comm == "etcd":
			etcd += secs
		case e.Name() == strconv.Itoa(os.Getpid()):
			self += secs
		}
	}
	return apiserver, etcd, self
}
