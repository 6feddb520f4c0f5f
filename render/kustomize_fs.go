package render

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing/filemode"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/konfig"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
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
	// hosts limits the hosts of remote references when remote bases are on.
	hosts     hostPolicy
	tmpPrefix string
	disk      filesys.FileSystem

	mu     sync.Mutex
	escape error // the first attempt to leave the repository, or a KSOPS generator it cannot serve
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
// build failed because it tried to leave the repository or to go remote,
// or met a KSOPS generator ferry cannot serve.
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
	f.noteFailure(err)
	return "", err
}

// noteFailure keeps the first error to report instead of kustomize's own.
func (f *kustomizeFS) noteFailure(err error) {
	f.mu.Lock()
	if f.escape == nil {
		f.escape = err
	}
	f.mu.Unlock()
}

// resolveErr keeps an escape through a symbolic link as the build's error.
func (f *kustomizeFS) resolveErr(err error) error {
	if errors.Is(err, ErrOutsideRepository) {
		f.noteFailure(err)
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

// ReadFile returns the content of the file at p. A kustomization file, and
// a file that may configure a generator or transformer, is checked for
// remote references first (see checkContent).
func (f *kustomizeFS) ReadFile(p string) ([]byte, error) {
	if f.onDisk(p) {
		data, err := f.disk.ReadFile(p)
		if err == nil && len(f.hosts) > 0 {
			// A remote base may itself name remotes; their hosts are
			// checked as the repository's own are.
			if err := f.checkContent(p, data); err != nil {
				return nil, err
			}
		}
		return data, err
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
	if err := f.checkContent(n.path, data); err != nil {
		return nil, err
	}
	if isKustomizationFile(n.path) {
		out, err := rewriteKustomization(f.rd, n.path, data)
		if err != nil {
			// kustomize would only say it found no kustomization.
			f.noteFailure(err)
		}
		return out, err
	}
	return markSOPSFile(n.path, data), nil
}

// checkContent checks a file kustomize reads for remote references: a
// kustomization, or any file holding a generator or transformer
// configuration, since any file may be one (one that generators: or
// transformers: names, or a resource of a kustomization that generators:
// names as a directory).
func (f *kustomizeFS) checkContent(name string, data []byte) error {
	switch {
	case isKustomizationFile(name):
		return f.checkRemote(name, data)
	case mayHoldPluginConfig(data):
		return f.checkPluginConfigs(name, data)
	}
	return nil
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
	// An entry of generators:, transformers: or validators: is a path, or
	// a configuration written inline.
	var inline []struct{ field, value string }
	for _, l := range []struct {
		field   string
		entries []string
	}{{"generators", k.Generators}, {"transformers", k.Transformers}, {"validators", k.Validators}} {
		for _, e := range l.entries {
			if isInlineConfig(e) {
				inline = append(inline, struct{ field, value string }{l.field, e})
				continue
			}
			add(l.field, e)
		}
	}
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
			// kustomize splits key=path at the one "="; check the whole
			// entry as well, whatever it makes of it.
			add("files", s)
			if _, v, ok := strings.Cut(s, "="); ok {
				add("files", v)
			}
		}
		add("envs", g.EnvSources...)
		add("env", g.EnvSource) //nolint:staticcheck // deprecated, still read by kustomize
	}
	if p, ok := k.OpenAPI["path"]; ok {
		add("openapi.path", p)
	}
	for _, r := range refs {
		if err := f.remoteRef(file, r.field, r.value); err != nil {
			return err
		}
	}
	for _, r := range inline {
		if err := f.checkPluginConfigs(file+" ("+r.field+", inline)", []byte(r.value)); err != nil {
			return err
		}
	}
	return nil
}

// remoteRef refuses value, an entry of field in file, if it is remote and
// remote bases are off, or if its host is not allowed. With remote bases
// on, a remote entry makes the render uncacheable: what it names can
// change without a commit.
func (f *kustomizeFS) remoteRef(file, field, value string) error {
	if !isRemoteRef(value) {
		return nil
	}
	var err error
	switch {
	case !f.allowRemote:
		err = &SourceError{Err: fmt.Errorf("%s: %s entry %q is remote: %w; keep it in git, or turn remote bases on", file, field, redactURL(value), ErrRemoteBase)}
	case len(f.hosts) > 0:
		target := strings.TrimSpace(value)
		if len(target) >= 5 && strings.EqualFold(target[:5], "git::") {
			target = target[5:]
		}
		if herr := f.hosts.check(file+": "+field+" entry", target); herr != nil {
			err = herr
		}
	}
	if err == nil {
		f.rd.in.mu.Lock()
		f.rd.in.uncacheable = true
		f.rd.in.mu.Unlock()
		return nil
	}
	f.mu.Lock()
	if f.remote == nil {
		f.remote = err
	}
	f.mu.Unlock()
	return err
}

// pluginConfigFields names, for each builtin generator and transformer,
// the fields of its configuration that kustomize loads as files, and so
// fetches when they hold an http(s) URL.
var pluginConfigFields = map[string][]string{
	"ConfigMapGenerator":             {"files", "envs", "env"},
	"SecretGenerator":                {"files", "envs", "env"},
	"HelmChartInflationGenerator":    {"valuesFile", "additionalValuesFiles"},
	"PatchTransformer":               {"path"},
	"PatchJson6902Transformer":       {"path"},
	"PatchStrategicMergeTransformer": {"paths"},
	"ReplacementTransformer":         {"replacements.path"},
	"ValueAddTransformer":            {"targetFilePath"},
}

// mayHoldPluginConfig is a cheap test for a file that may configure a
// builtin generator or transformer to fetch a URL: every such kind is a
// Generator or a Transformer, and every fetch is http(s).
func mayHoldPluginConfig(data []byte) bool {
	if !bytes.Contains(data, []byte("Generator")) && !bytes.Contains(data, []byte("Transformer")) {
		return false
	}
	return bytes.Contains(bytes.ToLower(data), []byte("http"))
}

// isInlineConfig reports whether an entry of generators:, transformers: or
// validators: is a configuration written in place rather than a path, as
// kustomize decides: it parses as YAML objects.
func isInlineConfig(entry string) bool {
	if strings.Contains(entry, "\n") {
		return true
	}
	var m map[string]any
	return yaml.Unmarshal([]byte(entry), &m) == nil && len(m) > 0
}

// checkPluginConfigs refuses a file (or an inline configuration) holding a
// builtin generator or transformer configuration whose file fields name
// something remote: kustomize would fetch an http(s) URL there itself,
// with no file system in between. Documents of other kinds, and files that
// are not YAML, are left to kustomize.
func (f *kustomizeFS) checkPluginConfigs(file string, data []byte) error {
	docs := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := docs.Read()
		if err != nil {
			return nil
		}
		var m map[string]any
		if yaml.Unmarshal(doc, &m) != nil {
			continue
		}
		if err := f.checkPluginConfig(file, m, 0); err != nil {
			return err
		}
	}
}

