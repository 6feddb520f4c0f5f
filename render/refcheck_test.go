package render

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ferrycd/ferry/integration/gitserver"
)

// countingProxy fronts a git server and counts the fetches that reach it:
// each starts with the ref advertisement, fetched or up to date.
func countingProxy(t *testing.T, srv *gitserver.Server) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	target, err := url.Parse(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var fetches atomic.Int64
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/info/refs") {
			fetches.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	return front, &fetches
}

func TestCheckRef(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.NewRepo(t, "refs")
	repo.WriteFile(t, "a.yaml", "a: 1\n")
	first := repo.Commit(t, "first")
	repo.WriteFile(t, "a.yaml", "a: 2\n")
	tip := repo.Commit(t, "second")

	w := cloneRepo(t, repo.URL())
	w.git(t, w.dir, "checkout", "--quiet", "-b", "feature", first)
	w.write(t, "b.yaml", "b: feature\n")
	w.git(t, w.dir, "add", "--all")
	w.git(t, w.dir, "commit", "--quiet", "--no-verify", "-m", "on a branch")
	feature := w.git(t, w.dir, "rev-parse", "HEAD")
	w.git(t, w.dir, "tag", "--annotate", "-m", "release", "v1", first)
	w.git(t, w.dir, "push", "--quiet", "origin", "feature", "refs/tags/v1")

	front, fetches := countingProxy(t, srv)
	repoURL := front.URL + "/refs.git"
	cache, err := NewGitCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// The render fetches the pushed commit; the check that follows finds
	// everything it needs in the cache.
	if _, err := cache.Resolve(t.Context(), repoURL, "main"); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name     string
		ref, rev string
		refused  bool
	}{
		{"the tip of the tracked branch is accepted", "main", tip, false},
		{"an ancestor of the tip is accepted", "main", first, false},
		{"refs/heads/ spells the same branch", "refs/heads/main", first, false},
		{"HEAD means the default branch", "HEAD", tip, false},
		{"an empty targetRevision means the default branch", "", first, false},
		{"a commit on another branch is refused", "main", feature, true},
		{"a commit on another branch is refused under HEAD", "HEAD", feature, true},
		{"that branch's own app accepts it", "feature", feature, false},
		{"a commit the repository does not hold is refused", "main", strings.Repeat("ab", 20), true},
		{"a name instead of a commit is refused", "main", "main", true},
		{"a tag accepts its commit", "v1", first, false},
		{"a tag refuses a later commit of its branch", "v1", tip, true},
		{"a pinned commit accepts itself", first, first, false},
		{"an abbreviated pinned commit accepts itself", first[:10], first, false},
		{"a pinned commit refuses its descendant", first, tip, true},
		{"a targetRevision that names nothing refuses", "no-such-branch", tip, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := cache.CheckRef(t.Context(), repoURL, c.ref, c.rev)
			switch {
			case c.refused && !errors.Is(err, ErrNotOnRef):
				t.Fatalf("CheckRef(%q, %.12s) = %v, want ErrNotOnRef", c.ref, c.rev, err)
			case !c.refused && err != nil:
				t.Fatalf("CheckRef(%q, %.12s) = %v, want nil", c.ref, c.rev, err)
			}
		})
	}

	t.Run("a commit on the tracked branch costs no fetch once the render fetched it", func(t *testing.T) {
		before := fetches.Load()
		for _, rev := range []string{tip, first} {
			if err := cache.CheckRef(t.Context(), repoURL, "main", rev); err != nil {
				t.Fatal(err)
			}
		}
		if n := fetches.Load() - before; n != 0 {
			t.Errorf("checking two commits on main fetched %d times, want 0", n)
		}
	})
	t.Run("a refused commit costs one fetch, to learn whether the branch moved", func(t *testing.T) {
		before := fetches.Load()
		if err := cache.CheckRef(t.Context(), repoURL, "main", feature); !errors.Is(err, ErrNotOnRef) {
			t.Fatalf("got %v, want ErrNotOnRef", err)
		}
		if n := fetches.Load() - before; n != 1 {
			t.Errorf("refusing a commit fetched %d times, want 1", n)
		}
	})
	t.Run("a commit merged into the branch after the last fetch is accepted", func(t *testing.T) {
		w.git(t, w.dir, "checkout", "--quiet", gitserver.Branch)
		w.git(t, w.dir, "pull", "--quiet", "--ff-only", "origin", gitserver.Branch)
		w.git(t, w.dir, "merge", "--quiet", "--no-edit", "feature")
		w.git(t, w.dir, "push", "--quiet", "origin", "HEAD:refs/heads/"+gitserver.Branch)
		if err := cache.CheckRef(t.Context(), repoURL, "main", feature); err != nil {
			t.Fatalf("got %v, want the merged commit accepted", err)
		}
	})
	t.Run("an unreachable remote is not a refusal", func(t *testing.T) {
		other, err := NewGitCache(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		err = other.CheckRef(t.Context(), "http://127.0.0.1:1/nothing.git", "main", tip)
		if err == nil || errors.Is(err, ErrNotOnRef) {
			t.Fatalf("got %v, want a fetch error that is not ErrNotOnRef", err)
		}
		if !IsTransient(err) {
			t.Errorf("fetch error %v is not transient", err)
		}
	})
}

// BenchmarkCheckRef times the ref check once the render's fetch has brought
// the commit in: the tip (a push, a poll) and a commit 50 behind it (a late
// delivery). Neither touches the network.
func BenchmarkCheckRef(b *testing.B) {
	srv := gitserver.New(b)
	repo := srv.NewRepo(b, "bench")
	var commits []string
	for i := range 51 {
		repo.WriteFile(b, "a.yaml", fmt.Sprintf("a: %d\n", i))
		commits = append(commits, repo.Commit(b, fmt.Sprint(i)))
	}
	cache, err := NewGitCache(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := cache.Resolve(b.Context(), repo.URL(), "main"); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct{ name, rev string }{{"tip", commits[50]}, {"50 behind", commits[0]}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if err := cache.CheckRef(b.Context(), repo.URL(), "main", c.rev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
