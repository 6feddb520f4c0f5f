package render

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// ErrCredentialsInURL is wrapped when a repository URL carries a user name
// and password or a token.
var ErrCredentialsInURL = errors.New("credentials belong in a repository Secret, not in the URL")

// ErrHostNotAllowed is wrapped when a git or chart host is not among the
// allowed hosts (Options.AllowedHosts, WithAllowedHosts).
var ErrHostNotAllowed = errors.New("host not allowed")

// ErrPlainHTTPCredentials is wrapped when credentials would go over plain
// http:// and their repository Secret does not say insecure.
var ErrPlainHTTPCredentials = errors.New("credentials are not sent over plain http")

// userInfo returns what a repository URL carries before its host's "@",
// and its scheme, lower-cased (empty when it has none). An scp-like git
// address (git@host:org/repo) carries a user name there, not a secret.
func userInfo(raw string) (info string, scheme string) {
	s := strings.TrimSpace(raw)
	rest := s
	if i := strings.Index(s, "://"); i >= 0 {
		scheme, rest = strings.ToLower(s[:i]), s[i+3:]
	}
	// The authority ends at the first "/", "?" or "#"; a user name or
	// password may itself hold none of them unescaped.
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return "", scheme
	}
	return rest[:at], scheme
}

// checkURLCredentials refuses a repository URL that carries credentials:
// any user information in an http(s) or oci URL or a scheme-less registry,
// and a password anywhere. chart marks a chart repository, where no user
// name has a meaning of its own; for git over SSH (ssh://git@host/…,
// git@host:org/repo) a user name alone is the SSH user, and is kept.
func checkURLCredentials(raw string, chart bool) error {
	info, scheme := userInfo(raw)
	if info == "" {
		return nil
	}
	hasPassword := strings.Contains(info, ":")
	sshUser := scheme == "ssh" || scheme == "git+ssh" || (scheme == "" && isSSHURL(strings.TrimSpace(raw)))
	if !chart && !hasPassword && sshUser {
		return nil
	}
	return &SourceError{Err: fmt.Errorf("repository URL %s carries credentials: %w", redactURL(raw), ErrCredentialsInURL)}
}

// urlHost returns the host (with its port, when the URL names one) that a
// git or chart repository URL is reached at: the authority of a URL with a
// scheme, the host of an scp-like git address, or the registry of a
// scheme-less OCI reference.
func urlHost(raw string) string {
	s := strings.TrimSpace(raw)
	if i := strings.Index(s, "://"); i >= 0 {
		if u, err := url.Parse(s); err == nil {
			return strings.ToLower(u.Host)
		}
		s = s[i+3:]
		if j := strings.IndexAny(s, "/?#"); j >= 0 {
			s = s[:j]
		}
		if at := strings.LastIndex(s, "@"); at >= 0 {
			s = s[at+1:]
		}
		return strings.ToLower(s)
	}
	if isSSHURL(s) {
		rest := s[strings.Index(s, "@")+1:]
		if c := strings.Index(rest, ":"); c >= 0 {
			rest = rest[:c]
		}
		return strings.ToLower(rest)
	}
	if j := strings.IndexAny(s, "/?#"); j >= 0 {
		s = s[:j]
	}
	if at := strings.LastIndex(s, "@"); at >= 0 {
		s = s[at+1:]
	}
	return strings.ToLower(s)
}

// hostPolicy is a list of allowed host globs; empty allows every host.
type hostPolicy []string

// validateHostPattern refuses a pattern that cannot name a host: empty, or
// holding a scheme, a path or user information.
func validateHostPattern(p string) error {
	p = strings.TrimSpace(p)
	if p == "" || strings.ContainsAny(p, "/@?# ") {
		return fmt.Errorf("%w: allowed host %q is not a host glob such as github.com, *.example.com or 127.0.0.1:*", ErrInvalidOption, p)
	}
	return nil
}

