package render_test

import (
	"testing"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/render"
)

func TestIsAncestor(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.NewRepo(t, "ancestry")
	repo.WriteFile(t, "a.yaml", "a: 1\n")
	first := repo.Commit(t, "first")
	repo.WriteFile(t, "a.yaml", "a: 2\n")
	second := repo.Commit(t, "second")
	cache, err := render.NewGitCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name         string
		older, newer string
		want         bool
	}{
		{"an earlier commit is an ancestor of a later one", first, second, true},
		{"a later commit is not an ancestor of an earlier one", second, first, false},
		{"a commit is not its own strict ancestor", second, second, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := cache.IsAncestor(t.Context(), repo.URL(), c.older, c.newer)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("IsAncestor = %v, want %v", got, c.want)
			}
		})
	}
}
