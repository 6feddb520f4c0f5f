package render

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// maxLinkHops bounds the symbolic links one path may pass through, as the
// kernel's ELOOP does.
const maxLinkHops = 40

// factKind says what a render learnt about a path. A later commit shows the
// same fact when the render would read the same bytes there, which is what
// lets the render cache skip renders whose inputs did not change.
type factKind uint8

const (
	// factStat: whether the path is missing, a file or a directory.
	factStat factKind = iota
	// factContent: the blob or tree hash, so the bytes, or everything below.
	factContent
	// factList: the names and modes directly inside a directory.
	factList
)

type factKey struct {
	src  int // index of the app source whose repository holds path
	path string
	kind factKind
}

// inputs records what one render read: the facts its output depends on, and
// the bytes it read against the render's input cap.
type inputs struct {
	mu    sync.Mutex
	facts map[factKey]string
	// extra holds the facts not about git content: chart versions and the
	// cluster's capabilities, by key.
	extra    map[string]string
	bytes    int64
	maxBytes int64
	// uncacheable is set when the output depends on something no fact
	// captures, such as a remote kustomize base.
	uncacheable bool
	// shallow holds the sources rendered as directories without recurse,
	// which read only the files directly in their path.
	shallow map[int]bool
}

func newInputs(maxBytes int64) *inputs {
	return &inputs{facts: map[factKey]string{}, extra: map[string]string{}, shallow: map[int]bool{}, maxBytes: maxBytes}
}

func (in *inputs) extraRecord(k, v string) {
	in.mu.Lock()
	in.extra[k] = v
	in.mu.Unlock()
}

func (in *inputs) record(k factKey, v string) {
	in.mu.Lock()
	in.facts[k] = v
	in.mu.Unlock()
}

func (in *inputs) charge(n int64, what string) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.bytes += n
	if in.maxBytes > 0 && in.bytes > in.maxBytes {
		return &SourceError{Err: fmt.Errorf("reading %s: the render reads more than %d bytes: %w", what, in.maxBytes, ErrLimitExceeded)}
	}
	return nil
}

// snapshotTrees reads trees of one snapshot. go-git's Tree.FindEntry caches
// into the tree it is called on, which is not safe when renders share a
// snapshot, so lookups go through this read-only index instead.
type snapshotTrees struct {
	snap *Snapshot

	mu    sync.Mutex
	trees map[plumbing.Hash]*treeIndex
}

type treeIndex struct {
	tree  *object.Tree
	names map[string]int
}

func newSnapshotTrees(s *Snapshot) *snapshotTrees {
	return &snapshotTrees{snap: s, trees: map[plumbing.Hash]*treeIndex{}}
}

func (st *snapshotTrees) tree(h plumbing.Hash) (*treeIndex, error) {
	st.mu.Lock()
	ti, ok := st.trees[h]
	st.mu.Unlock()
	if ok {
		return ti, nil
	}
	st.snap.repo.mu.RLock()
	t, err := object.GetTree(st.snap.repo.repo.Storer, h)
	st.snap.repo.mu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("reading tree %s of commit %s: %w", h, st.snap.Commit, err)
	}
	ti = &treeIndex{tree: t, names: make(map[string]int, len(t.Entries))}
	for i, e := range t.Entries {
		ti.names[e.Name] = i
	}
	st.mu.Lock()
	st.trees[h] = ti
	st.mu.Unlock()
	return ti, nil
}

func (ti *treeIndex) entry(name string) (object.TreeEntry, bool) {
	i, ok := ti.names[name]
	if !ok {
		return object.TreeEntry{}, false
	}
	return ti.tree.Entries[i], true
}

