package render

import (
	"context"
	"fmt"
	"slices"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/memory"
)

// Refs lists the refs of the remote repository (git ls-remote) by full name,
// and the ref its HEAD points at. It reads refs only, no objects.
func (c *GitCache) Refs(ctx context.Context, repoURL string) (map[string]string, string, error) {
	if err := c.checkRemote(repoURL); err != nil {
		return nil, "", err
	}
	creds, err := lookupCredentials(ctx, c.creds, repoURL)
	if err != nil {
		return nil, "", err
	}
	auth, insecure, err := GitAuth(repoURL, creds)
	if err != nil {
		return nil, "", err
	}
	remote := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{repoURL}})
	list, err := remote.ListContext(ctx, &git.ListOptions{Auth: auth, InsecureSkipTLS: insecure})
	if err != nil {
		return nil, "", &SourceError{Err: fmt.Errorf("listing refs of %s: %s", redactURL(repoURL), scrub(redactErr(err, repoURL), creds.secrets())), Transient: true}
	}
	refs := make(map[string]string, len(list))
	var head string
	var headHash plumbing.Hash
	for _, r := range list {
		switch {
		case r.Name() == plumbing.HEAD && r.Type() == plumbing.SymbolicReference:
			head = r.Target().String()
		case r.Name() == plumbing.HEAD:
			headHash = r.Hash()
		case r.Type() == plumbing.HashReference:
			refs[r.Name().String()] = r.Hash().String()
		}
	}
	if head == "" && !headHash.IsZero() {
		// The server did not say which branch HEAD is; pick the branch at
		// the same commit, preferring main and master.
		var names []string
		for name, h := range refs {
			if h == headHash.String() && plumbing.ReferenceName(name).IsBranch() {
				names = append(names, name)
			}
		}
		slices.Sort(names)
		for _, pref := range []string{"refs/heads/main", "refs/heads/master"} {
			if slices.Contains(names, pref) {
				head = pref
			}
		}
		if head == "" && len(names) > 0 {
			head = names[0]
		}
	}
	return refs, head, nil
}

// ChangedFiles returns the files that differ between commits from and to of
// repoURL, both names of a rename included. It fetches when needed.
func (c *GitCache) ChangedFiles(ctx context.Context, repoURL, from, to string) ([]string, error) {
	a, err := c.Resolve(ctx, repoURL, from)
	if err != nil {
		return nil, err
	}
	b, err := c.Resolve(ctx, repoURL, to)
	if err != nil {
		return nil, err
	}
	a.repo.mu.RLock()
	defer a.repo.mu.RUnlock()
	changes, err := object.DiffTreeWithOptions(ctx, a.tree, b.tree, &object.DiffTreeOptions{DetectRenames: true})
	if err != nil {
		return nil, fmt.Errorf("diffing %s..%s: %w", from, to, err)
	}
	seen := map[string]bool{}
	var files []string
	for _, ch := range changes {
		for _, name := range []string{ch.From.Name, ch.To.Name} {
			if name != "" && !seen[name] {
				seen[name] = true
				files = append(files, name)
			}
		}
	}
	slices.Sort(files)
	return files, nil
}

// IsAncestor reports whether commit older is a strict ancestor of commit
// newer in repoURL, fetching when either is missing. Sync uses it so that a
// late push of an older commit never rolls an app back.
func (c *GitCache) IsAncestor(ctx context.Context, repoURL, older, newer string) (bool, error) {
	if older == newer {
		return false, nil
	}
	a, err := c.Resolve(ctx, repoURL, older)
	if err != nil {
		return false, err
	}
	b, err := c.Resolve(ctx, repoURL, newer)
	if err != nil {
		return false, err
	}
	a.repo.mu.RLock()
	defer a.repo.mu.RUnlock()
	oc, err := a.repo.repo.CommitObject(a.Commit)
	if err != nil {
		return false, err
	}
	nc, err := b.repo.repo.CommitObject(b.Commit)
	if err != nil {
		return false, err
	}
	return oc.IsAncestor(nc)
}
