package worker

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// deadLetter keeps a copy of a job that failed for good, with the reason,
// on ferry.dead.<role>.<original subject>.
func (q *Queue) deadLetter(ctx context.Context, role string, m jetstream.Msg, cause error) {
	h := nats.Header{}
	for k, v := range m.Headers() {
		h[k] = v
	}
	h.Set("Ferry-Dead-Reason", truncate(cause.Error(), 1024))
	h.Set("Ferry-Dead-Subject", m.Subject())
	dl := &nats.Msg{Subject: subjectDead + "." + role + "." + m.Subject(), Data: m.Data(), Header: h}
	if _, err := q.js.PublishMsg(ctx, dl); err != nil {
		q.log.Warn("dead letter not stored", "subject", m.Subject(), "error", err)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
