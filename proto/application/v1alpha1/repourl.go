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
			return strings.ToLower(strings.TrimSuffix(strings.TrimSuffix(s, "/"), ".git"))
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
