package render

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing/filemode"
	"sigs.k8s.io/kustomize/api/konfig"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// kustomizeRoot is where the repository appears in the file system that
// kustomize sees. It is not "/", so that "../.." past the repository root
// stays visible as an escape instead of being cleaned away.
const kustomizeRoot = "/repo"

// ErrRemoteBase is wrapped when a kustomization refers to a remote base or
// file while remote bases are off.
var ErrRemoteBase = errors.New("remote kustomize bases are off")

// errReadOnly is what every write to the kustomize file system returns.
var errReadOnly = errors.New("the repository is read-only")

// kustomizeFS is a read-only kyaml file system over one snapshot of a
// repository. It reads files straight from git objects on demand, so a
// build of one overlay reads the files that overlay uses and nothing else
// of the repository, however big; and through repoReader it records them,
// so that the render cache knows every base the build used, inside or
// outside the app's path.
//
// Paths outside kustomizeRoot do not exist (their first use is kept as the
// render's error), except, with remote bases on, kustomize's own clones of
// remote bases in the temporary directory.
type kustomizeFS struct {
	rd *repoReader
	// overrides replaces the content of files, by repository path: the app
	// root's kustomization with the Application's kustomize fields applied.
	overrides   map[string][]byte
	allowRemote bool
	tmpPrefix   string
	disk        filesys.FileSystem

	mu     sync.Mutex
	escape error // the first attempt to leave the repository
	remote error // the first remote reference refused
}

var _ filesys.FileSystem = (*kustomizeFS)(nil)

func newKustomizeFS(rd *repoReader, allowRemote bool) *kustomizeFS {
	f := &kustomizeFS{rd: rd, overrides: map[string][]byte{}, allowRemote: allowRemote}
	if allowRemote {
		tmp, err := filepath.EvalSymlinks(os.TempDir())
		if err != nil {
			tmp = os.TempDir()
		}
		f.tmpPrefix = filepath.Join(tmp, "kustomize-")
		f.disk = filesys.MakeFsOnDisk()
	}
	return f
}

// failure is the error to report instead of kustomize's own, when the
// build failed because it tried to leave the repository or to go remote.
func (f *kustomizeFS) failure() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.escape != nil {
		return f.escape
	}
	return f.remote
}

// onDisk reports whether p is in a clone kustomize made of a remote base.
func (f *kustomizeFS) onDisk(p string) bool {
	return f.allowRemote && strings.HasPrefix(filepath.Clean(p), f.tmpPrefix)
}

// repoPath maps a path kustomize uses to a repository path.
func (f *kustomizeFS) repoPath(p string) (string, error) {
	if !filepath.IsAbs(p) {
		p = filepath.Join(kustomizeRoot, p)
	}
	p = filepath.ToSlash(filepath.Clean(p))
	if p == kustomizeRoot {
		return "", nil
	}
	if rel, ok := strings.CutPrefix(p, kustomizeRoot+"/"); ok {
		return rel, nil
	}
	err := &SourceError{Err: fmt.Errorf("kustomize path %s: %w", strings.TrimPrefix(p, "/"), ErrOutsideRepository)}
	if strings.HasPrefix(p, "/") {
		// Show the path as climbing out of the repository, which is what
		// the kustomization wrote.
		err = &SourceError{Err: fmt.Errorf("kustomize path %s (outside %s): %w", p, kustomizeRoot, ErrOutsideRepository)}
	}
	f.noteEscape(err)
	return "", err
}

func (f *kustomizeFS) noteEscape(err error) {
	f.mu.Lock()
	if f.escape == nil {
		f.escape = err
	}
	f.mu.Unlock()
}

// resolveErr keeps an escape through a symbolic link as the build's error.
func (f *kustomizeFS) resolveErr(err error) error {
	if errors.Is(err, ErrOutsideRepository) {
		f.noteEscape(err)
	}
	return err
}

func abs(rel string) string {
	if rel == "" {
		return kustomizeRoot
	}
	return kustomizeRoot + "/" + rel
}

