package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// BundleStore is the part of the queue that holds rendered bundles.
type BundleStore interface {
	// CollectBundles deletes the bundles keep returns false for and says
	// how many it deleted.
	CollectBundles(ctx context.Context, keep func(hash string, stored time.Time) bool) (int, error)
	// RenewBundle keeps a bundle an app still runs from expiring.
	RenewBundle(ctx context.Context, hash string) (bool, error)
}

// BundleGCOptions configures a BundleGC.
type BundleGCOptions struct {
	// Interval between collections.
	Interval time.Duration
	// Grace is the age below which a bundle is never deleted: it may
	// belong to an apply whose sync is not recorded yet.
	Grace time.Duration
	// History is how many of an app's last history entries keep their
	// bundles (for rollback and inspection); at most
	// v1alpha1.HistoryLimit, which is all the status holds.
	History int
	Log     *slog.Logger
}

// DefaultBundleGCOptions returns the settings `ferry serve` uses.
func DefaultBundleGCOptions() BundleGCOptions {
	return BundleGCOptions{Interval: 10 * time.Minute, Grace: 10 * time.Minute, History: v1alpha1.HistoryLimit}
}

// BundleGC deletes the rendered bundles that no app references any more,
// so that they, and the Secrets in them, do not stay in the object store
// until the TTL. An app references the bundle it runs (status.sync) and
// those of its last History syncs. The bundle an app runs is also renewed
// before the TTL would take it, since self-heal re-applies it.
type BundleGC struct {
	apps  AppLister
	store BundleStore
	opts  BundleGCOptions
	log   *slog.Logger
}

// NewBundleGC returns a collector over the apps apps lists. Zero options
// take their defaults.
func NewBundleGC(apps AppLister, store BundleStore, opts BundleGCOptions) *BundleGC {
	d := DefaultBundleGCOptions()
	if opts.Interval <= 0 {
		opts.Interval = d.Interval
	}
	if opts.Grace <= 0 {
		opts.Grace = d.Grace
	}
	if opts.History <= 0 || opts.History > v1alpha1.HistoryLimit {
		opts.History = d.History
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &BundleGC{apps: apps, store: store, opts: opts, log: log}
}

// errAppsNotSynced refuses a collection before the app list is complete:
// an empty list would look like no bundle is referenced.
var errAppsNotSynced = errors.New("the application store has not synced yet")

// Collect runs one collection and returns how many bundles it deleted.
// When the apps cannot be listed it deletes nothing.
func (g *BundleGC) Collect(ctx context.Context) (int, error) {
	if s, ok := g.apps.(interface{ Synced() bool }); ok && !s.Synced() {
		return 0, errAppsNotSynced
	}
	apps, err := g.apps.ListApplications(ctx)
	if err != nil {
		return 0, fmt.Errorf("listing applications: %w", err)
	}
	referenced := map[string]bool{}
	var current []string
	for _, app := range apps {
		if h := app.Status.Sync.BundleHash; h != "" {
			referenced[h] = true
			current = append(current, h)
		}
		hist := app.Status.History
		if n := len(hist); n > g.opts.History {
			hist = hist[n-g.opts.History:]
		}
		for _, e := range hist {
			if e.BundleHash != "" {
				referenced[e.BundleHash] = true
			}
		}
	}
	for _, h := range current {
		if _, err := g.store.RenewBundle(ctx, h); err != nil {
			g.log.WarnContext(ctx, "could not renew a bundle an app runs", "bundle", h, "error", err)
		}
	}
	now := time.Now()
	return g.store.CollectBundles(ctx, func(hash string, stored time.Time) bool {
		return referenced[hash] || now.Sub(stored) < g.opts.Grace
	})
}

// Start collects every Interval until ctx is done. The first collection
// waits one interval, which also leaves the app store time to sync.
func (g *BundleGC) Start(ctx context.Context) error {
	t := time.NewTicker(g.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			n, err := g.Collect(ctx)
			switch {
			case err != nil:
				g.log.WarnContext(ctx, "bundle collection failed; nothing more deleted this round", "deleted", n, "error", err)
			case n > 0:
				g.log.InfoContext(ctx, "unreferenced bundles deleted", "deleted", n)
			}
		}
	}
}
