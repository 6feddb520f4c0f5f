package integration

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/ferrycd/ferry/cmd/ferry/cli"
	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/integration/testenv"
	"github.com/ferrycd/ferry/integration/webhook"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// otlpReceiver is an OTLP/HTTP trace receiver on 127.0.0.1 that keeps what
// it is sent.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want protobuf on /v1/traces", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req := &collectortrace.ExportTraceServiceRequest{}
	if err := proto.Unmarshal(body, req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			o.spans = append(o.spans, ss.GetSpans()...)
		}
	}
	o.mu.Unlock()
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (o *otlpReceiver) trace(id string) []*tracepb.Span {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range o.spans {
		if hex.EncodeToString(s.GetTraceId()) == id {
			out = append(out, s)
		}
	}
	return out
}

func spanNames(spans []*tracepb.Span) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.GetName())
	}
	return out
}

func findSpan(spans []*tracepb.Span, name string) *tracepb.Span {
	for _, s := range spans {
		if s.GetName() == name {
			return s
		}
	}
	return nil
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(s.b.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// slowProxy forwards to the git server, holding every request for delay so
// that a render is in flight long enough for pushes to pile up behind it.
func slowProxy(t *testing.T, target string, delay time.Duration) *httptest.Server {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	var mu sync.Mutex
	slow := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		d := slow
		mu.Unlock()
		if d {
			time.Sleep(delay)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	setSlow = func(v bool) { mu.Lock(); slow = v; mu.Unlock() }
	return srv
}

// setSlow turns the delay of the last slowProxy on or off.
var setSlow func(bool)

func metricValue(t *testing.T, metricsText, name string, labels ...string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? ([0-9.e+-]+)$`)
	total := 0.0
	found := false
	for _, m := range re.FindAllStringSubmatch(metricsText, -1) {
		ok := true
		for _, l := range labels {
			if !strings.Contains(m[1], l) {
				ok = false
			}
		}
		if ok {
			v, _ := strconv.ParseFloat(m[2], 64)
			total += v
			found = true
		}
	}
	if !found {
		t.Errorf("metric %s%v not exposed", name, labels)
	}
	return total
}

func TestObservability(t *testing.T) {
	cp := testenv.StartT(t)
	receiver := &otlpReceiver{}
	otlp := httptest.NewServer(receiver)
	defer otlp.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.URL)
	t.Setenv("OTEL_SERVICE_NAME", "ferry-under-test")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
	t.Setenv("OTEL_TRACES_SAMPLER", "always_on")

	git := gitserver.New(t)
	repo := git.NewRepo(t, "platform/observed")
	repo.WriteFile(t, "apps/obs/config.yaml", configMap("obs", "one"))
	first := repo.Commit(t, "first")
	proxy := slowProxy(t, git.URL(), 600*time.Millisecond)
	repoURL := proxy.URL + "/platform/observed.git"

	logs := &syncBuffer{}
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(testSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	f := startFerry(t, cp, func(o *cli.ServeOptions) {
		o.TracerProvider = nil // the SDK from the OTEL_* environment
		o.Stderr = logs
		o.LogLevel = "info"
	})
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	kube := kubernetes.NewForConfigOrDie(cp.Config)
	createNamespace(t, kube, "obs")
	createApp(t, dyn, &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "obs", Namespace: "ferry"},
		Spec: v1alpha1.ApplicationSpec{
			Source:      &v1alpha1.ApplicationSource{RepoURL: repoURL, TargetRevision: "main", Path: "apps/obs"},
			Destination: v1alpha1.Destination{Namespace: "obs"},
			SyncPolicy:  &v1alpha1.SyncPolicy{Automated: &v1alpha1.Automated{}},
		},
	})
	eventually(t, "the first sync", func() (bool, string) {
		a := getApp(t, dyn, "ferry", "obs")
		return a.Status.Sync.Revision == first, fmt.Sprintf("%+v", a.Status.Sync)
	})
	f.quiet(t)

	accepted := 0
	push := func(before, after string) {
		t.Helper()
		resp, err := webhook.Send(t.Context(), f.url+"/webhooks/github", "push", "obs-"+after[:8], []byte(testSecret), webhook.Push{
			CloneURL: repoURL, FullName: "platform/observed", DefaultBranch: "main", Ref: "refs/heads/main",
			Before: before, After: after, Commits: []webhook.Commit{{ID: after, Modified: []string{"apps/obs/config.yaml"}}},
		}.Payload())
		if err != nil || resp.Status != 202 {
			t.Fatalf("webhook %v %+v", err, resp)
		}
		accepted++
	}
	lastEntry := func() v1alpha1.SyncHistory {
		a := getApp(t, dyn, "ferry", "obs")
		return a.Status.History[len(a.Status.History)-1]
	}

	// One sync from a push.
	repo.WriteFile(t, "apps/obs/config.yaml", configMap("obs", "two"))
	second := repo.Commit(t, "second")
	push(first, second)
	eventually(t, "the pushed sync", func() (bool, string) {
		e := lastEntry()
		return e.Revision == second, fmt.Sprintf("%+v", e)
	})
	good := lastEntry()

	t.Run("one trace per sync, its chain intact across NATS", func(t *testing.T) {
		want := []string{"ingest.webhook", "dispatch", "render", "git.fetch", "directory.render", "apply", "apply.stage", "apply.health", "status"}
		var spans []*tracepb.Span
		eventually(t, "the spans to be exported", func() (bool, string) {
			spans = receiver.trace(good.TraceID)
			names := spanNames(spans)
			for _, w := range want {
				if !strings.Contains(strings.Join(names, ","), w) {
					return false, fmt.Sprint(names)
				}
			}
			return true, ""
		})
		ids := map[string]bool{}
		for _, s := range spans {
			ids[hex.EncodeToString(s.GetSpanId())] = true
		}
		roots := 0
		for _, s := range spans {
			parent := hex.EncodeToString(s.GetParentSpanId())
			if len(s.GetParentSpanId()) == 0 {
				roots++
				continue
			}
			if !ids[parent] {
				t.Errorf("span %s has a parent outside the trace", s.GetName())
			}
		}
		if roots != 1 {
			t.Errorf("trace has %d roots, want 1 (the HTTP request): %v", roots, spanNames(spans))
		}
		// Producer and consumer spans follow the messaging conventions.
		render := findSpan(spans, "render")
		if render.GetKind() != tracepb.Span_SPAN_KIND_CONSUMER {
			t.Errorf("render span kind %v, want consumer", render.GetKind())
		}
		attrs := map[string]string{}
		for _, kv := range render.GetAttributes() {
			attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
		}
		for k, v := range map[string]string{"messaging.system": "nats", "ferry.app": "ferry/obs", "ferry.revision": second, "ferry.delivery_id": "obs-" + second[:8]} {
			if attrs[k] != v {
				t.Errorf("render span attribute %s = %q, want %q", k, attrs[k], v)
			}
		}
	})

	t.Run("logs of one sync share its trace ID", func(t *testing.T) {
		var lines []map[string]any
		for _, l := range logs.lines() {
			if l["app"] == "ferry/obs" && l["revision"] == second {
				lines = append(lines, l)
			}
		}
		if len(lines) < 2 {
			t.Fatalf("%d log lines name the app and revision, want at least 2", len(lines))
		}
		for _, l := range lines {
			if l["trace_id"] != good.TraceID || l["span_id"] == nil {
				t.Errorf("log line %v is not in trace %s", l, good.TraceID)
			}
		}
	})

	t.Run("a failed render is an error span", func(t *testing.T) {
		repo.WriteFile(t, "apps/obs/config.yaml", "kind: [broken\n")
		broken := repo.Commit(t, "broken")
		push(second, broken)
		eventually(t, "the failed sync", func() (bool, string) {
			e := lastEntry()
			return e.Revision == broken && e.Phase == v1alpha1.PhaseFailed, fmt.Sprintf("%+v", e)
		})
		e := lastEntry()
		eventually(t, "the failed render span", func() (bool, string) {
			s := findSpan(receiver.trace(e.TraceID), "render")
			return s != nil && s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR, fmt.Sprint(spanNames(receiver.trace(e.TraceID)))
		})
		s := findSpan(receiver.trace(e.TraceID), "render")
		if !strings.Contains(s.GetStatus().GetMessage(), "apps/obs/config.yaml") {
			t.Errorf("error span message %q does not name the file", s.GetStatus().GetMessage())
		}
		second = broken
	})

	t.Run("a coalesced sync links every push it stands for", func(t *testing.T) {
		f.quiet(t)
		setSlow(true)
		before := second
		var heads []string
		for i := range 4 {
			repo.WriteFile(t, "apps/obs/config.yaml", configMap("obs", fmt.Sprintf("burst-%d", i)))
			h := repo.Commit(t, fmt.Sprintf("burst %d", i))
			push(before, h)
			before = h
			heads = append(heads, h)
		}
		last := heads[len(heads)-1]
		eventually(t, "the burst to sync", func() (bool, string) {
			e := lastEntry()
			return e.Revision == last, fmt.Sprintf("%+v", e)
		})
		setSlow(false)
		f.quiet(t)
		e := lastEntry()
		eventually(t, "the linked render span", func() (bool, string) {
			s := findSpan(receiver.trace(e.TraceID), "render")
			return s != nil && len(s.GetLinks()) > 0, fmt.Sprint(spanNames(receiver.trace(e.TraceID)))
		})
		a := getApp(t, dyn, "ferry", "obs")
		bursts := 0
		for _, h := range a.Status.History {
			for _, b := range heads {
				if h.Revision == b {
					bursts++
				}
			}
		}
		if bursts > 2 {
			t.Errorf("a burst of 4 pushes made %d syncs, want at most 2", bursts)
		}
	})

	t.Run("metrics match what happened", func(t *testing.T) {
		resp := f.apiGet(t, "/metrics")
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		text := string(body)
		if got := metricValue(t, text, "ferry_webhooks_total", `provider="github"`, `result="accepted"`); got != float64(accepted) {
			t.Errorf("ferry_webhooks_total{accepted} = %v, want %d", got, accepted)
		}
		a := getApp(t, dyn, "ferry", "obs")
		failed, succeeded := 0, 0
		for _, h := range a.Status.History {
			if h.Phase == v1alpha1.PhaseFailed {
				failed++
			} else {
				succeeded++
			}
		}
		if got := metricValue(t, text, "ferry_sync_duration_seconds_count", `stage="apply"`, `result="success"`); got != float64(succeeded) {
			t.Errorf("apply successes %v, want %d (history)", got, succeeded)
		}
		if got := metricValue(t, text, "ferry_sync_duration_seconds_count", `stage="render"`, `result="failure"`); got != float64(failed) {
			t.Errorf("render failures %v, want %d (history)", got, failed)
		}
		if got := metricValue(t, text, "ferry_objects_total", `action=`); got < float64(succeeded) {
			t.Errorf("ferry_objects_total = %v, want at least %d", got, succeeded)
		}
		metricValue(t, text, "ferry_render_cache_misses_total")
		metricValue(t, text, "ferry_render_cache_hits_total")
		metricValue(t, text, "ferry_pending_messages", `consumer="render"`)
		metricValue(t, text, "ferry_dead_letters_total")
		metricValue(t, text, "ferry_drift_events_total")
	})
}