// Create is refused: the repository is read-only.
func (f *kustomizeFS) Create(string) (filesys.File, error) { return nil, errReadOnly }

// Mkdir is refused: the repository is read-only.
func (f *kustomizeFS) Mkdir(string) error { return errReadOnly }

// MkdirAll is refused: the repository is read-only.
func (f *kustomizeFS) MkdirAll(string) error { return errReadOnly }

// RemoveAll removes kustomize's clones of remote bases, and nothing else.
func (f *kustomizeFS) RemoveAll(p string) error {
	if f.onDisk(p) {
		return f.disk.RemoveAll(p)
	}
	return errReadOnly
}

// WriteFile is refused: the repository is read-only.
func (f *kustomizeFS) WriteFile(string, []byte) error { return errReadOnly }

// Open returns the file at p for reading.
func (f *kustomizeFS) Open(p string) (filesys.File, error) {
	if f.onDisk(p) {
		return f.disk.Open(p)
	}
	data, err := f.ReadFile(p)
	if err != nil {
		return nil, err
	}
	return &memFile{Reader: bytes.NewReader(data), info: memInfo{name: path.Base(p), size: int64(len(data))}}, nil
}

// IsDir reports whether p is a directory.
func (f *kustomizeFS) IsDir(p string) bool {
	if f.onDisk(p) {
		return f.disk.IsDir(p)
	}
	rel, err := f.repoPath(p)
	if err != nil {
		return false
	}
	n, err := f.rd.stat(rel)
	if err != nil {
		f.resolveErr(err)
		return false
	}
	return n.isDir()
}

// Exists reports whether p exists.
func (f *kustomizeFS) Exists(p string) bool {
	if f.onDisk(p) {
		return f.disk.Exists(p)
	}
	rel, err := f.repoPath(p)
	if err != nil {
		return false
	}
	_, err = f.rd.stat(rel)
	if err != nil {
		f.resolveErr(err)
	}
	return err == nil
}

// CleanedAbs splits p, with symbolic links resolved, into a directory and
// a file name (empty when p is a directory), as fsOnDisk does.
func (f *kustomizeFS) CleanedAbs(p string) (filesys.ConfirmedDir, string, error) {
	if f.onDisk(p) {
		return f.disk.CleanedAbs(p)
	}
	rel, err := f.repoPath(p)
	if err != nil {
		return "", "", err
	}
	n, err := f.rd.stat(rel)
	if err != nil {
		return "", "", fmt.Errorf("evalsymlink failure on '%s' : %w", p, f.resolveErr(err))
	}
	if n.isDir() {
		return filesys.ConfirmedDir(abs(n.path)), "", nil
	}
	return filesys.ConfirmedDir(abs(path.Dir("/" + n.path)[1:])), path.Base(n.path), nil
}

// ReadDir returns the names in directory p.
func (f *kustomizeFS) ReadDir(p string) ([]string, error) {
	if f.onDisk(p) {
		return f.disk.ReadDir(p)
	}
	rel, err := f.repoPath(p)
	if err != nil {
		return nil, err
	}
	ents, _, err := f.rd.list(rel)
	if err != nil {
		return nil, f.resolveErr(err)
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.name
	}
	return names, nil
}

