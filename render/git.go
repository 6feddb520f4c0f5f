package render

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
)

// GitCache holds one bare repository per remote URL under a directory and
// reads commits from it. It is safe for concurrent use: fetches of one
// repository are serialised, reads run in parallel.
type GitCache struct {
	dir string

	mu    sync.Mutex
	repos map[string]*cachedRepo
}

type cachedRepo struct {
	url  string
	mu   sync.RWMutex // write: fetch; read: object reads
	repo *git.Repository
}

// NewGitCache returns a cache keeping its repositories under dir.
func NewGitCache(dir string) (*GitCache, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("creating git cache: %w", err)
	}
	return &GitCache{dir: dir, repos: map[string]*cachedRepo{}}, nil
}

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
	storage := filesystem.NewStorage(osfs.New(path), cache.NewObjectLRU(objectCacheSize))
	repo, err := git.Open(storage, nil)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		repo, err = git.Init(storage, nil)
		if err == nil {
			_, err = repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{repoURL}})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("opening cache of %s: %w", redactURL(repoURL), err)
	}
	r := &cachedRepo{url: repoURL, repo: repo}
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
	r.mu.Lock()
	defer r.mu.Unlock()
	err := r.repo.FetchContext(ctx, &git.FetchOptions{
		RemoteName: "origin",
		RefSpecs: []config.RefSpec{
			"+HEAD:refs/remotes/origin/HEAD",
			"+refs/heads/*:refs/remotes/origin/*",
			"+refs/tags/*:refs/tags/*",
		},
		Tags:  git.NoTags,
		Force: true,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		err = fmt.Errorf("fetching %s: %s", redactURL(r.url), redactErr(err, r.url))
		span.SetStatus(codes.Error, err.Error())
		return &SourceError{Err: err, Transient: true}
	}
	return nil
}

func (r *cachedRepo) resolve(rev string) (plumbing.Hash, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var candidates []plumbing.ReferenceName
	switch {
	case rev == "" || rev == "HEAD":
		candidates = []plumbing.ReferenceName{"refs/remotes/origin/HEAD"}
	case strings.HasPrefix(rev, "refs/heads/"):
		candidates = []plumbing.ReferenceName{plumbing.ReferenceName("refs/remotes/origin/" + strings.TrimPrefix(rev, "refs/heads/"))}
	case strings.HasPrefix(rev, "refs/"):
		candidates = []plumbing.ReferenceName{plumbing.ReferenceName(rev)}
	default:
		candidates = []plumbing.ReferenceName{
			plumbing.ReferenceName("refs/remotes/origin/" + rev),
			plumbing.NewTagReferenceName(rev),
		}
	}
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
func (s *Snapshot) TreeHash(dir string) (plumbing.Hash, error) {
	s.repo.mu.RLock()
	defer s.repo.mu.RUnlock()
	dir = strings.Trim(dir, "/")
	if dir == "" || dir == "." {
		return s.tree.Hash, nil
	}
	e, err := s.tree.FindEntry(dir)
	if errors.Is(err, object.ErrEntryNotFound) || errors.Is(err, object.ErrDirectoryNotFound) {
		return plumbing.ZeroHash, nil
	}
	if err != nil {
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
// set) for which keep returns true. A path outside the repository or a
// missing directory is an error; symbolic links are refused rather than
// followed, so nothing outside the commit can be read.
func (s *Snapshot) ReadDir(dir string, recurse bool, keep func(path string) bool, maxBytes int64) ([]File, error) {
	s.repo.mu.RLock()
	defer s.repo.mu.RUnlock()
	clean, err := ConfinePath(dir)
	if err != nil {
		return nil, err
	}
	tree := s.tree
	if clean != "" {
		tree, err = s.tree.Tree(clean)
		if err != nil {
			return nil, &SourceError{Err: fmt.Errorf("path %q does not exist at commit %s", clean, s.Commit.String()[:12])}
		}
	}
	var files []File
	var total int64
	walker := object.NewTreeWalker(tree, recurse, nil)
	defer walker.Close()
	for {
		name, entry, err := walker.Next()
		if err != nil {
			break
		}
		if !entry.Mode.IsFile() {
			continue
		}
		full := joinRepo(clean, name)
		if !keep(full) {
			continue
		}
		if entry.Mode == filemode.Symlink {
			return nil, &SourceError{Err: fmt.Errorf("%s is a symbolic link; ferry does not follow links", full)}
		}
		blob, err := tree.TreeEntryFile(&entry)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", full, err)
		}
		total += blob.Size
		if maxBytes > 0 && total > maxBytes {
			return nil, &SourceError{Err: fmt.Errorf("files under %q exceed the render input cap of %d bytes", clean, maxBytes)}
		}
		text, err := blob.Contents()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", full, err)
		}
		files = append(files, File{Path: full, Data: []byte(text)})
	}
	return files, nil
}

func joinRepo(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
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
			return "", &SourceError{Err: fmt.Errorf("path %q leaves the repository", p)}
		}
	}
	clean := filepath.ToSlash(filepath.Clean("/" + p))
	return strings.TrimPrefix(clean, "/"), nil
}

// redactURL drops any user information from a URL, so credentials never
// reach logs, errors or traces.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = nil
	return u.String()
}

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
