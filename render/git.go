package render

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// GitCache holds one bare repository per remote URL under a directory and
// reads commits from it. It is safe for concurrent use: fetches of one
// repository are serialised, reads run in parallel.
type GitCache struct {
	dir   string
	creds Credentials
	hosts hostPolicy
	// offline reads only what the directory holds and never fetches: a
	// render process reads the cache its parent fetched into.
	offline bool

	mu    sync.Mutex
	repos map[string]*cachedRepo
}

type cachedRepo struct {
	url   string
	creds Credentials
	mu    sync.RWMutex // write: fetch; read: object reads
	repo  *git.Repository
	// fetchedFrom is when the last successful fetch started: a caller that
	// asked for a fetch before then is served by it.
	fetchedFrom time.Time
}

// GitCacheOption configures a GitCache.
type GitCacheOption func(*GitCache) error

// WithCredentials makes the cache authenticate to remotes with the
// credentials creds finds for them.
func WithCredentials(creds Credentials) GitCacheOption {
	return func(c *GitCache) error {
		if creds == nil {
			return fmt.Errorf("%w: WithCredentials(nil)", ErrInvalidOption)
		}
		c.creds = creds
		return nil
	}
}

// WithAllowedHosts limits the git hosts the cache fetches from to those
// matching one of the globs (github.com, *.example.com, 127.0.0.1:*; see
// Options.AllowedHosts). A repository on any other host is refused before
// a request leaves. No option, or no globs, allows every host.
func WithAllowedHosts(globs ...string) GitCacheOption {
	return func(c *GitCache) error {
		for _, g := range globs {
			if err := validateHostPattern(g); err != nil {
				return err
			}
		}
		c.hosts = append(hostPolicy(nil), globs...)
		return nil
	}
}

// checkRemote refuses, before any request, a remote whose URL carries
// credentials or whose host is not allowed.
func (c *GitCache) checkRemote(repoURL string) error {
	if err := checkURLCredentials(repoURL, false); err != nil {
		return err
	}
	return c.hosts.check("git repository", repoURL)
}

// NewGitCache returns a cache keeping its repositories under dir.
func NewGitCache(dir string, opts ...GitCacheOption) (*GitCache, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: the git cache directory is empty", ErrInvalidOption)
	}
	c := &GitCache{dir: dir, repos: map[string]*cachedRepo{}}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("creating git cache: %w", err)
	}
	return c, nil
}

// Dir returns the directory holding the cache.
func (c *GitCache) Dir() string { return c.dir }

// objectCacheSize bounds go-git's in-memory object cache per repository; its
// default of 96 MiB alone would break ferry's memory budget.
const objectCacheSize = 8 * cache.MiByte

func (c *GitCache) open(repoURL string) (*cachedRepo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.repos[repoURL]; ok {
		return r, nil
	}
	sum := sha256.Sum256([]byte(repoURL))
	path := filepath.Join(c.dir, hex.EncodeToString(sum[:12]))
	storage := filesystem.NewStorage(idxReadingFS{osfs.New(path)}, cache.NewObjectLRU(objectCacheSize))
	repo, err := git.Open(storage, nil)
	if errors.Is(err, git.ErrRepositoryNotExists) && !c.offline {
		repo, err = git.Init(storage, nil)
		if err == nil {
			_, err = repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{repoURL}})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("opening cache of %s: %w", redactURL(repoURL), err)
	}
	r := &cachedRepo{url: repoURL, repo: repo, creds: c.creds}
	r.warmIndex()
	c.repos[repoURL] = r
	return r, nil
}

var fullSHA = regexp.MustCompile(`^[0-9a-f]{40}$`)

// Snapshot is one commit of a repository, read-only.
type Snapshot struct {
	repo   *cachedRepo
	Commit plumbing.Hash
	tree   *object.Tree
}

// Resolve returns the commit that revision names in repoURL. A full commit
// SHA already in the cache is served without touching the network; anything
// else fetches first.
func (c *GitCache) Resolve(ctx context.Context, repoURL, revision string) (*Snapshot, error) {
	if err := c.checkRemote(repoURL); err != nil {
		return nil, err
	}
	r, err := c.open(repoURL)
	if err != nil {
		return nil, err
	}
	rev := strings.TrimSpace(revision)
	if fullSHA.MatchString(rev) {
		if s, err := r.snapshot(plumbing.NewHash(rev)); err == nil {
			return s, nil
		}
	}
	if c.offline {
		return r.snapshotAfterReindex(rev)
	}
	if err := r.fetch(ctx); err != nil {
		return nil, err
	}
	h, err := r.resolve(rev)
	if err != nil {
		return nil, err
	}
	return r.snapshot(h)
}

