package render

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
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

// renderVersion changes whenever ferry renders the same inputs differently,
// so that no cached bundle from another version is served.
const renderVersion = "render/v2"

// Options bounds a render and says where its inputs come from.
type Options struct {
	// Timeout bounds one app's render, fetch included.
	Timeout time.Duration
	// MaxInputBytes caps the bytes of source files one render reads, and the
	// size of one downloaded chart archive.
	MaxInputBytes int64
	// MaxOutputBytes caps the bytes of manifests one render produces.
	MaxOutputBytes int64
	// MaxObjects caps the objects one app may render.
	MaxObjects int
	// CacheEntries bounds the render cache.
	CacheEntries int

	// ChartCacheDir keeps the charts downloaded from Helm repositories and
	// OCI registries. Empty means a .charts folder in the git cache.
	ChartCacheDir string
	// ChartIndexTTL is how long a Helm repository's index is trusted before
	// a version range is resolved against a fresh one.
	ChartIndexTTL time.Duration
	// Credentials authenticates to Helm repositories and OCI registries.
	// Git remotes get theirs through the GitCache (WithCredentials).
	Credentials Credentials
	// Capabilities gives Helm the target cluster's version and APIs; nil
	// renders with Helm's defaults, as `helm template` does.
	Capabilities CapabilitiesSource
	// KustomizeRemoteBases lets kustomizations use remote bases and files,
	// fetched by kustomize itself on every render. Off by default: only
	// what is in git is deployed.
	KustomizeRemoteBases bool
}

// DefaultOptions returns the limits of `ferry serve`.
func DefaultOptions() Options {
	return Options{
		Timeout:        90 * time.Second,
		MaxInputBytes:  64 << 20,
		MaxOutputBytes: 64 << 20,
		MaxObjects:     10000,
		CacheEntries:   4096,
		ChartIndexTTL:  5 * time.Minute,
	}
}

