package gitserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

const (
	// Branch is the only branch that repositories have.
	Branch = "main"

	// AuthorName and AuthorEmail are the author and committer of every commit,
	// so that commits differ only by content, message and time.
	AuthorName  = "Ferry Test"
	AuthorEmail = "ferry-test@example.com"
)

// repoNameRE allows slash-separated names that need no escaping in a URL.
var repoNameRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$`)

// Server serves the bare repositories under its root folder over smart HTTP.
type Server struct {
	root    string // bare repositories, as <root>/<name>.git
	scratch string // working clones and HOME; removed by Close
	home    string
	gitPath string
	srv     *httptest.Server

	closeOnce sync.Once
	closeErr  error
}

// NewServer starts a server on 127.0.0.1 for the repositories under root,
// which it creates if needed. Close stops it; root is left to the caller.
func NewServer(root string) (*Server, error) {
	if root == "" {
		return nil, errors.New("gitserver: root folder is empty")
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("gitserver: root folder %s: %w", root, err)
	}
	gitPath, err := exec.LookPath("git")
	if err != nil {
		return nil, fmt.Errorf("gitserver: git CLI not found: %w", err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("gitserver: creating root folder failed: %w", err)
	}
	scratch, err := os.MkdirTemp("", "gitserver-")
	if err != nil {
		return nil, fmt.Errorf("gitserver: creating scratch folder failed: %w", err)
	}
	home := filepath.Join(scratch, "home")
	if err := os.Mkdir(home, 0o755); err != nil {
		_ = os.RemoveAll(scratch)
		return nil, fmt.Errorf("gitserver: creating HOME folder failed: %w", err)
	}
	s := &Server{root: root, scratch: scratch, home: home, gitPath: gitPath}
	s.srv = httptest.NewServer(&cgi.Handler{
		Path: gitPath,
		Args: []string{"http-backend"},
		Dir:  root,
		// cgi.Handler passes only these and the CGI variables, which keeps
		// the server side hermetic too.
		Env: append(s.hermeticEnv(nil),
			"GIT_PROJECT_ROOT="+root,
			"GIT_HTTP_EXPORT_ALL=1",
		),
	})
	return s, nil
}

// New starts a server for the test, with its repositories in t.TempDir, and
// closes it in t.Cleanup.
func New(t testing.TB) *Server {
	t.Helper()
	s, err := NewServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// URL returns the server's base URL, http://127.0.0.1:PORT.
func (s *Server) URL() string {
	return s.srv.URL
}

// Close stops the server and removes the working clones. Calling it again
// returns the first result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.srv.Close()
		if err := os.RemoveAll(s.scratch); err != nil {
			s.closeErr = fmt.Errorf("gitserver: removing %s failed: %w", s.scratch, err)
		}
	})
	return s.closeErr
}

// hermeticEnv is the environment of every git command: the process's own
// without git and proxy settings, and with no system or user configuration.
// With base nil it starts from scratch instead, keeping only PATH.
func (s *Server) hermeticEnv(base []string) []string {
	var env []string
	for _, kv := range base {
		key, _, _ := strings.Cut(kv, "=")
		upper := strings.ToUpper(key)
		if strings.HasPrefix(upper, "GIT_") || strings.HasSuffix(upper, "_PROXY") ||
			upper == "HOME" || upper == "XDG_CONFIG_HOME" {
			continue
		}
		env = append(env, kv)
	}
	if base == nil {
		env = append(env, "PATH="+os.Getenv("PATH"))
	}
	return append(env,
		"HOME="+s.home,
		"XDG_CONFIG_HOME="+filepath.Join(s.home, ".config"),
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_TERMINAL_PROMPT=0",
		"LC_ALL=C",
		"GIT_AUTHOR_NAME="+AuthorName,
		"GIT_AUTHOR_EMAIL="+AuthorEmail,
		"GIT_COMMITTER_NAME="+AuthorName,
		"GIT_COMMITTER_EMAIL="+AuthorEmail,
	)
}

// git runs the git CLI in dir and returns its trimmed standard output.
func (s *Server) git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, s.gitPath, args...)
	cmd.Dir = dir
	cmd.Env = s.hermeticEnv(os.Environ())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		// git reports some failures, such as "nothing to commit", on stdout.
		out := strings.TrimSpace(stderr.String() + "\n" + stdout.String())
		return "", fmt.Errorf("git %s in %s failed: %w: %s", strings.Join(args, " "), dir, err, out)
	}
	return strings.TrimSpace(stdout.String()), nil
}

// Repo is a bare repository on a Server plus a working clone that pushes to it.
type Repo struct {
	s    *Server
	name string
	bare string
	work string

	mu sync.Mutex // serialises git commands in the working clone
}

// CreateRepo creates the bare repository <root>/<name>.git, which accepts
// pushes, and an empty working clone on branch main. name is one or more
// slash-separated segments of letters, digits, '.', '_' and '-'.
func (s *Server) CreateRepo(ctx context.Context, name string) (*Repo, error) {
	if !repoNameRE.MatchString(name) {
		return nil, fmt.Errorf("gitserver: invalid repository name %q", name)
	}
	r := &Repo{
		s:    s,
		name: name,
		bare: filepath.Join(s.root, filepath.FromSlash(name)+".git"),
		work: filepath.Join(s.scratch, "work", filepath.FromSlash(name)),
	}
	if err := os.MkdirAll(filepath.Dir(r.bare), 0o755); err != nil {
		return nil, fmt.Errorf("gitserver: creating repository %s failed: %w", name, err)
	}
	// Mkdir fails if the folder exists, so two creations cannot share it.
	if err := os.Mkdir(r.bare, 0o755); err != nil {
		return nil, fmt.Errorf("gitserver: creating repository %s failed: %w", name, err)
	}
	if err := os.MkdirAll(r.work, 0o755); err != nil {
		return nil, fmt.Errorf("gitserver: creating working clone of %s failed: %w", name, err)
	}
	steps := []struct {
		dir  string
		args []string
	}{
		{r.bare, []string{"init", "--quiet", "--bare", "--initial-branch=" + Branch}},
		{r.bare, []string{"config", "http.receivepack", "true"}},
		{r.work, []string{"init", "--quiet", "--initial-branch=" + Branch}},
		{r.work, []string{"remote", "add", "origin", r.URL()}},
	}
	for _, st := range steps {
		if _, err := s.git(ctx, st.dir, st.args...); err != nil {
			return nil, fmt.Errorf("gitserver: creating repository %s failed: %w", name, err)
		}
	}
	return r, nil
}

// NewRepo creates a repository for the test as CreateRepo does.
func (s *Server) NewRepo(t testing.TB, name string) *Repo {
	t.Helper()
	r, err := s.CreateRepo(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// URL returns the repository's clone URL, http://127.0.0.1:PORT/<name>.git.
func (r *Repo) URL() string {
	return r.s.srv.URL + "/" + r.name + ".git"
}

// localPath maps a slash-separated path inside the repository to the
// working clone, refusing paths that leave it or touch .git.
func (r *Repo) localPath(path string) (string, error) {
	p := filepath.FromSlash(path)
	if !filepath.IsLocal(p) {
		return "", fmt.Errorf("gitserver: path %q is not inside repository %s", path, r.name)
	}
	if first, _, _ := strings.Cut(filepath.ToSlash(filepath.Clean(p)), "/"); first == ".git" {
		return "", fmt.Errorf("gitserver: path %q is inside .git of repository %s", path, r.name)
	}
	return filepath.Join(r.work, p), nil
}

// SetFile writes content to the slash-separated path in the working clone,
// creating folders as needed. The change is pushed by CommitAndPush.
func (r *Repo) SetFile(path, content string) error {
	p, err := r.localPath(path)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("gitserver: writing %s in %s failed: %w", path, r.name, err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		return fmt.Errorf("gitserver: writing %s in %s failed: %w", path, r.name, err)
	}
	return nil
}

// WriteFile writes a file for the test as SetFile does.
func (r *Repo) WriteFile(t testing.TB, path, content string) {
	t.Helper()
	if err := r.SetFile(path, content); err != nil {
		t.Fatal(err)
	}
}

// DeleteFile removes the file or folder at the slash-separated path from the
// working clone; it must exist. The change is pushed by CommitAndPush.
func (r *Repo) DeleteFile(path string) error {
	p, err := r.localPath(path)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := os.Lstat(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("gitserver: removing %s in %s failed: no such file", path, r.name)
		}
		return fmt.Errorf("gitserver: removing %s in %s failed: %w", path, r.name, err)
	}
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("gitserver: removing %s in %s failed: %w", path, r.name, err)
	}
	return nil
}

// Remove removes a file for the test as DeleteFile does.
func (r *Repo) Remove(t testing.TB, path string) {
	t.Helper()
	if err := r.DeleteFile(path); err != nil {
		t.Fatal(err)
	}
}

// CommitAndPush commits every change in the working clone as AuthorName,
// pushes it to main over HTTP and returns the full commit SHA. It fails when
// there is nothing to commit.
func (r *Repo) CommitAndPush(ctx context.Context, message string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	steps := [][]string{
		{"add", "--all"},
		{"commit", "--quiet", "--no-verify", "--message", message},
		{"push", "--quiet", "origin", "HEAD:refs/heads/" + Branch},
	}
	for _, args := range steps {
		if _, err := r.s.git(ctx, r.work, args...); err != nil {
			return "", fmt.Errorf("gitserver: committing to %s failed: %w", r.name, err)
		}
	}
	sha, err := r.s.git(ctx, r.work, "rev-parse", "--verify", "HEAD^{commit}")
	if err != nil {
		return "", fmt.Errorf("gitserver: committing to %s failed: %w", r.name, err)
	}
	return sha, nil
}

// Commit commits and pushes for the test as CommitAndPush does.
func (r *Repo) Commit(t testing.TB, message string) string {
	t.Helper()
	sha, err := r.CommitAndPush(t.Context(), message)
	if err != nil {
		t.Fatal(err)
	}
	return sha
}

// HeadCommit returns the full SHA that main points to in the served bare
// repository. It fails while the repository has no commits.
func (r *Repo) HeadCommit(ctx context.Context) (string, error) {
	sha, err := r.s.git(ctx, r.bare, "rev-parse", "--verify", "refs/heads/"+Branch+"^{commit}")
	if err != nil {
		return "", fmt.Errorf("gitserver: reading head of %s failed: %w", r.name, err)
	}
	return sha, nil
}

// Head returns the head of main for the test as HeadCommit does.
func (r *Repo) Head(t testing.TB) string {
	t.Helper()
	sha, err := r.HeadCommit(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return sha
}