// allows reports whether host (host or host:port, as urlHost returns it)
// matches one of the globs. A glob without a port matches the host name
// on any port; one with a port (127.0.0.1:8080, 127.0.0.1:*) matches the
// port too, the scheme's default port included only when the URL names it.
// "*" matches any run of characters, dots included; matching ignores case.
func (p hostPolicy) allows(host string) bool {
	if len(p) == 0 {
		return true
	}
	name, port := splitHostPort(host)
	for _, pat := range p {
		pn, pp := splitHostPort(strings.ToLower(strings.TrimSpace(pat)))
		if !globMatch(pn, name) {
			continue
		}
		if pp == "" || globMatch(pp, port) {
			return true
		}
	}
	return false
}

// check refuses repoURL when its host is not allowed. what names the kind
// of repository in the message.
func (p hostPolicy) check(what, repoURL string) error {
	if len(p) == 0 {
		return nil
	}
	host := urlHost(repoURL)
	if host != "" && p.allows(host) {
		return nil
	}
	return &SourceError{Err: fmt.Errorf("%s %s: %w: %q matches none of the allowed hosts (--allowed-hosts %s)",
		what, redactURL(repoURL), ErrHostNotAllowed, host, strings.Join(p, ","))}
}

// splitHostPort splits host:port, [v6]:port or a bare host; brackets are
// dropped from an IPv6 address.
func splitHostPort(hp string) (string, string) {
	if h, port, err := net.SplitHostPort(hp); err == nil {
		return h, port
	}
	return strings.TrimSuffix(strings.TrimPrefix(hp, "["), "]"), ""
}

// globMatch matches s against pattern, where "*" matches any run of
// characters and every other character itself.
func globMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, part := range parts[1 : len(parts)-1] {
		i := strings.Index(s, part)
		if i < 0 {
			return false
		}
		s = s[i+len(part):]
	}
	return len(s) >= len(last) && strings.HasSuffix(s, last)
}

// guardTransport refuses, before it leaves, every request to a host the
// policy does not allow: redirects, and the token realms an OCI registry
// sends its clients to, included.
type guardTransport struct {
	hosts hostPolicy
	base  http.RoundTripper
}

func (t guardTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if len(t.hosts) > 0 && !t.hosts.allows(strings.ToLower(req.URL.Host)) {
		return nil, fmt.Errorf("request to %s: %w: %q matches none of the allowed hosts (--allowed-hosts %s)",
			redactURL(req.URL.String()), ErrHostNotAllowed, req.URL.Host, strings.Join(t.hosts, ","))
	}
	return t.base.RoundTrip(req)
}

// credScope is where a credential applies, or what a URL is: its scheme
// (scp-like git addresses count as ssh, scheme-less registries as oci),
// and its host and path as NormalizeRepoURL spells them.
type credScope struct {
	scheme string
	where  string
}

func scopeOf(raw string) credScope {
	s := strings.TrimSpace(raw)
	switch {
	case strings.Contains(s, "://"):
		scheme := strings.ToLower(s[:strings.Index(s, "://")])
		if scheme == "git+ssh" {
			scheme = "ssh"
		}
		return credScope{scheme: scheme, where: v1alpha1.NormalizeRepoURL(s)}
	case isSSHURL(s):
		return credScope{scheme: "ssh", where: v1alpha1.NormalizeRepoURL(s)}
	case s == "":
		return credScope{}
	}
	return credScope{scheme: "oci", where: v1alpha1.NormalizeRepoURL("oci://" + s)}
}

// covers reports whether a credential scoped to c applies to u: the same
// scheme and host, and u's path equal to c's or below it.
func (c credScope) covers(u credScope) bool {
	if c.where == "" || c.scheme != u.scheme {
		return false
	}
	return u.where == c.where || strings.HasPrefix(u.where, strings.TrimSuffix(c.where, "/")+"/")
}

// plainHTTP reports whether a URL is fetched over unencrypted http.
func plainHTTP(raw string) bool {
	return scopeOf(raw).scheme == "http"
}