func (r *cachedRepo) fetch(ctx context.Context) error {
	ctx, span := tracer().Start(ctx, "git.fetch")
	defer span.End()
	span.SetAttributes(attribute.String("ferry.repo", redactURL(r.url)))
	asked := time.Now()
	creds, err := lookupCredentials(ctx, r.creds, r.url)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return err
	}
	auth, insecure, err := GitAuth(r.url, creds)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// Renders of one repository queue here after a push; the first fetch
	// serves every render that asked before it started.
	if r.fetchedFrom.After(asked) {
		span.SetAttributes(attribute.Bool("ferry.git.coalesced", true))
		return nil
	}
	started := time.Now()
	err = r.repo.FetchContext(ctx, &git.FetchOptions{
		RemoteName: "origin",
		RefSpecs: []config.RefSpec{
			"+HEAD:refs/remotes/origin/HEAD",
			"+refs/heads/*:refs/remotes/origin/*",
			"+refs/tags/*:refs/tags/*",
		},
		Tags:            git.NoTags,
		Force:           true,
		Auth:            auth,
		InsecureSkipTLS: insecure,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		// Retrying does not fix credentials or a repository that is not there.
		transient := !errors.Is(err, transport.ErrAuthenticationRequired) && !errors.Is(err, transport.ErrAuthorizationFailed) &&
			!errors.Is(err, transport.ErrRepositoryNotFound)
		err = fmt.Errorf("fetching %s: %s", redactURL(r.url), scrub(redactErr(err, r.url), creds.secrets()))
		span.SetStatus(codes.Error, err.Error())
		return &SourceError{Err: err, Transient: transient}
	}
	r.fetchedFrom = started
	r.warmIndex()
	return nil
}

// snapshotAfterReindex reads commit rev after loading the pack indexes
// again: another process (the parent of a render process) fetched into the
// directory since this one loaded them. go-git writes a pack's index
// before the pack, and lists packs by their pack file, so every pack seen
// is complete.
func (r *cachedRepo) snapshotAfterReindex(rev string) (*Snapshot, error) {
	if !fullSHA.MatchString(rev) {
		return nil, fmt.Errorf("an offline git cache reads commits only, not %q", rev)
	}
	r.mu.Lock()
	if fs, ok := r.repo.Storer.(*filesystem.Storage); ok {
		fs.Reindex()
	}
	r.warmIndex()
	r.mu.Unlock()
	return r.snapshot(plumbing.NewHash(rev))
}

// warmIndex loads the pack indexes while the caller holds the repository
// exclusively: go-git loads them lazily on the first read and without a
// lock, which parallel reads would race on.
func (r *cachedRepo) warmIndex() {
	_, _ = r.repo.Storer.EncodedObject(plumbing.AnyObject, plumbing.ZeroHash)
}

// refCandidates lists the local references a targetRevision may name:
// remote-tracking branches, tags, and any other full ref name as it is.
// Empty and HEAD mean the default branch; a bare name may be either a
// branch or a tag, and the branch wins.
func refCandidates(rev string) (branches, tags, other []plumbing.ReferenceName) {
	switch {
	case rev == "" || rev == "HEAD":
		branches = []plumbing.ReferenceName{"refs/remotes/origin/HEAD"}
	case strings.HasPrefix(rev, "refs/heads/"):
		branches = []plumbing.ReferenceName{plumbing.ReferenceName("refs/remotes/origin/" + strings.TrimPrefix(rev, "refs/heads/"))}
	case strings.HasPrefix(rev, "refs/tags/"):
		tags = []plumbing.ReferenceName{plumbing.ReferenceName(rev)}
	case strings.HasPrefix(rev, "refs/"):
		other = []plumbing.ReferenceName{plumbing.ReferenceName(rev)}
	default:
		branches = []plumbing.ReferenceName{plumbing.ReferenceName("refs/remotes/origin/" + rev)}
		tags = []plumbing.ReferenceName{plumbing.NewTagReferenceName(rev)}
	}
	return branches, tags, other
}

