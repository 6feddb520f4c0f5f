package ingest_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrycd/ferry/ingest"
)

// countingReader serves n bytes of filler and counts what was read; a
// receiver that refuses before reading leaves the count at 0.
type countingReader struct {
	left int64
	read atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	for i := range p {
		p[i] = 'x'
	}
	c.left -= int64(len(p))
	c.read.Add(int64(len(p)))
	return len(p), nil
}

func TestReceiverLimits(t *testing.T) {
	body := githubPush()
	signed := map[string]string{"X-Hub-Signature-256": sign256(body)}
	cases := []struct {
		name string
		opts ingest.ReceiverOptions
		// held is reserved in the shared budget before the request, as by
		// other requests in flight.
		held      int64
		headers   map[string]string
		body      io.Reader
		length    int64 // -1: unknown (chunked)
		status    int
		result    string
		readAtAll bool
	}{
		{
			name: "refuses a declared body that would pass the in-flight cap, before reading it",
			opts: ingest.ReceiverOptions{MaxBodyBytes: 1 << 20, MaxBytesInFlight: 1 << 20}, held: 1<<20 - 100,
			headers: signed, body: &countingReader{left: 4096}, length: 4096,
			status: 503, result: "busy",
		},
		{
			name: "refuses a chunked body once what arrived would pass the in-flight cap",
			opts: ingest.ReceiverOptions{MaxBodyBytes: 1 << 20, MaxBytesInFlight: 1 << 20}, held: 1<<20 - (64 << 10),
			headers: signed, body: &countingReader{left: 512 << 10}, length: -1,
			status: 503, result: "busy", readAtAll: true,
		},
		{
			name: "accepts a signed push within the cap",
			opts: ingest.ReceiverOptions{MaxBodyBytes: 1 << 20, MaxBytesInFlight: 1 << 20}, held: 1<<20 - int64(len(body)),
			headers: signed, body: bytes.NewReader(body), length: int64(len(body)),
			status: 202, result: "accepted", readAtAll: true,
		},
		{
			name: "refuses an unsigned 25 MiB body without reading it",
			opts: ingest.ReceiverOptions{},
			body: &countingReader{left: 25 << 20}, length: 25 << 20,
			status: 401, result: "unauthorized",
		},
		{
			name:    "refuses a declared oversize body without reading it",
			opts:    ingest.ReceiverOptions{MaxBodyBytes: 1 << 20},
			headers: signed, body: &countingReader{left: 2 << 20}, length: 2 << 20,
			status: 413, result: "too_large",
		},
		{
			name:    "checks the signature before parsing: a bad signature over invalid JSON is 401, not 400",
			opts:    ingest.ReceiverOptions{},
			headers: map[string]string{"X-Hub-Signature-256": "sha256=" + strings.Repeat("0", 64)},
			body:    strings.NewReader(`{"ref": broken`), length: int64(len(`{"ref": broken`)),
			status: 401, result: "unauthorized", readAtAll: true,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			budget := ingest.NewByteBudget(c.opts.MaxBytesInFlight)
			c.opts.Budget = budget
			pub := newMemEvents()
			rc, _ := newGitHubWith(t, pub, c.opts)
			held := heldBytes(t, budget, c.held)
			r := httptest.NewRequest(http.MethodPost, "/webhooks/github", c.body)
			r.ContentLength = c.length
			r.Header.Set("X-GitHub-Event", "push")
			r.Header.Set("X-GitHub-Delivery", "limits-"+strconv.Itoa(int(c.length)))
			for k, v := range c.headers {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			rc.ServeHTTP(w, r)
			if w.Code != c.status || !strings.Contains(w.Body.String(), `"`+c.result+`"`) {
				t.Fatalf("got %d %s, want %d %s", w.Code, w.Body, c.status, c.result)
			}
			if c.status == 503 && w.Header().Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			if cr, ok := c.body.(*countingReader); ok && !c.readAtAll && cr.read.Load() != 0 {
				t.Errorf("read %d bytes of a body it refused from the headers", cr.read.Load())
			}
			if got := budget.InUse(); got != held {
				t.Errorf("budget in use after the request = %d, want %d (what others hold)", got, held)
			}
			if stored := pub.stored() > 0; stored != (c.status == 202) {
				t.Errorf("stored = %v for a %d", stored, c.status)
			}
		})
	}
}

