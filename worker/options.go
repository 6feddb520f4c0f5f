package worker

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// ErrInvalidOption is wrapped by every error about a bad option.
var ErrInvalidOption = errors.New("worker: invalid option")

// Config holds the JetStream layout and the limits of the consumers.
type Config struct {
	// DuplicateWindow is how long JetStream remembers a delivery ID.
	DuplicateWindow time.Duration
	// RenderParallelism and ApplyParallelism bound how many jobs of each
	// role run at once in this process.
	RenderParallelism   int
	ApplyParallelism    int
	DispatchParallelism int
	// MaxDeliver is how often a job is tried before it becomes a dead letter.
	MaxDeliver int
	// AckWait is how long a job may run without a progress signal before
	// JetStream redelivers it.
	AckWait time.Duration
	// Replicas of every stream: 1 embedded, 3 on a NATS cluster.
	Replicas int
	// BundleTTL is how long a rendered bundle, Secrets included, stays in
	// the object store after it was stored or last renewed: a rotated
	// Secret leaves the store within it. An app's current bundle is
	// renewed (RenewBundle) so that self-heal can still re-apply it.
	BundleTTL time.Duration
	// BundleMaxBytes is the object store's size budget. Past it a new
	// bundle is refused, and its render retried, until collection
	// (CollectBundles) or the TTL frees room: older bundles are never
	// evicted piecemeal, which would leave them unreadable.
	BundleMaxBytes int64
}

// DefaultConfig returns the settings `ferry serve` uses.
func DefaultConfig() Config {
	return Config{
		DuplicateWindow:     time.Hour,
		RenderParallelism:   8,
		ApplyParallelism:    16,
		DispatchParallelism: 2,
		MaxDeliver:          5,
		AckWait:             2 * time.Minute,
		Replicas:            1,
		BundleTTL:           7 * 24 * time.Hour,
		BundleMaxBytes:      1 << 30,
	}
}

func (c Config) validate() error {
	switch {
	case c.DuplicateWindow <= 0:
		return fmt.Errorf("%w: duplicate window must be positive", ErrInvalidOption)
	case c.RenderParallelism < 1 || c.ApplyParallelism < 1 || c.DispatchParallelism < 1:
		return fmt.Errorf("%w: parallelism must be at least 1", ErrInvalidOption)
	case c.MaxDeliver < 1:
		return fmt.Errorf("%w: max deliver must be at least 1", ErrInvalidOption)
	case c.AckWait < time.Second:
		return fmt.Errorf("%w: ack wait must be at least 1s", ErrInvalidOption)
	case c.Replicas < 1:
		return fmt.Errorf("%w: replicas must be at least 1", ErrInvalidOption)
	case c.BundleTTL < time.Second:
		return fmt.Errorf("%w: bundle TTL must be at least 1s", ErrInvalidOption)
	case c.BundleMaxBytes < 1<<20:
		return fmt.Errorf("%w: bundle size budget must be at least 1 MiB", ErrInvalidOption)
	}
	return nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%w: listen address %q: %v", ErrInvalidOption, addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("%w: listen port %q: %v", ErrInvalidOption, p, err)
	}
	return host, port, nil
}
