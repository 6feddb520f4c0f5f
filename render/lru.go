package render

import (
	"sync"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
)

// renderCache keeps bundles by base key, each with the facts its render
// relied on, least recently used first out.
type renderCache struct {
	max int

	mu      sync.Mutex
	entries map[string][]*cacheEntry // newest first
	count   int
	clock   int64
	st      Stats
}

type cacheEntry struct {
	facts         map[factKey]string
	extra         map[string]string
	bundle        *ferryv1.Bundle
	chartRevision string
	inputs        []v1alpha1.InputPath
	used          int64
}

// maxEntriesPerKey bounds the variants kept for one app, such as two
// branches rendered in turn.
const maxEntriesPerKey = 4

func newRenderCache(max int) *renderCache {
	return &renderCache{max: max, entries: map[string][]*cacheEntry{}}
}

func (c *renderCache) stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

// lookup returns the first entry for key that valid accepts. valid runs
// without the lock: it reads git objects.
func (c *renderCache) lookup(key string, valid func(*cacheEntry) bool) *cacheEntry {
	c.mu.Lock()
	candidates := append([]*cacheEntry(nil), c.entries[key]...)
	c.mu.Unlock()
	for _, e := range candidates {
		if valid(e) {
			c.mu.Lock()
			c.clock++
			e.used = c.clock
			c.st.CacheHits++
			c.mu.Unlock()
			return e
		}
	}
	return nil
}

func (c *renderCache) store(key string, in *inputs, b *ferryv1.Bundle, revision string, paths []v1alpha1.InputPath, keep bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.Renders++
	in.mu.Lock()
	uncacheable := in.uncacheable
	in.mu.Unlock()
	if !keep || uncacheable {
		return
	}
	c.clock++
	e := &cacheEntry{facts: in.facts, extra: in.extra, bundle: b, chartRevision: revision, inputs: paths, used: c.clock}
	list := append([]*cacheEntry{e}, c.entries[key]...)
	if len(list) > maxEntriesPerKey {
		c.count -= len(list) - maxEntriesPerKey
		list = list[:maxEntriesPerKey]
	}
	c.entries[key] = list
	c.count++
	for c.count > c.max {
		c.evictOldest()
	}
}

// evictOldest drops the least recently used entry. It scans, which is
// fine for a cache of a few thousand entries that evicts only on insert.
func (c *renderCache) evictOldest() {
	var oldKey string
	oldIdx := -1
	var oldUsed int64
	for k, list := range c.entries {
		for i, e := range list {
			if oldIdx < 0 || e.used < oldUsed {
				oldKey, oldIdx, oldUsed = k, i, e.used
			}
		}
	}
	if oldIdx < 0 {
		c.count = 0
		return
	}
	list := c.entries[oldKey]
	list = append(list[:oldIdx:oldIdx], list[oldIdx+1:]...)
	if len(list) == 0 {
		delete(c.entries, oldKey)
	} else {
		c.entries[oldKey] = list
	}
	c.count--
}
