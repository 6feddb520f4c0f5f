package gitserver_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrycd/ferry/integration/gitserver"
)

// gitCLI runs git as a client that knows nothing of the server's setup.
func gitCLI(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_CONFIG_NOSYSTEM=1",
		"HOME="+t.TempDir(),
		"GIT_TERMINAL_PROMPT=0",
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(stdout.String())
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestServer(t *testing.T) {
	s := gitserver.New(t)
	repo := s.NewRepo(t, "apps")
	if want := s.URL() + "/apps.git"; repo.URL() != want {
		t.Errorf("URL() = %q, want %q", repo.URL(), want)
	}

	repo.WriteFile(t, "README.md", "# apps\n")
	repo.WriteFile(t, "guestbook/deployment.yaml", "kind: Deployment\n")
	first := repo.Commit(t, "add guestbook")

	t.Run("serves pushed commits to a git clone", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "clone")
		gitCLI(t, "", "clone", "--quiet", repo.URL(), dir)
		if got := readFile(t, filepath.Join(dir, "README.md")); got != "# apps\n" {
			t.Errorf("README.md = %q, want %q", got, "# apps\n")
		}
		if got := readFile(t, filepath.Join(dir, "guestbook", "deployment.yaml")); got != "kind: Deployment\n" {
			t.Errorf("guestbook/deployment.yaml = %q, want %q", got, "kind: Deployment\n")
		}
		if got := gitCLI(t, dir, "rev-parse", "HEAD"); got != first {
			t.Errorf("clone HEAD = %s, want %s", got, first)
		}
		if got := gitCLI(t, dir, "rev-parse", "--abbrev-ref", "HEAD"); got != gitserver.Branch {
			t.Errorf("clone branch = %s, want %s", got, gitserver.Branch)
		}
		if got := gitCLI(t, dir, "log", "-1", "--format=%an <%ae>"); got != gitserver.AuthorName+" <"+gitserver.AuthorEmail+">" {
			t.Errorf("author = %q", got)
		}
	})

	t.Run("reports the served head", func(t *testing.T) {
		if len(first) != 40 {
			t.Errorf("Commit returned %q, want a full SHA", first)
		}
		if got := repo.Head(t); got != first {
			t.Errorf("Head() = %s, want %s", got, first)
		}
	})

	t.Run("serves later commits that remove files", func(t *testing.T) {
		repo.Remove(t, "README.md")
		second := repo.Commit(t, "drop readme")
		if second == first {
			t.Fatalf("second commit has the first commit's SHA %s", first)
		}
		if got := repo.Head(t); got != second {
			t.Errorf("Head() = %s, want %s", got, second)
		}
		dir := filepath.Join(t.TempDir(), "clone")
		gitCLI(t, "", "clone", "--quiet", repo.URL(), dir)
		if got := gitCLI(t, dir, "rev-parse", "HEAD"); got != second {
			t.Errorf("clone HEAD = %s, want %s", got, second)
		}
		if _, err := os.Stat(filepath.Join(dir, "README.md")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("README.md still in the clone: %v", err)
		}
	})

	t.Run("refuses paths outside the repository", func(t *testing.T) {
		for _, p := range []string{"../escape", "/abs", ".git/config"} {
			if err := repo.SetFile(p, "x"); err == nil {
				t.Errorf("SetFile(%q) succeeded, want an error", p)
			}
		}
	})

	t.Run("refuses a commit with no changes", func(t *testing.T) {
		if _, err := repo.CommitAndPush(t.Context(), "nothing"); err == nil {
			t.Error("CommitAndPush with no changes succeeded, want an error")
		}
	})

	t.Run("refuses a second repository of the same name", func(t *testing.T) {
		if _, err := s.CreateRepo(t.Context(), "apps"); err == nil {
			t.Error("CreateRepo(apps) twice succeeded, want an error")
		}
	})
}
