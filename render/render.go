package render

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	ferryv1 "github.com/ferrycd/ferry/proto/ferry/v1"
)

const tracerName = "github.com/ferrycd/ferry/render"

func tracer() trace.Tracer { return otel.Tracer(tracerName) }

// Renderer renders Applications from a shared git cache.
type Renderer struct {
	git    *GitCache
	charts *chartStore
	opts   Options
	log    *slog.Logger

	cache *renderCache
	// pool runs renders in child processes; nil renders here.
	pool *processPool
	// noCache makes every render miss; the benchmarks use it to time
	// renders against the CLIs.
	noCache bool
}

// Stats counts render cache outcomes.
type Stats struct {
	Renders, CacheHits int64
}

// New returns a Renderer reading repositories through git. It fails only
// on invalid Processes options; call Close when done with it.
func New(git *GitCache, opts Options, log *slog.Logger) (*Renderer, error) {
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
	if opts.MaxOutputBytes <= 0 {
		opts.MaxOutputBytes = d.MaxOutputBytes
	}
	if opts.MaxObjects <= 0 {
		opts.MaxObjects = d.MaxObjects
	}
	if opts.CacheEntries <= 0 {
		opts.CacheEntries = d.CacheEntries
	}
	if opts.ChartIndexTTL <= 0 {
		opts.ChartIndexTTL = d.ChartIndexTTL
	}
	if opts.ChartCacheDir == "" {
		opts.ChartCacheDir = filepath.Join(git.Dir(), ".charts")
	}
	r := &Renderer{
		git:    git,
		charts: newChartStore(opts.ChartCacheDir, opts.Credentials, opts.MaxInputBytes, opts.ChartIndexTTL, opts.Timeout, opts.AllowedHosts),
		opts:   opts,
		log:    log,
		cache:  newRenderCache(opts.CacheEntries),
	}
	if opts.Processes != nil {
		cfg := processConfig{
			GitDir: git.Dir(), ChartCacheDir: opts.ChartCacheDir, Timeout: opts.Timeout,
			MaxInputBytes: opts.MaxInputBytes, MaxOutputBytes: opts.MaxOutputBytes, MaxObjects: opts.MaxObjects,
			ChartIndexTTL: opts.ChartIndexTTL, KustomizeRemoteBases: opts.KustomizeRemoteBases,
			AllowedHosts: opts.AllowedHosts, ApplicationNamespace: opts.ApplicationNamespace,
			HasCredentials: opts.Credentials != nil, HasCapabilities: opts.Capabilities != nil,
		}
		var err error
		if r.pool, err = newProcessPool(*opts.Processes, cfg, log); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Close stops the render processes: idle ones now, busy ones when their
// render ends.
func (r *Renderer) Close() {
	if r.pool != nil {
		r.pool.close()
	}
}

// Stats returns the render and cache-hit counts so far.
func (r *Renderer) Stats() Stats { return r.cache.stats() }

// Request is one render: an app at a commit of the repository that moved.
type Request struct {
	App *v1alpha1.Application
	// RepoURL and Revision pin the sources reading RepoURL to that commit.
	// Other sources, or all when Revision is empty, follow their
	// targetRevision.
	RepoURL  string
	Revision string
}

// Render renders every source of the app, concatenates the objects and
// returns them as a bundle, with the revision of its first source: a
// commit, or the chart version of a chart from a chart repository.
//
// A render whose inputs did not change since a cached one (the app spec,
// the git content of every path it read, the chart versions and the
// cluster capabilities) returns the cached bundle without rendering.
func (r *Renderer) Render(ctx context.Context, req Request) (*ferryv1.Bundle, string, error) {
	res, err := r.RenderWithInputs(ctx, req)
	if err != nil {
		return nil, "", err
	}
	return res.Bundle, res.Revision, nil
}

// Result is the outcome of a render.
type Result struct {
	Bundle *ferryv1.Bundle
	// Revision is the first source's commit, or its chart version for a
	// chart from a chart repository.
	Revision string
	// Inputs are the repository paths the render read outside each
	// source's own path: Kustomize bases, file:// charts, $ref value
	// files, the targets of symbolic links, files that it looked for and
	// did not find. A source rendered as a directory without recurse adds
	// its own path, marked Shallow: only the files directly in it count. A
	// push touching none of them nor the source paths cannot change the
	// render. Stored as the app's status.inputs, they let dispatch skip
	// such pushes.
	Inputs []v1alpha1.InputPath
	// CacheHit is set when the bundle came from the render cache.
	CacheHit bool
}

// RenderWithInputs renders as Render does and also says what the render
// read.
func (r *Renderer) RenderWithInputs(ctx context.Context, req Request) (*Result, error) {
	app := req.App
	if app == nil {
		return nil, &SourceError{Err: errors.New("render request without an app")}
	}
	name := app.Namespace + "/" + app.Name
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	span := trace.SpanFromContext(ctx)

	sources := app.Spec.AllSources()
	if len(sources) == 0 {
		return nil, &AppError{App: name, Err: &SourceError{Err: errors.New("the app has no source")}}
	}
	fail := r.sourceFailure(ctx, app)

	refs := map[string]int{}
	for i, src := range sources {
		if src.Ref == "" {
			continue
		}
		if j, dup := refs[src.Ref]; dup {
			return nil, fail(i, &SourceError{Err: fmt.Errorf("ref %q is also the ref of source %d", src.Ref, j)})
		}
		refs[src.Ref] = i
	}

	// Refuse a source whose URL carries credentials or names a host that
	// is not allowed before anything is fetched, for any source.
	for i, src := range sources {
		var err error
		if src.Chart != "" {
			err = r.charts.checkRepo(src.RepoURL)
		} else {
			err = r.git.checkRemote(src.RepoURL)
		}
		if err != nil {
			return nil, fail(i, err)
		}
	}

	// Fetch the git sources at their commits; charts come later.
	snaps := make([]*Snapshot, len(sources))
	trees := make([]*snapshotTrees, len(sources))
	for i, src := range sources {
		if src.Chart != "" {
			continue
		}
		rev := src.TargetRevision
		if req.Revision != "" && (req.RepoURL == "" || v1alpha1.NormalizeRepoURL(req.RepoURL) == v1alpha1.NormalizeRepoURL(src.RepoURL)) {
			rev = req.Revision
		}
		snap, err := r.git.Resolve(ctx, src.RepoURL, rev)
		if err != nil {
			return nil, fail(i, err)
		}
		snaps[i] = snap
		trees[i] = newSnapshotTrees(snap)
	}
	revision := ""
	if snaps[0] != nil {
		revision = snaps[0].Commit.String()
		span.SetAttributes(attribute.String("ferry.revision", revision))
	}

	key := r.baseKey(app)
	if !r.noCache {
		if e := r.cache.lookup(key, func(e *cacheEntry) bool { return r.stillValid(ctx, app, e, trees) }); e != nil {
			span.SetAttributes(attribute.Bool("ferry.render.cache_hit", true))
			if revision == "" {
				revision = e.chartRevision
			}
			r.log.DebugContext(ctx, "render cache hit", "app", name, "revision", revision)
			return &Result{Bundle: e.bundle, Revision: revision, Inputs: e.inputs, CacheHit: true}, nil
		}
	}

	var out *rendered
	var err error
	if r.pool != nil {
		out, err = r.pool.render(ctx, r, app, snaps)
	} else {
		out, err = r.renderResolved(ctx, app, trees, refs, fail)
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, err
	}
	objects, in := out.objects, out.in
	if revision == "" {
		revision = out.chartVersion
	}
	b := NewBundle(objects)
	span.SetAttributes(attribute.Bool("ferry.render.cache_hit", false), attribute.Int("ferry.objects", len(objects)))
	inputs := inputPaths(in.facts, in.shallow, sources)
	r.cache.store(key, in, b, revision, inputs, !r.noCache)
	r.log.DebugContext(ctx, "rendered", "app", name, "revision", revision, "objects", len(objects))
	return &Result{Bundle: b, Revision: revision, Inputs: inputs}, nil
}

// sourceFailure returns the function that names, in a render failure, the
// app and its source i, and says when the render ran out of time.
func (r *Renderer) sourceFailure(ctx context.Context, app *v1alpha1.Application) func(i int, err error) error {
	sources := app.Spec.AllSources()
	return func(i int, err error) error {
		switch {
		case errors.Is(err, ErrLimitExceeded):
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			err = fmt.Errorf("render timed out after %s: %w", r.opts.Timeout, err)
		case ctx.Err() != nil:
			err = fmt.Errorf("render canceled: %w", err)
		}
		ae := &AppError{App: app.Namespace + "/" + app.Name, Source: i, Where: describeSource(sources[i]), Err: err}
		trace.SpanFromContext(ctx).SetStatus(codes.Error, ae.Error())
		return ae
	}
}

// rendered is what rendering a resolved app gives: its objects, the chart
// version of a first source that is a chart, and what the render read.
type rendered struct {
	objects      []Object
	chartVersion string
	in           *inputs
}

// renderResolved renders every source of app from the snapshots its git
// sources resolved to (trees, nil for a chart source): the part of a
// render that reads what the repository holds, so the part a render
// process runs when renders are isolated. fail names the source of an
// error.
func (r *Renderer) renderResolved(ctx context.Context, app *v1alpha1.Application, trees []*snapshotTrees, refs map[string]int,
	fail func(int, error) error) (*rendered, error) {
	name := app.Namespace + "/" + app.Name
	sources := app.Spec.AllSources()
	out := &rendered{in: newInputs(r.opts.MaxInputBytes)}
	in := out.in
	readers := make([]*repoReader, len(sources))
	refReaders := map[string]*repoReader{}
	for i := range sources {
		if trees[i] != nil {
			readers[i] = &repoReader{trees: trees[i], src: i, in: in, what: redactURL(sources[i].RepoURL)}
		}
	}
	for ref, i := range refs {
		if readers[i] == nil {
			return nil, fail(i, &SourceError{Err: fmt.Errorf("ref %q names a chart repository; a ref source must be a git repository", ref)})
		}
		refReaders[ref] = readers[i]
	}

	var objects []Object
	var size int64
	for i, src := range sources {
		objs, chartVersion, err := r.renderSource(ctx, app, i, src, readers[i], refReaders, in)
		if err != nil {
			return nil, fail(i, err)
		}
		if i == 0 {
			out.chartVersion = chartVersion
		}
		for _, o := range objs {
			size += int64(len(o.JSON))
		}
		objects = append(objects, objs...)
		if len(objects) > r.opts.MaxObjects {
			return nil, fail(i, &SourceError{Err: fmt.Errorf("render produced more than %d objects: %w", r.opts.MaxObjects, ErrLimitExceeded)})
		}
		if size > r.opts.MaxOutputBytes {
			return nil, fail(i, &SourceError{Err: fmt.Errorf("render produced more than %d bytes: %w", r.opts.MaxOutputBytes, ErrLimitExceeded)})
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, &AppError{App: name, Err: fmt.Errorf("render timed out after %s: %w", r.opts.Timeout, err)}
	}
	objects, err := markHooks(objects)
	if err != nil {
		return nil, &AppError{App: name, Err: err}
	}
	if r.opts.ApplicationNamespace != "" {
		if objects, err = childApplications(ctx, objects, r.opts.ApplicationNamespace, r.log); err != nil {
			return nil, &AppError{App: name, Err: err}
		}
	}
	out.objects = objects
	return out, nil
}

// inputPaths lists the repository paths a render's facts name outside each
// source's own path, without paths below another listed one; and, for a
// source rendered as a directory without recurse, its own path marked
// Shallow, since only the files directly in it count.
func inputPaths(facts map[factKey]string, shallow map[int]bool, sources []v1alpha1.ApplicationSource) []v1alpha1.InputPath {
	byRepo := map[string][]string{}
	for k := range facts {
		src := sources[k.src]
		if src.Chart == "" && (src.Ref == "" || src.Path != "") {
			own, err := ConfinePath(src.Path)
			if err != nil || own == "" || k.path == own || strings.HasPrefix(k.path, own+"/") {
				continue
			}
		}
		byRepo[src.RepoURL] = append(byRepo[src.RepoURL], k.path)
	}
	var out []v1alpha1.InputPath
	for i, src := range sources {
		if shallow[i] {
			own, _ := ConfinePath(src.Path)
			out = append(out, v1alpha1.InputPath{RepoURL: src.RepoURL, Path: own, Shallow: true})
		}
	}
	repos := make([]string, 0, len(byRepo))
	for repo := range byRepo {
		repos = append(repos, repo)
	}
	slices.Sort(repos)
	for _, repo := range repos {
		paths := byRepo[repo]
		slices.Sort(paths)
		paths = slices.Compact(paths)
		var kept []string
		for _, p := range paths {
			if n := len(kept); n > 0 && (kept[n-1] == "" || strings.HasPrefix(p, kept[n-1]+"/")) {
				continue
			}
			kept = append(kept, p)
		}
		for _, p := range kept {
			out = append(out, v1alpha1.InputPath{RepoURL: repo, Path: p})
		}
	}
	return out
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