func (r *cachedRepo) resolve(rev string) (plumbing.Hash, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	branches, tags, other := refCandidates(rev)
	candidates := append(append(branches, tags...), other...)
	for _, name := range candidates {
		ref, err := r.repo.Reference(name, true)
		if err != nil {
			continue
		}
		h := ref.Hash()
		// An annotated tag points at a tag object; peel it to its commit.
		if tag, err := r.repo.TagObject(h); err == nil {
			c, err := tag.Commit()
			if err != nil {
				return plumbing.ZeroHash, fmt.Errorf("tag %s does not point at a commit: %w", rev, err)
			}
			h = c.Hash
		}
		return h, nil
	}
	if fullSHA.MatchString(rev) {
		return plumbing.NewHash(rev), nil
	}
	return plumbing.ZeroHash, &SourceError{Err: fmt.Errorf("revision %q not found in %s", rev, redactURL(r.url))}
}

func (r *cachedRepo) snapshot(h plumbing.Hash) (*Snapshot, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	commit, err := r.repo.CommitObject(h)
	if err != nil {
		return nil, &SourceError{Err: fmt.Errorf("commit %s not found in %s: %w", h, redactURL(r.url), err)}
	}
	tree, err := commit.Tree()
	if err != nil {
		return nil, fmt.Errorf("reading tree of %s: %w", h, err)
	}
	return &Snapshot{repo: r, Commit: h, tree: tree}, nil
}

// TreeHash returns the git hash of the tree (or blob) at dir, so that equal
// hashes mean equal content. A missing path hashes to the zero hash.
// Symbolic links are not followed.
func (s *Snapshot) TreeHash(dir string) (plumbing.Hash, error) {
	clean, err := ConfinePath(dir)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	e, found, _, err := newSnapshotTrees(s).rawLookup(clean)
	if err != nil || !found {
		return plumbing.ZeroHash, err
	}
	return e.Hash, nil
}

// File is one file read from a snapshot.
type File struct {
	Path string // slash-separated, relative to the repository root
	Data []byte
}

// ReadDir returns the regular files under dir (recursively when recurse is
// set) for which keep returns true, in path order. A path outside the
// repository or a missing directory is an error. Symbolic links to files
// are read where they point as long as that stays inside the repository;
// one that leads outside fails the read.
func (s *Snapshot) ReadDir(dir string, recurse bool, keep func(path string) bool, maxBytes int64) ([]File, error) {
	return s.reader(0, newInputs(maxBytes)).readDir(dir, recurse, keep)
}

func (r *repoReader) readDir(dir string, recurse bool, keep func(path string) bool) ([]File, error) {
	clean, err := ConfinePath(dir)
	if err != nil {
		return nil, err
	}
	walked, root, err := r.walk(clean, walkOptions{recurse: recurse})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &SourceError{Err: fmt.Errorf("path %q does not exist at commit %s", clean, r.trees.snap.Commit.String()[:12])}
	}
	if err != nil {
		return nil, err
	}
	var files []File
	for _, w := range walked {
		full := joinRepo(root.path, w.rel)
		if !keep(full) {
			continue
		}
		if !recurse {
			// The walk recorded only the folder's listing; a recursive walk
			// recorded the whole subtree already.
			r.record(w.node.path, factContent)
		}
		data, err := r.readBlob(w.node)
		if err != nil {
			return nil, err
		}
		files = append(files, File{Path: full, Data: data})
	}
	return files, nil
}

// ConfinePath cleans a repository-relative path and refuses one that climbs
// out of the repository.
func ConfinePath(p string) (string, error) {
	p = strings.TrimSpace(p)
	if filepath.IsAbs(p) {
		return "", &SourceError{Err: fmt.Errorf("path %q is absolute; paths are relative to the repository root", p)}
	}
	for _, part := range strings.Split(filepath.ToSlash(p), "/") {
		if part == ".." {
			return "", &SourceError{Err: fmt.Errorf("path %q: %w", p, ErrOutsideRepository)}
		}
	}
	clean := filepath.ToSlash(filepath.Clean("/" + p))
	return strings.TrimPrefix(clean, "/"), nil
}

// redactURL drops any credentials from a repository URL, so they never
// reach logs, errors or traces (see v1alpha1.RedactRepoURL).
func redactURL(raw string) string { return v1alpha1.RedactRepoURL(raw) }

func redactErr(err error, rawURL string) string {
	msg := err.Error()
	if u, perr := url.Parse(rawURL); perr == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
		msg = strings.ReplaceAll(msg, rawURL, redactURL(rawURL))
	}
	return msg
}
