package render

import (
	"fmt"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// TestConcurrentRenders renders several commits of one repository at once,
// with every renderer, through one git cache: each render must see its own
// commit and nothing of the others'. Run it with -race.
func TestConcurrentRenders(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.NewRepo(t, "busy")
	var shas []string
	for i := range 4 {
		repo.WriteFile(t, "plain/cm.yaml", cmYAML(fmt.Sprintf("plain-%d", i)))
		repo.WriteFile(t, "kust/kustomization.yaml", "resources:\n  - cm.yaml\n")
		repo.WriteFile(t, "kust/cm.yaml", cmYAML(fmt.Sprintf("kust-%d", i)))
		repo.WriteFile(t, "chart/Chart.yaml", "apiVersion: v2\nname: c\nversion: 0.1.0\n")
		repo.WriteFile(t, "chart/templates/cm.yaml", cmYAML(fmt.Sprintf("helm-%d", i)))
		shas = append(shas, repo.Commit(t, fmt.Sprint(i)))
	}
	r := newRenderer(t, Options{})
	paths := []string{"plain", "kust", "chart"}
	prefixes := []string{"plain", "kust", "helm"}
	var g errgroup.Group
	g.SetLimit(8)
	for round := range 3 {
		for i, sha := range shas {
			for k, p := range paths {
				g.Go(func() error {
					a := app(fmt.Sprintf("%s-%d", p, round), "default", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: p})
					b, rev, err := r.Render(t.Context(), request(a, sha))
					if err != nil {
						return err
					}
					want := fmt.Sprintf("ConfigMap/%s-%d", prefixes[k], i)
					if got := objectNames(objects(t, b)); len(got) != 1 || got[0] != want || rev != sha {
						return fmt.Errorf("%s at %s: got %v at %s; want %s", p, sha[:8], got, rev, want)
					}
					return nil
				})
			}
		}
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}