// heldBytes reserves n bytes of budget, as requests in flight would, by
// holding a request open in a second receiver sharing it.
func heldBytes(t *testing.T, budget *ingest.ByteBudget, n int64) int64 {
	t.Helper()
	if n == 0 {
		return 0
	}
	holder, err := ingest.NewGitHub(newMemEvents(), ingest.ReceiverOptions{InsecureSkipVerify: true, MaxBodyBytes: n, Budget: budget}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	r := httptest.NewRequest(http.MethodPost, "/webhooks/github", pr)
	r.ContentLength = n
	r.Header.Set("X-GitHub-Event", "push")
	done := make(chan struct{})
	go func() {
		defer close(done)
		holder.ServeHTTP(httptest.NewRecorder(), r)
	}()
	t.Cleanup(func() {
		pw.CloseWithError(errors.New("test over"))
		<-done
	})
	deadline := time.Now().Add(10 * time.Second)
	for budget.InUse() != n {
		if time.Now().After(deadline) {
			t.Fatalf("holder reserved %d bytes, want %d", budget.InUse(), n)
		}
		time.Sleep(time.Millisecond)
	}
	return n
}

func newGitHubWith(t testing.TB, pub ingest.EventPublisher, opts ingest.ReceiverOptions) (*ingest.Receiver, error) {
	t.Helper()
	if opts.Secret == nil && !opts.InsecureSkipVerify {
		opts.Secret = secret
	}
	rc, err := ingest.NewGitHub(pub, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rc, nil
}

func TestEveryProviderChecksItsSecretBeforeParsing(t *testing.T) {
	bad := []byte(`{"ref": not json`)
	cases := []struct {
		name    string
		new     func(ingest.EventPublisher, ingest.ReceiverOptions, *slog.Logger) (*ingest.Receiver, error)
		headers map[string]string
	}{
		{"GitHub", ingest.NewGitHub, map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + strings.Repeat("0", 64)}},
		{"Gitea", ingest.NewGitea, map[string]string{"X-Gitea-Event": "push", "X-Gitea-Signature": strings.Repeat("0", 64)}},
		{"GitLab", ingest.NewGitLab, map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "wrong"}},
	}
	for _, c := range cases {
		t.Run(c.name+" answers 401 to a bad signature over invalid JSON", func(t *testing.T) {
			rc, err := c.new(newMemEvents(), ingest.ReceiverOptions{Secret: secret}, nil)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(bad))
			for k, v := range c.headers {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			rc.ServeHTTP(w, r)
			if w.Code != 401 {
				t.Fatalf("got %d %s, want 401", w.Code, w.Body)
			}
		})
		t.Run(c.name+" refuses to run without a secret", func(t *testing.T) {
			if _, err := c.new(newMemEvents(), ingest.ReceiverOptions{}, nil); !errors.Is(err, ingest.ErrNoSecret) {
				t.Fatalf("err = %v, want ErrNoSecret", err)
			}
		})
	}
}

// TestWebhookFlood sends 200 concurrent 25 MiB bodies over real HTTP, first
// unsigned and then with a wrong signature, and reports the peak memory.
// None may be accepted; the wrong-signature flood must stay within the
// in-flight budget, because those bodies have to be read to be checked.
func TestWebhookFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("floods loopback with 25 MiB bodies")
	}
	const (
		senders = 200
		size    = 25 << 20
	)
	pub := newMemEvents()
	budget := ingest.NewByteBudget(ingest.DefaultMaxBytesInFlight)
	rc, _ := newGitHubWith(t, pub, ingest.ReceiverOptions{Budget: budget})
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)

	for _, flood := range []struct {
		name string
		sig  string
	}{{"unsigned", ""}, {"wrongly signed", "sha256=" + strings.Repeat("0", 64)}} {
		t.Run(flood.name, func(t *testing.T) {
			runtime.GC()
			var base runtime.MemStats
			runtime.ReadMemStats(&base)
			peak := watchHeap(t)
			codes := make([]int, senders)
			var wg sync.WaitGroup
			for i := range senders {
				wg.Go(func() {
					req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL, &countingReader{left: size})
					req.ContentLength = size
					req.Header.Set("X-GitHub-Event", "push")
					req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("flood-%s-%d", flood.name, i))
					if flood.sig != "" {
						req.Header.Set("X-Hub-Signature-256", flood.sig)
					}
					resp, err := srv.Client().Do(req)
					if err != nil {
						// The server may close the connection on a body it
						// refused without reading: that is a refusal too.
						codes[i] = -1
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					codes[i] = resp.StatusCode
				})
			}
			wg.Wait()
			heapPeak := peak()
			byCode := map[int]int{}
			for _, c := range codes {
				byCode[c]++
			}
			for c, n := range byCode {
				if c >= 200 && c < 300 {
					t.Errorf("%d of %d deliveries got %d", n, senders, c)
				}
			}
			if pub.stored() != 0 {
				t.Errorf("%d events stored", pub.stored())
			}
			grew := int64(heapPeak) - int64(base.HeapInuse)
			t.Logf("%d × %d MiB %s: answers %v (-1: connection closed); peak heap in use %d MiB (%+d MiB over the start), process peak RSS (VmHWM) %s",
				senders, size>>20, flood.name, byCode, heapPeak>>20, grew>>20, vmHWM())
			// The budget plus room for 200 connections' buffers.
			if limit := int64(ingest.DefaultMaxBytesInFlight) + 64<<20; grew > limit {
				t.Errorf("heap grew by %d MiB, more than the in-flight budget plus 64 MiB (%d MiB)", grew>>20, limit>>20)
			}
			if budget.InUse() != 0 {
				t.Errorf("budget still holds %d bytes", budget.InUse())
			}
		})
	}
}

// watchHeap samples HeapInuse until the returned function is called, which
// returns the peak seen.
func watchHeap(t *testing.T) func() uint64 {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var peak atomic.Uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		var m runtime.MemStats
		for ctx.Err() == nil {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return func() uint64 {
		cancel()
		<-done
		return peak.Load()
	}
}

// vmHWM is the process's peak resident set, from /proc/self/status.
func vmHWM() string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