// Glob returns the paths matching pattern, without hidden files unless the
// pattern names them, as fsOnDisk does.
func (f *kustomizeFS) Glob(pattern string) ([]string, error) {
	if f.onDisk(pattern) {
		return f.disk.Glob(pattern)
	}
	rel, err := f.repoPath(pattern)
	if err != nil {
		return nil, err
	}
	if _, err := path.Match(rel, ""); err != nil {
		return nil, err
	}
	matches := []string{""}
	for _, comp := range splitPath(rel) {
		var next []string
		for _, base := range matches {
			if !strings.ContainsAny(comp, `*?[\`) {
				if _, err := f.rd.stat(joinRepo(base, comp)); err == nil {
					next = append(next, joinRepo(base, comp))
				}
				continue
			}
			ents, _, err := f.rd.list(base)
			if err != nil {
				continue
			}
			for _, e := range ents {
				if ok, _ := path.Match(comp, e.name); ok {
					next = append(next, joinRepo(base, e.name))
				}
			}
		}
		matches = next
	}
	out := make([]string, 0, len(matches))
	for _, m := range matches {
		out = append(out, abs(m))
	}
	if !filesys.IsHiddenFilePath(pattern) {
		out = filesys.RemoveHiddenFiles(out)
	}
	return out, nil
}

// ReadFile returns the content of the file at p. A kustomization file is
// checked for remote references first, unless remote bases are on.
func (f *kustomizeFS) ReadFile(p string) ([]byte, error) {
	if f.onDisk(p) {
		return f.disk.ReadFile(p)
	}
	rel, err := f.repoPath(p)
	if err != nil {
		return nil, err
	}
	data, n, err := f.rd.readFile(rel)
	if err != nil {
		return nil, f.resolveErr(err)
	}
	if o, ok := f.overrides[n.path]; ok {
		data = o
	}
	if isKustomizationFile(n.path) {
		if err := f.checkRemote(n.path, data); err != nil {
			return nil, err
		}
	}
	return data, nil
}

// Walk walks the tree at p in lexical order, not following symbolic links,
// as filepath.Walk does.
func (f *kustomizeFS) Walk(p string, fn filepath.WalkFunc) error {
	if f.onDisk(p) {
		return f.disk.Walk(p, fn)
	}
	rel, err := f.repoPath(p)
	if err != nil {
		return fn(p, nil, err)
	}
	n, err := f.rd.stat(rel)
	if err != nil {
		return fn(p, nil, f.resolveErr(err))
	}
	err = f.walk(p, n, fn)
	if errors.Is(err, filepath.SkipDir) || errors.Is(err, filepath.SkipAll) {
		return nil
	}
	return err
}

func (f *kustomizeFS) walk(p string, n node, fn filepath.WalkFunc) error {
	if !n.isDir() {
		return fn(p, memInfo{name: path.Base(p), size: 0}, nil)
	}
	if err := fn(p, memInfo{name: path.Base(p), dir: true}, nil); err != nil {
		return err
	}
	ents, _, err := f.rd.list(n.path)
	if err != nil {
		return fn(p, nil, err)
	}
	for _, e := range ents {
		cp := filepath.Join(p, e.name)
		cn := node{path: joinRepo(n.path, e.name), mode: e.mode, hash: e.hash}
		if e.mode.IsFile() || !cn.isDir() {
			info := memInfo{name: e.name}
			info.link = e.mode == filemode.Symlink
			if err := fn(cp, info, nil); err != nil {
				if errors.Is(err, filepath.SkipDir) {
					continue
				}
				return err
			}
			continue
		}
		if err := f.walk(cp, cn, fn); err != nil {
			if errors.Is(err, filepath.SkipDir) {
				continue
			}
			return err
		}
	}
	return nil
}

func isKustomizationFile(p string) bool {
	base := path.Base(p)
	for _, n := range konfig.RecognizedKustomizationFileNames() {
		if base == n {
			return true
		}
	}
	return false
}

// checkRemote refuses a kustomization that refers to anything remote:
// kustomize would clone a git URL with the git CLI, or fetch an http(s)
// URL, from inside the render.
func (f *kustomizeFS) checkRemote(file string, data []byte) error {
	var k types.Kustomization
	if err := k.Unmarshal(data); err != nil {
		// Not ours to report: kustomize reads it next and says what is wrong.
		return nil
	}
	var refs []struct{ field, value string }
	add := func(field string, vs ...string) {
		for _, v := range vs {
			refs = append(refs, struct{ field, value string }{field, v})
		}
	}
	add("resources", k.Resources...)
	add("bases", k.Bases...) //nolint:staticcheck // deprecated, still read by kustomize
	add("components", k.Components...)
	add("crds", k.Crds...)
	add("configurations", k.Configurations...)
	add("generators", k.Generators...)
	add("transformers", k.Transformers...)
	add("validators", k.Validators...)
	for _, p := range k.Patches {
		add("patches", p.Path)
	}
	for _, p := range k.PatchesJson6902 { //nolint:staticcheck // deprecated, still read by kustomize
		add("patchesJson6902", p.Path)
	}
	for _, p := range k.PatchesStrategicMerge { //nolint:staticcheck // deprecated, still read by kustomize
		// An inline patch spans lines; only a one-line entry is a path.
		if !strings.Contains(string(p), "\n") {
			add("patchesStrategicMerge", string(p))
		}
	}
	for _, r := range k.Replacements {
		add("replacements", r.Path)
	}
	gens := append(append([]types.GeneratorArgs{}, mapGenerators(k.ConfigMapGenerator)...), secretGenerators(k.SecretGenerator)...)
	for _, g := range gens {
		for _, s := range g.FileSources {
			_, v, ok := strings.Cut(s, "=")
			if !ok {
				v = s
			}
			add("files", v)
		}
		add("envs", g.EnvSources...)
		add("env", g.EnvSource) //nolint:staticcheck // deprecated, still read by kustomize
	}
	if p, ok := k.OpenAPI["path"]; ok {
		add("openapi.path", p)
	}
	for _, r := range refs {
		if !isRemoteRef(r.value) {
			continue
		}
		if f.allowRemote {
			f.rd.in.mu.Lock()
			f.rd.in.uncacheable = true
			f.rd.in.mu.Unlock()
			continue
		}
		err := &SourceError{Err: fmt.Errorf("%s: %s entry %q is remote: %w; keep it in git, or turn remote bases on", file, r.field, redactURL(r.value), ErrRemoteBase)}
		f.mu.Lock()
		if f.remote == nil {
			f.remote = err
		}
		f.mu.Unlock()
		return err
	}
	return nil
}

func mapGenerators(in []types.ConfigMapArgs) []types.GeneratorArgs {
	out := make([]types.GeneratorArgs, len(in))
	for i, g := range in {
		out[i] = g.GeneratorArgs
	}
	return out
}

func secretGenerators(in []types.SecretArgs) []types.GeneratorArgs {
	out := make([]types.GeneratorArgs, len(in))
	for i, g := range in {
		out[i] = g.GeneratorArgs
	}
	return out
}

// isRemoteRef reports whether a kustomization entry names something
// kustomize would fetch: a URL of any scheme, a git:: or scp-like git
// address, or one of the hosts kustomize knows without a scheme.
func isRemoteRef(v string) bool {
	v = strings.TrimSpace(v)
	lower := strings.ToLower(v)
	if v == "" {
		return false
	}
	if strings.Contains(lower, "://") || strings.HasPrefix(lower, "git::") {
		return true
	}
	for _, host := range []string{"github.com/", "github.com:", "gitlab.com/", "bitbucket.org/"} {
		if strings.HasPrefix(lower, host) {
			return true
		}
	}
	if at := strings.Index(v, "@"); at > 0 && !strings.Contains(v[:at], "/") {
		if c := strings.Index(v[at:], ":"); c > 0 {
			return true
		}
	}
	return false
}

// memFile is a file read into memory.
type memFile struct {
	*bytes.Reader
	info memInfo
}

func (m *memFile) Write([]byte) (int, error)  { return 0, errReadOnly }
func (m *memFile) Close() error               { return nil }
func (m *memFile) Stat() (os.FileInfo, error) { return m.info, nil }

var _ io.ReadWriteCloser = (*memFile)(nil)

type memInfo struct {
	name string
	size int64
	dir  bool
	link bool
}

func (i memInfo) Name() string { return i.name }
func (i memInfo) Size() int64  { return i.size }
func (i memInfo) Mode() fs.FileMode {
	switch {
	case i.dir:
		return fs.ModeDir | 0o755
	case i.link:
		return fs.ModeSymlink | 0o777
	}
	return 0o644
}
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return i.dir }
func (i memInfo) Sys() any           { return nil }
