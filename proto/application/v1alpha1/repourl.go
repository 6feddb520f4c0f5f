package v1alpha1

import (
	"net/url"
	"strings"
)

// NormalizeRepoURL reduces a git URL to host/path form so that the https,
// ssh and scp-like spellings of one repository compare equal:
//
//	https://GitHub.com/Org/Repo.git      -> github.com/org/repo
//	git@github.com:org/repo               -> github.com/org/repo
//	ssh://git@github.com:22/org/repo.git -> github.com/org/repo
//
// Host and path are lower-cased because GitHub, GitLab and Gitea treat owner
// and repository names case-insensitively. Default ports are dropped, other
// ports kept.
func NormalizeRepoURL(raw string) string {
	s := strings.TrimSpace(raw)
	if s == "" {
		return ""
	}
	var host, path string
	if i := strings.Index(s, "://"); i >= 0 {
		u, err := url.Parse(s)
		if err != nil {
			return strings.ToLower(strings.TrimSuffix(strings.TrimSuffix(dropUserInfo(s, i), "/"), ".git"))
		}
		host = u.Hostname()
		if p := u.Port(); p != "" && !defaultPort(u.Scheme, p) {
			host += ":" + p
		}
		path = u.Path
	} else if at := strings.Index(s, "@"); at >= 0 && strings.Contains(s[at:], ":") {
		// scp-like: user@host:owner/repo
		rest := s[at+1:]
		c := strings.Index(rest, ":")
		host, path = rest[:c], rest[c+1:]
	} else if c := strings.Index(s, ":"); c >= 0 && !strings.Contains(s[:c], "/") {
		host, path = s[:c], s[c+1:]
	} else {
		host, path = "", s
	}
	path = strings.Trim(path, "/")
	path = strings.TrimSuffix(path, ".git")
	path = strings.TrimSuffix(path, "/")
	if host == "" {
		return strings.ToLower(path)
	}
	return strings.ToLower(host + "/" + path)
}

func defaultPort(scheme, port string) bool {
	switch scheme {
	case "https":
		return port == "443"
	case "http":
		return port == "80"
	case "ssh", "git+ssh":
		return port == "22"
	case "git":
		return port == "9418"
	}
	return false
}

// dropUserInfo removes what a URL that url.Parse refused holds before its
// host's "@", so that a password in it never reaches a normalised key.
// The scheme's "://" is at i.
func dropUserInfo(s string, i int) string {
	rest := s[i+3:]
	auth := rest
	if j := strings.IndexAny(rest, "/?#"); j >= 0 {
		auth = rest[:j]
	}
	at := strings.LastIndex(auth, "@")
	if at < 0 {
		return s
	}
	return s[:i+3] + rest[at+1:]
}

// RedactRepoURL returns a repository URL without the credentials it
// carries, for logs, errors, traces and status. It drops the user
// information of a URL with a scheme; of a URL url.Parse refuses and of a
// registry given without a scheme, everything before the host's "@". The
// user of an scp-like git address (git@host:org/repo) is the SSH user, not
// a secret, and is kept unless it holds a password.
func RedactRepoURL(raw string) string {
	i := strings.Index(raw, "://")
	if u, err := url.Parse(raw); err == nil && u.Scheme != "" && i >= 0 {
		if u.User == nil {
			return raw
		}
		u.User = nil
		return u.String()
	}
	start := 0
	if i >= 0 {
		start = i + 3
	}
	auth := raw[start:]
	if j := strings.IndexAny(auth, "/?#"); j >= 0 {
		auth = auth[:j]
	}
	at := strings.LastIndex(auth, "@")
	if at < 0 {
		return raw
	}
	info := auth[:at]
	if i < 0 && !strings.Contains(info, ":") && strings.Contains(auth[at:], ":") {
		// scp-like user@host:path
		return raw
	}
	return raw[:start] + raw[start+at+1:]
}
