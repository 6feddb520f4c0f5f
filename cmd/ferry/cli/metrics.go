package cli

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ferrycd/ferry/apply"
	"github.com/ferrycd/ferry/render"
	"github.com/ferrycd/ferry/worker"
)

// metrics are ferry's Prometheus collectors, in Prometheus naming; ingest
// registers its own beside them.
type metrics struct {
	reg          *prometheus.Registry
	syncDuration *prometheus.HistogramVec
	objects      *prometheus.CounterVec
}

var _ apply.Metrics = (*metrics)(nil)

// newMetrics returns the collectors; the ones that ask the queue do so
// under ctx, the process's, since a scrape hands a collector none.
func newMetrics(ctx context.Context, queue *worker.Queue, renderer *render.Renderer) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		syncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ferry_sync_duration_seconds",
			Help:    "Time of each stage of a sync (render, apply) and of the whole sync from request to result, by result.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 90},
		}, []string{"stage", "result"}),
		objects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_objects_total",
			Help: "Objects handled by syncs, by action (created, configured, unchanged, pruned, failed).",
		}, []string{"action"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.syncDuration, m.objects,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "ferry_render_cache_hits_total", Help: "Renders served from the render cache.",
		}, func() float64 { return float64(renderer.Stats().CacheHits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "ferry_render_cache_misses_total", Help: "Renders that had to render.",
		}, func() float64 { return float64(renderer.Stats().Renders) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "ferry_dead_letters_total", Help: "Jobs that failed for good and were kept as dead letters.",
		}, func() float64 {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			n, _ := queue.DeadLetters(ctx)
			return float64(n)
		}),
		backlogCollector{ctx: ctx, q: queue},
	)
	return m
}

// ObjectHandled counts one object a sync handled.
func (m *metrics) ObjectHandled(action apply.Action) {
	m.objects.WithLabelValues(string(action)).Inc()
}

// ObserveStage records the time of one stage of a sync.
func (m *metrics) ObserveStage(stage string, start time.Time, err error) {
	result := "success"
	if err != nil {
		result = "failure"
	}
	m.syncDuration.WithLabelValues(stage, result).Observe(time.Since(start).Seconds())
}

// backlogCollector reports the jobs pending per stream and consumer.
type backlogCollector struct {
	ctx context.Context
	q   *worker.Queue
}

var pendingDesc = prometheus.NewDesc("ferry_pending_messages", "Jobs waiting or running per stream and consumer.", []string{"stream", "consumer", "state"}, nil)

func (backlogCollector) Describe(ch chan<- *prometheus.Desc) { ch <- pendingDesc }

func (c backlogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
	defer cancel()
	stats, err := c.q.Backlog(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(pendingDesc, err)
		return
	}
	for _, s := range stats {
		ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(s.Pending), s.Stream, s.Consumer, "waiting")
		ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(s.Running), s.Stream, s.Consumer, "running")
	}
}
