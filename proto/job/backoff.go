package job

import (
	"math"
	"time"
)

// Backoff is an exponential backoff: the first try waits First, each later
// one Factor times longer, never more than Max. It is the one backoff of
// ferry: job redeliveries, self-heal, uninstall, commit statuses and an
// app's syncPolicy.retry all use it.
type Backoff struct {
	First  time.Duration
	Factor float64
	// Max caps the delay; zero or less means no cap.
	Max time.Duration
}

// Delay returns the wait before try n+1 after try n failed (n is 1 for the
// first try): First * Factor^(n-1), capped at Max. This is Argo CD's retry
// arithmetic, so syncPolicy.retry means what it means there.
func (b Backoff) Delay(n int) time.Duration {
	d := float64(b.First) * math.Pow(b.Factor, float64(n-1))
	if b.Max > 0 && d > float64(b.Max) {
		return b.Max
	}
	if d > math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(d)
}
