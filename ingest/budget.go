package ingest

import "sync/atomic"

// DefaultMaxBytesInFlight caps the webhook bodies held at once, across every
// concurrent request: four bodies of the largest size GitHub sends.
const DefaultMaxBytesInFlight = 4 * DefaultMaxBodyBytes

// ByteBudget counts the webhook body bytes held at once. One budget is
// shared by every receiver of a process, so that a flood on one provider's
// endpoint cannot make ferry hold more than the budget in total.
type ByteBudget struct {
	limit int64
	used  atomic.Int64
}

// NewByteBudget returns a budget of limit bytes; limit <= 0 takes
// DefaultMaxBytesInFlight.
func NewByteBudget(limit int64) *ByteBudget {
	if limit <= 0 {
		limit = DefaultMaxBytesInFlight
	}
	return &ByteBudget{limit: limit}
}

// tryAcquire reserves n bytes, or reserves nothing and returns false when
// that would pass the limit. It never waits: a sender past the budget is
// told to come back later rather than held on an open connection.
func (b *ByteBudget) tryAcquire(n int64) bool {
	if b.used.Add(n) > b.limit {
		b.used.Add(-n)
		return false
	}
	return true
}

func (b *ByteBudget) release(n int64) { b.used.Add(-n) }

// InUse returns the bytes reserved now.
func (b *ByteBudget) InUse() int64 { return b.used.Load() }
