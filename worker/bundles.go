package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
	"github.com/ferrycd/ferry/proto/job"
)

// putBundle stores b under its content hash unless it is already there
// and far from expiring: a bundle past half its TTL is stored again, so
// the apply that follows cannot find it gone.
func (q *Queue) putBundle(ctx context.Context, b *ferryv1.Bundle) (*ferryv1.BundleRef, error) {
	if b.GetHash() == "" {
		return nil, job.Terminal(errors.New("bundle has no hash"))
	}
	ref := &ferryv1.BundleRef{Hash: b.GetHash(), ObjectCount: int32(len(b.GetObjects()))}
	if info, err := q.bundles.GetInfo(ctx, b.GetHash()); err == nil && !q.nearExpiry(info) {
		ref.Size = int64(info.Size)
		return ref, nil
	} else if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
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

// nearExpiry reports whether a bundle has lived more than half its TTL.
func (q *Queue) nearExpiry(info *jetstream.ObjectInfo) bool {
	return time.Since(info.ModTime) > q.cfg.BundleTTL/2
}

// RenewBundle stores the bundle named hash again when it has lived more
// than half its TTL, so that the bundle an app runs outlives the TTL for
// as long as the app runs it: self-heal and PostSync re-apply it without
// a render. It reports whether it renewed the bundle; a bundle that is not
// in the store is not an error (there is nothing to keep).
func (q *Queue) RenewBundle(ctx context.Context, hash string) (bool, error) {
	info, err := q.bundles.GetInfo(ctx, hash)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("looking up bundle %s: %w", hash, err)
	}
	if !q.nearExpiry(info) {
		return false, nil
	}
	data, err := q.bundles.GetBytes(ctx, hash)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading bundle %s: %w", hash, err)
	}
	// Storing under the same name replaces the object and then drops the
	// old chunks, so a reader sees the old copy or the new one.
	if _, err := q.bundles.PutBytes(ctx, hash, data); err != nil {
		return false, fmt.Errorf("renewing bundle %s: %w", hash, err)
	}
	return true, nil
}

// CollectBundles deletes the bundles for which keep returns false, given
// each bundle's hash and when it was stored (or last renewed), and returns
// how many it deleted. A bundle that an apply request still waiting in
// the queue names is kept whatever keep says. keep decides the rest: the
// bundles the apps' status and history reference, and a grace period for
// renders whose apply has not been recorded yet.
func (q *Queue) CollectBundles(ctx context.Context, keep func(hash string, stored time.Time) bool) (int, error) {
	infos, err := q.bundles.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("listing bundles: %w", err)
	}
	pending, err := q.pendingBundles(ctx)
	if err != nil {
		return 0, err
	}
	deleted := 0
	for _, info := range infos {
		if info.Deleted || pending[info.Name] || keep(info.Name, info.ModTime) {
			continue
		}
		if err := q.bundles.Delete(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return deleted, fmt.Errorf("deleting bundle %s: %w", info.Name, err)
		}
		deleted++
	}
	return deleted, nil
}

// pendingBundles returns the hashes of the bundles that apply requests
// still in the queue name (one request per app at most).
func (q *Queue) pendingBundles(ctx context.Context) (map[string]bool, error) {
	s, err := q.js.Stream(ctx, StreamApply)
	if err != nil {
		return nil, fmt.Errorf("opening stream %s: %w", StreamApply, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subjectApply+".>"))
	if err != nil {
		return nil, fmt.Errorf("reading stream %s: %w", StreamApply, err)
	}
	out := make(map[string]bool, len(info.State.Subjects))
	for subject := range info.State.Subjects {
		m, err := s.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // applied since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("reading the apply request on %s: %w", subject, err)
		}
		req := &ferryv1.ApplyRequest{}
		if err := proto.Unmarshal(m.Data, req); err != nil {
			continue // the apply role dead-letters it; it names no bundle to keep
		}
		if h := req.GetBundle().GetHash(); h != "" {
			out[h] = true
		}
	}
	return out, nil
}
