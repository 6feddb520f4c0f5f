package worker

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
)

// WatchResults calls fn for every sync result published from now on, until
// ctx is done.
func (q *Queue) WatchResults(ctx context.Context, fn func(*ferryv1.SyncResult)) error {
	cons, err := q.js.OrderedConsumer(ctx, StreamResults, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("watching results: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		res := &ferryv1.SyncResult{}
		if proto.Unmarshal(m.Data(), res) == nil {
			fn(res)
		}
	})
	if err != nil {
		return fmt.Errorf("watching results: %w", err)
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}
