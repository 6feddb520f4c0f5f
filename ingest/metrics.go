package ingest

import "github.com/prometheus/client_golang/prometheus"

// Metrics are ingest's Prometheus collectors.
type Metrics struct {
	webhooks    *prometheus.CounterVec
	driftEvents prometheus.Counter
}

// NewMetrics registers ingest's collectors with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_webhooks_total",
			Help: "Webhook deliveries by provider and result (accepted, duplicate, unauthorized, bad_request, too_large, ignored, unavailable, busy, pong).",
		}, []string{"provider", "result"}),
		driftEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_drift_events_total",
			Help: "Drift detected on managed objects (changed by another manager, or deleted).",
		}),
	}
	reg.MustRegister(m.webhooks, m.driftEvents)
	return m
}

func (m *Metrics) webhook(provider, result string) {
	if m == nil {
		return
	}
	m.webhooks.WithLabelValues(provider, result).Inc()
}

// Webhooks returns the delivery counter, for tests and dashboards.
func (m *Metrics) Webhooks() *prometheus.CounterVec { return m.webhooks }

func (m *Metrics) drift() {
	if m != nil {
		m.driftEvents.Inc()
	}
}
