package ingest_test

import (
	"context"
	"sync"

	"github.com/ferrycd/ferry/ingest"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
)

// memEvents is an EventPublisher that keeps events in memory and
// deduplicates them by delivery ID, as the events stream does. The fuzz
// targets and the flood test use it: what they check is the receiver, and a
// JetStream round trip (or two: publish and a stream-info query) per input
// is what held the fuzzer near 0 execs/s.
type memEvents struct {
	mu     sync.Mutex
	seen   map[string]bool
	events []*ferryv1.PushEvent
}

var _ ingest.EventPublisher = (*memEvents)(nil)

func newMemEvents() *memEvents { return &memEvents{seen: map[string]bool{}} }

func (m *memEvents) PublishEvent(_ context.Context, ev *ferryv1.PushEvent) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := ev.GetProvider() + "/" + ev.GetDeliveryId()
	if m.seen[key] {
		return true, nil
	}
	m.seen[key] = true
	m.events = append(m.events, ev)
	return false, nil
}

// stored is how many events were stored; it only grows.
func (m *memEvents) stored() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.events)
}