// Renderer renders Applications from a shared git cache.
type Renderer struct {
	git    *GitCache
	charts *chartStore
	opts   Options
	log    *slog.Logger

	cache *renderCache
	// noCache makes every render miss; the benchmarks use it to time
	// renders against the CLIs.
	noCache bool
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
	return &Renderer{
		git:    git,
		charts: newChartStore(opts.ChartCacheDir, opts.Credentials, opts.MaxInputBytes, opts.ChartIndexTTL, opts.Timeout),
		opts:   opts,
		log:    log,
		cache:  newRenderCache(opts.CacheEntries),
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
	fail := func(i int, err error) error {
		switch {
		case errors.Is(err, ErrLimitExceeded):
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			err = fmt.Errorf("render timed out after %s: %w", r.opts.Timeout, err)
		case ctx.Err() != nil:
			err = fmt.Errorf("render canceled: %w", err)
		}
		ae := &AppError{App: name, Source: i, Where: describeSource(sources[i]), Err: err}
		span.SetStatus(codes.Error, ae.Error())
		return ae
	}

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

	in := newInputs(r.opts.MaxInputBytes)
	readers := make([]*repoReader, len(sources))
	refReaders := map[string]*repoReader{}
	for i := range sources {
		if snaps[i] != nil {
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
		if i == 0 && revision == "" {
			revision = chartVersion
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
	b := NewBundle(objects)
	span.SetAttributes(attribute.Bool("ferry.render.cache_hit", false), attribute.Int("ferry.objects", len(objects)))
	inputs := inputPaths(in.facts, in.shallow, sources)
	r.cache.store(key, in, b, revision, inputs, !r.noCache)
	r.log.DebugContext(ctx, "rendered", "app", name, "revision", revision, "objects", len(objects))
	return &Result{Bundle: b, Revision: revision, Inputs: inputs}, nil
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

// describeSource names a source in errors.
func describeSource(src v1alpha1.ApplicationSource) string {
	switch {
	case src.Chart != "":
		return fmt.Sprintf("chart %s %s from %s", src.Chart, src.TargetRevision, redactURL(src.RepoURL))
	case src.Ref != "" && src.Path == "":
		return fmt.Sprintf("ref %s: %s", src.Ref, redactURL(src.RepoURL))
	}
	p := src.Path
	if p == "" {
		p = "."
	}
	return fmt.Sprintf("%s path %s", redactURL(src.RepoURL), p)
}

// baseKey identifies what a render is, before the facts it read: the app
// (whose name is Helm's default release name), its spec, and the options
// that change output.
func (r *Renderer) baseKey(app *v1alpha1.Application) string {
	h := sha256.New()
	spec, _ := json.Marshal(app.Spec)
	fmt.Fprintf(h, "%s\x00%s/%s\x00%t\x00", renderVersion, app.Namespace, app.Name, r.opts.KustomizeRemoteBases)
	h.Write(spec)
	return hex.EncodeToString(h.Sum(nil))
}

// stillValid reports whether every fact a cached render relied on holds
// now: the git facts against the snapshots of this request, the others
// (chart versions, cluster capabilities) asked again.
func (r *Renderer) stillValid(ctx context.Context, app *v1alpha1.Application, e *cacheEntry, trees []*snapshotTrees) bool {
	if !checkFacts(e.facts, trees) {
		return false
	}
	for k, want := range e.extra {
		got, err := r.extraFact(ctx, app, k)
		if err != nil || got != want {
			return false
		}
	}
	return true
}

const (
	factCapabilities = "capabilities"
	factChartPrefix  = "chart\x00"
)

func chartFactKey(repoURL, name, spec string) string {
	return factChartPrefix + repoURL + "\x00" + name + "\x00" + spec
}

// chartFactValue is what a chart fact holds: the version a spec resolved
// to. A published version is taken as immutable, as Helm and Argo CD take
// it; a digest pin is its own version.
func chartFactValue(ref chartRef) string { return ref.version }

func (r *Renderer) extraFact(ctx context.Context, app *v1alpha1.Application, key string) (string, error) {
	switch {
	case key == factCapabilities:
		caps, err := r.capabilities(ctx, app)
		if err != nil {
			return "", err
		}
		return caps.fingerprint(), nil
	case strings.HasPrefix(key, factChartPrefix):
		parts := strings.Split(strings.TrimPrefix(key, factChartPrefix), "\x00")
		if len(parts) != 3 {
			return "", fmt.Errorf("bad chart fact %q", key)
		}
		ref, err := r.charts.resolve(ctx, parts[0], parts[1], parts[2])
		if err != nil {
			return "", err
		}
		return chartFactValue(ref), nil
	}
	return "", fmt.Errorf("unknown fact %q", key)
}

func (r *Renderer) capabilities(ctx context.Context, app *v1alpha1.Application) (*Capabilities, error) {
	if r.opts.Capabilities == nil {
		return nil, nil
	}
	caps, err := r.opts.Capabilities.Capabilities(ctx, app.Spec.Destination)
	if err != nil {
		return nil, fmt.Errorf("reading the cluster's capabilities: %w", err)
	}
	return caps, nil
}

// sourceKind is how a source is rendered.
type sourceKind int

const (
	kindDirectory sourceKind = iota
	kindKustomize
	kindHelm
)

// chooseKind picks the renderer as Argo CD does: explicit helm, kustomize
// or directory fields decide; otherwise a kustomization file makes it
// Kustomize and a Chart.yaml makes it Helm (Argo CD's discovery lets the
// kustomization win when a folder holds both); anything else is a
// directory of manifests.
func chooseKind(rd *repoReader, dir string, src v1alpha1.ApplicationSource) (sourceKind, error) {
	var explicit []sourceKind
	if src.Helm != nil {
		explicit = append(explicit, kindHelm)
	}
	if src.Kustomize != nil {
		explicit = append(explicit, kindKustomize)
	}
	if src.Directory != nil {
		explicit = append(explicit, kindDirectory)
	}
	switch len(explicit) {
	case 0:
	case 1:
		return explicit[0], nil
	default:
		return 0, &SourceError{Err: errors.New("the source sets more than one of helm, kustomize and directory")}
	}
	ents, _, err := rd.list(dir)
	if err != nil {
		return 0, err
	}
	kind := kindDirectory
	for _, e := range ents {
		switch e.name {
		case "kustomization.yaml", "kustomization.yml", "Kustomization":
			return kindKustomize, nil
		case "Chart.yaml":
			kind = kindHelm
		}
	}
	return kind, nil
}

// renderSource renders one source. It returns the chart version for a
// chart from a chart repository.
func (r *Renderer) renderSource(ctx context.Context, app *v1alpha1.Application, i int, src v1alpha1.ApplicationSource,
	rd *repoReader, refs map[string]*repoReader, in *inputs) ([]Object, string, error) {
	if src.Chart != "" {
		ref, err := r.charts.resolve(ctx, src.RepoURL, src.Chart, src.TargetRevision)
		if err != nil {
			return nil, "", err
		}
		in.extraRecord(chartFactKey(src.RepoURL, src.Chart, src.TargetRevision), chartFactValue(ref))
		caps, err := r.helmCapabilities(ctx, app, in)
		if err != nil {
			return nil, "", err
		}
		job := &helmJob{r: r, app: app, src: src, caps: caps, refs: refs, in: in}
		objs, err := job.render(ctx, &ref)
		return objs, ref.version, err
	}
	if src.Ref != "" && src.Path == "" {
		// A ref source gives files to the others, no manifests.
		return nil, "", nil
	}
	clean, err := ConfinePath(src.Path)
	if err != nil {
		return nil, "", err
	}
	n, err := rd.stat(clean)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", &SourceError{Err: fmt.Errorf("path %q does not exist at commit %s", clean, rd.trees.snap.Commit.String()[:12])}
	}
	if err != nil {
		return nil, "", err
	}
	if !n.isDir() {
		return nil, "", &SourceError{Err: fmt.Errorf("path %q is a file; a source path is a directory", clean)}
	}
	kind, err := chooseKind(rd, n.path, src)
	if err != nil {
		return nil, "", err
	}
	switch kind {
	case kindKustomize:
		objs, err := r.renderKustomize(ctx, rd, n.path, src.Kustomize)
		return objs, "", err
	case kindHelm:
		caps, err := r.helmCapabilities(ctx, app, in)
		if err != nil {
			return nil, "", err
		}
		job := &helmJob{r: r, app: app, src: src, caps: caps, rd: rd, chartDir: n.path, refs: refs, in: in}
		objs, err := job.render(ctx, nil)
		return objs, "", err
	}
	if src.Directory == nil || !src.Directory.Recurse {
		in.mu.Lock()
		in.shallow[i] = true
		in.mu.Unlock()
	}
	objs, err := r.renderDirectory(ctx, rd, n.path, src.Directory)
	return objs, "", err
}

// helmCapabilities returns the cluster's capabilities and records them as
// an input of the render.
func (r *Renderer) helmCapabilities(ctx context.Context, app *v1alpha1.Application, in *inputs) (*Capabilities, error) {
	caps, err := r.capabilities(ctx, app)
	if err != nil || r.opts.Capabilities == nil {
		return caps, err
	}
	in.extraRecord(factCapabilities, caps.fingerprint())
	return caps, nil
}

func (r *Renderer) renderDirectory(ctx context.Context, rd *repoReader, dir string, d *v1alpha1.DirectorySource) ([]Object, error) {
	_, span := tracer().Start(ctx, "directory.render", trace.WithAttributes(attribute.String("ferry.path", dir)))
	defer span.End()
	recurse := d != nil && d.Recurse
	files, err := rd.readDir(dir, recurse, directoryFilter(dir, d))
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
