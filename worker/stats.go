package worker

import (
	"context"
	"fmt"
)

// ConsumerStats is the backlog of one consumer.
type ConsumerStats struct {
	Stream, Consumer string
	// Pending jobs not yet delivered, and jobs delivered but not yet done.
	Pending, Running uint64
}

// Backlog returns the backlog of ferry's consumers.
func (q *Queue) Backlog(ctx context.Context) ([]ConsumerStats, error) {
	var out []ConsumerStats
	for _, c := range [][2]string{{StreamEvents, ConsumerDispatch}, {StreamSync, ConsumerRender}, {StreamApply, ConsumerApply}} {
		cons, err := q.js.Consumer(ctx, c[0], c[1])
		if err != nil {
			return nil, fmt.Errorf("consumer %s: %w", c[1], err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("consumer %s: %w", c[1], err)
		}
		out = append(out, ConsumerStats{Stream: c[0], Consumer: c[1], Pending: info.NumPending, Running: uint64(info.NumAckPending)})
	}
	return out, nil
}

// DeadLetters returns how many dead letters were ever stored.
func (q *Queue) DeadLetters(ctx context.Context) (uint64, error) {
	s, err := q.js.Stream(ctx, StreamDead)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}
