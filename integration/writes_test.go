package integration

import (
	"net/http"
	"strings"
	"sync/atomic"

	"k8s.io/client-go/rest"
)

// writeCounter counts the write requests (anything but GET, LIST, WATCH)
// a client sends to the API server; with path set, only those whose URL
// path holds it ("/secrets").
type writeCounter struct {
	n    atomic.Int64
	path string
}

func (w *writeCounter) config(base *rest.Config) *rest.Config {
	cfg := rest.CopyConfig(base)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(r *http.Request) (*http.Response, error) {
			if r.Method != http.MethodGet && r.Method != http.MethodHead && strings.Contains(r.URL.Path, w.path) {
				w.n.Add(1)
			}
			return rt.RoundTrip(r)
		})
	})
	return cfg
}

func (w *writeCounter) count() int64 { return w.n.Load() }

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