func (st *snapshotTrees) blob(h plumbing.Hash, limit int64) ([]byte, error) {
	st.snap.repo.mu.RLock()
	defer st.snap.repo.mu.RUnlock()
	b, err := object.GetBlob(st.snap.repo.repo.Storer, h)
	if err != nil {
		return nil, err
	}
	if limit > 0 && b.Size > limit {
		return nil, fmt.Errorf("blob of %d bytes is larger than %d: %w", b.Size, limit, ErrLimitExceeded)
	}
	rc, err := b.Reader()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func splitPath(p string) []string {
	if p == "" || p == "." {
		return nil
	}
	return strings.Split(p, "/")
}

func joinRepo(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// rawLookup walks p component by component without following symbolic
// links. blocked is set when a component before the last is not a plain
// directory, so that "missing" is only reported for a path whose parents
// all exist as directories.
func (st *snapshotTrees) rawLookup(p string) (e object.TreeEntry, found, blocked bool, err error) {
	root := object.TreeEntry{Mode: filemode.Dir, Hash: st.snap.tree.Hash}
	comps := splitPath(p)
	if len(comps) == 0 {
		return root, true, false, nil
	}
	cur := root
	for _, c := range comps {
		if cur.Mode != filemode.Dir {
			return object.TreeEntry{}, false, true, nil
		}
		ti, err := st.tree(cur.Hash)
		if err != nil {
			return object.TreeEntry{}, false, false, err
		}
		next, ok := ti.entry(c)
		if !ok {
			return object.TreeEntry{}, false, false, nil
		}
		cur = next
	}
	return cur, true, false, nil
}

// fact computes what kind says about p at this snapshot. It is used both to
// record a fact and to check it against a later commit, so the two always
// agree.
func (st *snapshotTrees) fact(p string, kind factKind) (string, error) {
	e, found, blocked, err := st.rawLookup(p)
	switch {
	case err != nil:
		return "", err
	case blocked:
		return "blocked", nil
	case !found:
		return "missing", nil
	}
	switch kind {
	case factStat:
		switch e.Mode {
		case filemode.Dir:
			return "dir", nil
		case filemode.Symlink:
			return "symlink", nil
		case filemode.Submodule:
			return "submodule", nil
		}
		return "file", nil
	case factContent:
		return e.Mode.String() + ":" + e.Hash.String(), nil
	default: // factList
		if e.Mode != filemode.Dir {
			return "notdir:" + e.Mode.String(), nil
		}
		ti, err := st.tree(e.Hash)
		if err != nil {
			return "", err
		}
		h := sha256.New()
		for _, te := range ti.tree.Entries {
			fmt.Fprintf(h, "%s %s\x00", te.Mode, te.Name)
		}
		return hex.EncodeToString(h.Sum(nil)), nil
	}
}

// repoReader reads one snapshot for one render. It confines every path to
// the repository: ".." cannot climb out, and symbolic links are followed
// only while they stay inside. It charges what it reads to the render's
// input cap and records the facts the render relies on.
type repoReader struct {
	trees *snapshotTrees
	src   int
	in    *inputs
	// what names the repository in errors: its URL without credentials.
	what string
}

func (s *Snapshot) reader(src int, in *inputs) *repoReader {
	return &repoReader{trees: newSnapshotTrees(s), src: src, in: in, what: redactURL(s.repo.url)}
}

// node is a resolved path: no symbolic link in it, inside the repository.
type node struct {
	path string // slash-separated, relative to the repository root; "" is the root
	mode filemode.FileMode
	hash plumbing.Hash
}

func (n node) isDir() bool { return n.mode == filemode.Dir }

func (r *repoReader) record(p string, kind factKind) {
	if r.in == nil {
		return
	}
	v, err := r.trees.fact(p, kind)
	if err != nil {
		// A fact that cannot be computed never matches, so the entry is
		// simply never reused.
		v = "error:" + err.Error()
	}
	r.in.record(factKey{src: r.src, path: p, kind: kind}, v)
}

// escapeError is the error for a path that leaves the repository.
func escapeError(p, via, target string) error {
	if via == "" {
		return &SourceError{Err: fmt.Errorf("path %q: %w", p, ErrOutsideRepository)}
	}
	return &SourceError{Err: fmt.Errorf("path %q: %s is a symbolic link to %q: %w", p, via, target, ErrOutsideRepository)}
}

// resolve follows p to what it names. A path that does not exist returns
// an error matching fs.ErrNotExist; one that leaves the repository, an
// error matching ErrOutsideRepository. Symbolic links passed on the way,
// and the point where a missing path stops, are recorded.
func (r *repoReader) resolve(p string) (node, error) {
	clean, err := ConfinePath(p)
	if err != nil {
		return node{}, err
	}
	comps := splitPath(clean)
	cur := node{mode: filemode.Dir, hash: r.trees.snap.tree.Hash}
	hops := 0
	for i := 0; i < len(comps); i++ {
		c := comps[i]
		full := joinRepo(cur.path, c)
		if !cur.isDir() {
			r.record(cur.path, factStat)
			return node{}, &fs.PathError{Op: "open", Path: clean, Err: fs.ErrNotExist}
		}
		ti, err := r.trees.tree(cur.hash)
		if err != nil {
			return node{}, err
		}
		e, ok := ti.entry(c)
		if !ok {
			r.record(full, factStat)
			return node{}, &fs.PathError{Op: "open", Path: clean, Err: fs.ErrNotExist}
		}
		switch e.Mode {
		case filemode.Symlink:
			hops++
			if hops > maxLinkHops {
				return node{}, &SourceError{Err: fmt.Errorf("path %q: too many levels of symbolic links", clean)}
			}
			r.record(full, factContent)
			data, err := r.trees.blob(e.Hash, 4096)
			if err != nil {
				return node{}, fmt.Errorf("reading symbolic link %s: %w", full, err)
			}
			target := string(data)
			if path.IsAbs(target) {
				return node{}, escapeError(clean, full, target)
			}
			joined := path.Join(cur.path, target)
			if joined == ".." || strings.HasPrefix(joined, "../") {
				return node{}, escapeError(clean, full, target)
			}
			if joined == "." {
				joined = ""
			}
			comps = append(splitPath(joined), comps[i+1:]...)
			cur = node{mode: filemode.Dir, hash: r.trees.snap.tree.Hash}
			i = -1
		case filemode.Submodule:
			return node{}, &SourceError{Err: fmt.Errorf("path %q: %s is a git submodule, which ferry does not fetch", clean, full)}
		default:
			cur = node{path: full, mode: e.Mode, hash: e.Hash}
		}
	}
	return cur, nil
}

// stat resolves p and records only whether it is a file or a directory.
func (r *repoReader) stat(p string) (node, error) {
	n, err := r.resolve(p)
	if err != nil {
		return node{}, err
	}
	r.record(n.path, factStat)
	return n, nil
}

// readFile returns the bytes of the file p names.
func (r *repoReader) readFile(p string) ([]byte, node, error) {
	n, err := r.resolve(p)
	if err != nil {
		return nil, node{}, err
	}
	if n.isDir() {
		r.record(n.path, factStat)
		return nil, n, &fs.PathError{Op: "read", Path: p, Err: errors.New("is a directory")}
	}
	r.record(n.path, factContent)
	data, err := r.readBlob(n)
	return data, n, err
}

func (r *repoReader) readBlob(n node) ([]byte, error) {
	data, err := r.trees.blob(n.hash, r.in.maxBytes)
	if err != nil {
		if errors.Is(err, ErrLimitExceeded) {
			return nil, &SourceError{Err: fmt.Errorf("reading %s: %w", n.path, err)}
		}
		return nil, fmt.Errorf("reading %s: %w", n.path, err)
	}
	if err := r.in.charge(int64(len(data)), n.path); err != nil {
		return nil, err
	}
	return data, nil
}

// dirEntry is one name inside a directory, unresolved.
type dirEntry struct {
	name string
	mode filemode.FileMode
	hash plumbing.Hash
}

// list returns the entries directly inside the directory p names, sorted
// by name.
func (r *repoReader) list(p string) ([]dirEntry, node, error) {
	n, err := r.resolve(p)
	if err != nil {
		return nil, node{}, err
	}
	if !n.isDir() {
		r.record(n.path, factStat)
		return nil, n, &fs.PathError{Op: "readdir", Path: p, Err: errors.New("not a directory")}
	}
	r.record(n.path, factList)
	ents, err := r.entries(n)
	return ents, n, err
}

func (r *repoReader) entries(n node) ([]dirEntry, error) {
	ti, err := r.trees.tree(n.hash)
	if err != nil {
		return nil, err
	}
	out := make([]dirEntry, 0, len(ti.tree.Entries))
	for _, e := range ti.tree.Entries {
		out = append(out, dirEntry{name: e.Name, mode: e.Mode, hash: e.Hash})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// walkedFile is one regular file met by walk: its path as walked (through
// links) and the node it resolved to.
type walkedFile struct {
	rel  string // relative to the walked root, slash-separated
	node node
}

// walkOptions says how walk treats what it meets.
type walkOptions struct {
	recurse bool
	// followDirLinks descends into symbolic links to directories, as Helm's
	// loader does; otherwise they are skipped, as filepath.Walk does.
	followDirLinks bool
	// skip prunes a file or directory, given its path relative to the root.
	skip func(rel string, isDir bool) bool
}

// walk lists the regular files under the directory root. The whole subtree
// is recorded as one fact, so that any change below root is seen; links
// it follows are recorded where they point.
func (r *repoReader) walk(root string, o walkOptions) ([]walkedFile, node, error) {
	n, err := r.resolve(root)
	if err != nil {
		return nil, node{}, err
	}
	if !n.isDir() {
		r.record(n.path, factStat)
		return nil, n, &fs.PathError{Op: "walk", Path: root, Err: errors.New("not a directory")}
	}
	if o.recurse {
		r.record(n.path, factContent)
	} else {
		r.record(n.path, factList)
	}
	var out []walkedFile
	err = r.walkDir(n, "", o, 0, &out)
	return out, n, err
}

// maxWalkDepth bounds directory nesting, so that a link cycle ends.
const maxWalkDepth = 64

func (r *repoReader) walkDir(dir node, rel string, o walkOptions, depth int, out *[]walkedFile) error {
	if depth > maxWalkDepth {
		return &SourceError{Err: fmt.Errorf("%s: directories nest deeper than %d; is there a symbolic link cycle?", dir.path, maxWalkDepth)}
	}
	ents, err := r.entries(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		erel := joinRepo(rel, e.name)
		full := joinRepo(dir.path, e.name)
		switch e.mode {
		case filemode.Dir:
			if !o.recurse || (o.skip != nil && o.skip(erel, true)) {
				continue
			}
			if err := r.walkDir(node{path: full, mode: filemode.Dir, hash: e.hash}, erel, o, depth+1, out); err != nil {
				return err
			}
		case filemode.Submodule:
			continue
		case filemode.Symlink:
			target, err := r.resolve(full)
			if errors.Is(err, fs.ErrNotExist) {
				// A dangling link reads as nothing, as on disk.
				continue
			}
			if err != nil {
				return err
			}
			if target.isDir() {
				if !o.followDirLinks || !o.recurse || (o.skip != nil && o.skip(erel, true)) {
					continue
				}
				r.record(target.path, factContent)
				if err := r.walkDir(target, erel, o, depth+1, out); err != nil {
					return err
				}
				continue
			}
			if o.skip != nil && o.skip(erel, false) {
				continue
			}
			r.record(target.path, factContent)
			*out = append(*out, walkedFile{rel: erel, node: target})
		default:
			if o.skip != nil && o.skip(erel, false) {
				continue
			}
			*out = append(*out, walkedFile{rel: erel, node: node{path: full, mode: e.mode, hash: e.hash}})
		}
	}
	return nil
}

// checkFacts reports whether every recorded fact still holds on the
// snapshots given, one per app source (nil for sources not read from git).
func checkFacts(facts map[factKey]string, trees []*snapshotTrees) bool {
	for k, want := range facts {
		if k.src < 0 || k.src >= len(trees) || trees[k.src] == nil {
			return false
		}
		got, err := trees[k.src].fact(k.path, k.kind)
		if err != nil || got != want {
			return false
		}
	}
	return true
}
