package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-github/v62/github"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// GitHubCompare lists changed files with GitHub's Compare API.
type GitHubCompare struct {
	client *github.Client
	host   string // the git host whose repositories this API serves
}

var _ Comparer = (*GitHubCompare)(nil)

// NewGitHubCompare returns a comparer for the GitHub API at apiURL (empty
// for api.github.com), authenticated with token when set. gitHost is the
// host of clone URLs it serves: github.com for the public API.
func NewGitHubCompare(apiURL, token, gitHost string, hc *http.Client) (*GitHubCompare, error) {
	c := github.NewClient(hc)
	if token != "" {
		c = c.WithAuthToken(token)
	}
	if apiURL != "" {
		// The URL is the API root as given: https://api.github.com/ or, for
		// GitHub Enterprise, https://ghe.example.com/api/v3/.
		u, err := url.Parse(apiURL)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("GitHub API URL %q is not an absolute URL", apiURL)
		}
		if !strings.HasSuffix(u.Path, "/") {
			u.Path += "/"
		}
		c.BaseURL = u
	}
	if gitHost == "" {
		gitHost = "github.com"
	}
	return &GitHubCompare{client: c, host: strings.ToLower(gitHost)}, nil
}

// ErrNotGitHub is returned for repositories another host serves.
var ErrNotGitHub = errors.New("not a repository of the configured GitHub host")

// maxCompareFiles is the most files GitHub's Compare API lists; a compare
// reaching it may be incomplete.
const maxCompareFiles = 300

// ChangedFiles returns the files changed between base and head, with both
// names of a renamed file.
func (g *GitHubCompare) ChangedFiles(ctx context.Context, repoURL, base, head string) ([]string, error) {
	norm := v1alpha1.NormalizeRepoURL(repoURL)
	rest, ok := strings.CutPrefix(norm, g.host+"/")
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 2 {
		return nil, fmt.Errorf("%s: %w", repoURL, ErrNotGitHub)
	}
	cmp, _, err := g.client.Repositories.CompareCommits(ctx, parts[0], parts[1], base, head, &github.ListOptions{PerPage: 100})
	if err != nil {
		return nil, fmt.Errorf("comparing %.12s...%.12s in %s: %w", base, head, norm, err)
	}
	if len(cmp.Files) >= maxCompareFiles {
		return nil, fmt.Errorf("compare of %s lists %d files, GitHub's cap; the list may be incomplete", norm, len(cmp.Files))
	}
	var files []string
	for _, f := range cmp.Files {
		files = append(files, f.GetFilename())
		if p := f.GetPreviousFilename(); p != "" {
			files = append(files, p)
		}
	}
	return files, nil
}