func (f *kustomizeFS) checkPluginConfig(file string, m map[string]any, depth int) error {
	kind, _ := m["kind"].(string)
	// kustomize reads the items of a List as resources of their own.
	if strings.HasSuffix(kind, "List") && depth < 4 {
		for _, it := range fieldValues(m, "items") {
			if im, ok := it.(map[string]any); ok {
				if err := f.checkPluginConfig(file, im, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	fields, ok := pluginConfigFields[kind]
	if !ok {
		return nil
	}
	for _, field := range fields {
		for _, v := range pluginFieldStrings(m, field) {
			if err := f.remoteRef(file, kind+" "+field, v); err != nil {
				return err
			}
			// files: key=path
			if _, p, ok := strings.Cut(v, "="); ok {
				if err := f.remoteRef(file, kind+" "+field, p); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// fieldValues returns the values of key in m, matching it without regard
// to case as kustomize's JSON decoding does, a list flattened.
func fieldValues(m map[string]any, key string) []any {
	var out []any
	for k, v := range m {
		if !strings.EqualFold(k, key) {
			continue
		}
		if l, ok := v.([]any); ok {
			out = append(out, l...)
		} else {
			out = append(out, v)
		}
	}
	return out
}

// pluginFieldStrings returns the strings at a dotted field path of m
// ("replacements.path": the path of every replacement).
func pluginFieldStrings(m map[string]any, field string) []string {
	head, rest, nested := strings.Cut(field, ".")
	var out []string
	for _, v := range fieldValues(m, head) {
		if nested {
			if sub, ok := v.(map[string]any); ok {
				out = append(out, pluginFieldStrings(sub, rest)...)
			}
			continue
		}
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
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
	// kustomize fetches whatever url.Parse gives an http(s) scheme.
	if u, err := url.Parse(v); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
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
