package ingest

import "github.com/prometheus/client_golang/prometheus"

// Metrics are ingest's Prometheus collectors.
type Metrics struct {
	webhooks *prometheus.CounterVec
}

// NewMetrics registers ingest's collectors with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_webhooks_total",
			Help: "Webhook deliveries by provider and result (accepted, duplicate, unauthorized, bad_request, too_large, ignored, unavailable, pong).",
		}, []string{"provider", "result"}),
	}
	reg.MustRegister(m.webhooks)
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
