package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Commit is one commit of a push with the files it touched.
type Commit struct {
	ID       string
	Message  string
	Added    []string
	Modified []string
	Removed  []string
}

// Push describes a push to one repository.
type Push struct {
	CloneURL      string
	FullName      string // owner/name
	DefaultBranch string
	Ref           string // refs/heads/main
	Before, After string
	Commits       []Commit
	Created       bool
	Deleted       bool
	Forced        bool
}

// Payload renders p as the JSON body GitHub sends with X-GitHub-Event: push.
func (p Push) Payload() []byte {
	commits := make([]map[string]any, 0, len(p.Commits))
	for _, c := range p.Commits {
		commits = append(commits, commitJSON(p, c))
	}
	var head any
	if len(p.Commits) > 0 {
		head = commitJSON(p, p.Commits[len(p.Commits)-1])
	}
	owner, name, _ := strings.Cut(p.FullName, "/")
	now := time.Now().Unix()
	body := map[string]any{
		"ref":         p.Ref,
		"before":      p.Before,
		"after":       p.After,
		"created":     p.Created,
		"deleted":     p.Deleted,
		"forced":      p.Forced,
		"base_ref":    nil,
		"compare":     fmt.Sprintf("https://github.com/%s/compare/%.12s...%.12s", p.FullName, p.Before, p.After),
		"commits":     commits,
		"head_commit": head,
		"repository": map[string]any{
			"id":             1296269,
			"node_id":        "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
			"name":           name,
			"full_name":      p.FullName,
			"private":        false,
			"owner":          map[string]any{"login": owner, "name": owner, "id": 1, "type": "User"},
			"html_url":       "https://github.com/" + p.FullName,
			"clone_url":      p.CloneURL,
			"git_url":        "git://github.com/" + p.FullName + ".git",
			"ssh_url":        "git@github.com:" + p.FullName + ".git",
			"default_branch": p.DefaultBranch,
			"master_branch":  p.DefaultBranch,
			"created_at":     now - 86400,
			"pushed_at":      now,
		},
		"pusher": map[string]any{"name": "ci-bot", "email": "ci@example.com"},
		"sender": map[string]any{"login": "ci-bot", "id": 2, "type": "Bot"},
	}
	b, _ := json.Marshal(body)
	return b
}

func commitJSON(p Push, c Commit) map[string]any {
	nz := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	return map[string]any{
		"id":        c.ID,
		"tree_id":   c.ID,
		"distinct":  true,
		"message":   c.Message,
		"timestamp": time.Now().Format(time.RFC3339),
		"url":       "https://github.com/" + p.FullName + "/commit/" + c.ID,
		"author":    map[string]any{"name": "CI", "email": "ci@example.com", "username": "ci-bot"},
		"committer": map[string]any{"name": "CI", "email": "ci@example.com", "username": "ci-bot"},
		"added":     nz(c.Added),
		"removed":   nz(c.Removed),
		"modified":  nz(c.Modified),
	}
}

// Sign returns the X-Hub-Signature-256 value of body under secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Response is what the receiver answered.
type Response struct {
	Status int
	Body   string
}

// Send POSTs body to url as a GitHub delivery of event, signed with secret
// (unsigned when secret is nil).
func Send(ctx context.Context, url, event, delivery string, secret, body []byte) (Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return Response{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/ferry-test")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", delivery)
	req.Header.Set("X-GitHub-Hook-ID", "1")
	if secret != nil {
		req.Header.Set("X-Hub-Signature-256", Sign(secret, body))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return Response{Status: resp.StatusCode, Body: string(b)}, nil
}
