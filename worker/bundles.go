package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
	"github.com/ferrycd/ferry/proto/job"
)

// putBundle stores b under its content hash unless it is already there.
func (q *Queue) putBundle(ctx context.Context, b *ferryv1.Bundle) (*ferryv1.BundleRef, error) {
	if b.GetHash() == "" {
		return nil, job.Terminal(errors.New("bundle has no hash"))
	}
	ref := &ferryv1.BundleRef{Hash: b.GetHash(), ObjectCount: int32(len(b.GetObjects()))}
	if info, err := q.bundles.GetInfo(ctx, b.GetHash()); err == nil {
		ref.Size = int64(info.Size)
		return ref, nil
	} else if !errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("looking up bundle %s: %w", b.GetHash(), err)
	}
	data, err := proto.Marshal(b)
	if err != nil {
		return nil, job.Terminal(fmt.Errorf("encoding bundle: %w", err))
	}
	if _, err := q.bundles.PutBytes(ctx, b.GetHash(), data); err != nil {
		return nil, fmt.Errorf("storing bundle %s: %w", b.GetHash(), err)
	}
	ref.Size = int64(len(data))
	return ref, nil
}

func (q *Queue) getBundle(ctx context.Context, hash string) (*ferryv1.Bundle, error) {
	data, err := q.bundles.GetBytes(ctx, hash)
	if err != nil {
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil, job.Terminal(fmt.Errorf("bundle %s is not in the object store", hash))
		}
		return nil, fmt.Errorf("fetching bundle %s: %w", hash, err)
	}
	b := &ferryv1.Bundle{}
	if err := proto.Unmarshal(data, b); err != nil {
		return nil, job.Terminal(fmt.Errorf("decoding bundle %s: %w", hash, err))
	}
	return b, nil
}
