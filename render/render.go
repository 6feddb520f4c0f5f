package render

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
)

const tracerName = "github.com/ferrycd/ferry/render"

func tracer() trace.Tracer { return otel.Tracer(tracerName) }

// Options bounds a render.
type Options struct {
	// Timeout bounds one app's render, fetch included.
	Timeout time.Duration
	// MaxInputBytes caps the bytes of source files one render reads.
	MaxInputBytes int64
	// MaxObjects caps the objects one app may render.
	MaxObjects int
	// CacheEntries bounds the render cache.
	CacheEntries int
}

// DefaultOptions returns the limits of `ferry serve`.
func DefaultOptions() Options {
	return Options{
		Timeout:       90 * time.Second,
		MaxInputBytes: 64 << 20,
		MaxObjects:    10000,
		CacheEntries:  4096,
	}
}

// Renderer renders Applications from a shared git cache.
type Renderer struct {
	git  *GitCache
	opts Options
	log  *slog.Logger

	mu    sync.Mutex
	cache map[string]*ferryv1.Bundle
	stats Stats
}

// Stats counts render cache outcomes.
type Stats struct {
	Renders, CacheHits int64
}

// New returns a Renderer reading repositories through git.
func New(git *GitCache, opts Options, log *slog.Logger) *Renderer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := DefaultOptions()
	if opts.Timeout <= 0 {
		opts.Timeout = d.Timeout
	}
	if opts.MaxInputBytes <= 0 {
		opts.MaxInputBytes = d.MaxInputBytes
	}
	if opts.MaxObjects <= 0 {
		opts.MaxObjects = d.MaxObjects
	}
	if opts.CacheEntries <= 0 {
		opts.CacheEntries = d.CacheEntries
	}
	return &Renderer{git: git, opts: opts, log: log, cache: map[string]*ferryv1.Bundle{}}
}

// Stats returns the render and cache-hit counts so far.
func (r *Renderer) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Request is one render: an app at a commit of the repository that moved.
type Request struct {
	App *v1alpha1.Application
	// RepoURL and Revision pin the sources reading RepoURL to that commit.
	// Other sources, or all when Revision is empty, follow their
	// targetRevision.
	RepoURL  string
	Revision string
}

// Render renders every source of the app and returns the bundle and the
// commit of its first source.
func (r *Renderer) Render(ctx context.Context, req Request) (*ferryv1.Bundle, string, error) {
	app := req.App
	name := app.Namespace + "/" + app.Name
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	span := trace.SpanFromContext(ctx)

	sources := app.Spec.AllSources()
	if len(sources) == 0 {
		return nil, "", &AppError{App: name, Err: &SourceError{Err: errors.New("the app has no source")}}
	}
	snaps := make([]*Snapshot, len(sources))
	key := sha256.New()
	spec, _ := json.Marshal(app.Spec)
	key.Write(spec)
	for i, src := range sources {
		rev := src.TargetRevision
		if req.Revision != "" && (req.RepoURL == "" || v1alpha1.NormalizeRepoURL(req.RepoURL) == v1alpha1.NormalizeRepoURL(src.RepoURL)) {
			rev = req.Revision
		}
		snap, err := r.git.Resolve(ctx, src.RepoURL, rev)
		if err != nil {
			return nil, "", r.fail(span, &AppError{App: name, Source: i, Err: err})
		}
		snaps[i] = snap
		clean, err := ConfinePath(src.Path)
		if err != nil {
			return nil, "", r.fail(span, &AppError{App: name, Source: i, Err: err})
		}
		th, err := snap.TreeHash(clean)
		if err != nil {
			return nil, "", r.fail(span, &AppError{App: name, Source: i, Err: err})
		}
		fmt.Fprintf(key, "\x00%d\x00%s\x00%s", i, src.RepoURL, th)
	}
	revision := snaps[0].Commit.String()
	span.SetAttributes(attribute.String("ferry.revision", revision))
	cacheKey := hex.EncodeToString(key.Sum(nil))
	if b := r.cached(cacheKey); b != nil {
		span.SetAttributes(attribute.Bool("ferry.render.cache_hit", true))
		return b, revision, nil
	}

	var objects []Object
	for i, src := range sources {
		objs, err := r.renderSource(ctx, snaps[i], src)
		if err != nil {
			return nil, "", r.fail(span, &AppError{App: name, Source: i, Err: err})
		}
		objects = append(objects, objs...)
		if len(objects) > r.opts.MaxObjects {
			return nil, "", r.fail(span, &AppError{App: name, Source: i, Err: &SourceError{Err: fmt.Errorf("render produced more than %d objects", r.opts.MaxObjects)}})
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, "", r.fail(span, &AppError{App: name, Err: fmt.Errorf("render timed out after %s: %w", r.opts.Timeout, err)})
	}
	b := NewBundle(objects)
	span.SetAttributes(attribute.Bool("ferry.render.cache_hit", false), attribute.Int("ferry.objects", len(objects)))
	r.store(cacheKey, b)
	return b, revision, nil
}

func (r *Renderer) renderSource(ctx context.Context, snap *Snapshot, src v1alpha1.ApplicationSource) ([]Object, error) {
	_, span := tracer().Start(ctx, "directory.render", trace.WithAttributes(attribute.String("ferry.path", src.Path)))
	defer span.End()
	recurse := src.Directory != nil && src.Directory.Recurse
	root, _ := ConfinePath(src.Path)
	files, err := snap.ReadDir(src.Path, recurse, directoryFilter(root, src.Directory), r.opts.MaxInputBytes)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, err
	}
	var out []Object
	for _, f := range files {
		objs, err := DecodeManifests(f.Path, f.Data)
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}

func (r *Renderer) fail(span trace.Span, err error) error {
	span.SetStatus(codes.Error, err.Error())
	return err
}

func (r *Renderer) cached(key string) *ferryv1.Bundle {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.cache[key]
	if b != nil {
		r.stats.CacheHits++
	}
	return b
}

func (r *Renderer) store(key string, b *ferryv1.Bundle) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats.Renders++
	if len(r.cache) >= r.opts.CacheEntries {
		// Drop an arbitrary entry; a miss only costs a render.
		for k := range r.cache {
			delete(r.cache, k)
			break
		}
	}
	r.cache[key] = b
}

// NewBundle builds a bundle from objects, hashing their JSON in order.
func NewBundle(objects []Object) *ferryv1.Bundle {
	h := sha256.New()
	b := &ferryv1.Bundle{Objects: make([][]byte, len(objects))}
	for i, o := range objects {
		b.Objects[i] = o.JSON
		fmt.Fprintf(h, "%d\x00", len(o.JSON))
		h.Write(o.JSON)
	}
	b.Hash = hex.EncodeToString(h.Sum(nil))
	return b
}
