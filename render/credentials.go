package render

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Credentials finds the credentials of a repository: a git remote, a Helm
// chart repository or an OCI registry. cmd implements it from Kubernetes
// Secrets labelled ferry.dev/secret-type: repository, parsed with
// ParseRepositorySecret.
type Credentials interface {
	// Lookup returns the credentials for repoURL, or nil when there are none.
	Lookup(ctx context.Context, repoURL string) (*RepoCredentials, error)
}

// RepoCredentials are the credentials of one repository, or of every
// repository under a URL prefix. Its String and LogValue never show the
// secrets.
type RepoCredentials struct {
	// URL is the repository, or a prefix of repository URLs.
	URL string
	// Type is "git", "helm" or "oci"; empty means git.
	Type string

	// Username and Password (or token) authenticate over HTTPS and to chart
	// repositories and registries.
	Username string
	Password string
	// BearerToken authenticates git over HTTPS with a bearer token.
	BearerToken string

	// SSHPrivateKey authenticates git over SSH; SSHKnownHosts lists the host
	// keys to accept, in known_hosts format.
	SSHPrivateKey []byte
	SSHKnownHosts []byte

	// Insecure skips TLS verification, and for SSH the host key check; and
	// it lets the credentials go to a plain http:// URL, which they never
	// do otherwise.
	Insecure bool
	// EnableOCI marks a Helm repository given without oci:// as an OCI
	// registry.
	EnableOCI bool
	// ForceHTTP talks plain HTTP to an OCI registry, credentials included:
	// the Secret's insecureOCIForceHttp asks for exactly that.
	ForceHTTP bool
}

// String shows where the credentials apply and what kind they are, never
// their secrets.
func (c *RepoCredentials) String() string {
	if c == nil {
		return "<no credentials>"
	}
	var kinds []string
	if c.Username != "" || c.Password != "" {
		kinds = append(kinds, "password")
	}
	if c.BearerToken != "" {
		kinds = append(kinds, "bearer token")
	}
	if len(c.SSHPrivateKey) > 0 {
		kinds = append(kinds, "ssh key")
	}
	if len(kinds) == 0 {
		kinds = append(kinds, "anonymous")
	}
	return fmt.Sprintf("credentials for %s (%s)", redactURL(c.URL), strings.Join(kinds, ", "))
}

// LogValue keeps the secrets out of structured logs.
func (c *RepoCredentials) LogValue() slog.Value { return slog.StringValue(c.String()) }

// secrets returns the secret strings, so that errors can be scrubbed of them.
func (c *RepoCredentials) secrets() []string {
	if c == nil {
		return nil
	}
	var out []string
	for _, s := range []string{c.Password, c.BearerToken} {
		if len(s) >= 4 {
			out = append(out, s)
		}
	}
	return out
}

// ErrInvalidSecret is wrapped by ParseRepositorySecret's errors.
var ErrInvalidSecret = errors.New("invalid repository secret")

// ParseRepositorySecret reads the data of a repository Secret. The keys are
// Argo CD's: url, type, username, password, bearerToken, sshPrivateKey,
// insecure, enableOCI and insecureOCIForceHttp; sshKnownHosts, a ferry
// addition, holds the SSH host keys. Errors name keys, never values.
func ParseRepositorySecret(data map[string][]byte) (*RepoCredentials, error) {
	str := func(k string) string { return strings.TrimSpace(string(data[k])) }
	c := &RepoCredentials{
		URL:           str("url"),
		Type:          strings.ToLower(str("type")),
		Username:      str("username"),
		Password:      string(data["password"]),
		BearerToken:   string(data["bearerToken"]),
		SSHPrivateKey: data["sshPrivateKey"],
		SSHKnownHosts: data["sshKnownHosts"],
	}
	if c.URL == "" {
		return nil, fmt.Errorf("%w: key url is missing", ErrInvalidSecret)
	}
	switch c.Type {
	case "", "git", "helm", "oci":
	default:
		return nil, fmt.Errorf("%w: type %q is not git, helm or oci", ErrInvalidSecret, c.Type)
	}
	for key, dst := range map[string]*bool{"insecure": &c.Insecure, "enableOCI": &c.EnableOCI, "insecureOCIForceHttp": &c.ForceHTTP} {
		v := str(key)
		if v == "" {
			continue
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("%w: key %s is not a boolean", ErrInvalidSecret, key)
		}
		*dst = b
	}
	if c.Type == "oci" {
		c.EnableOCI = true
	}
	if len(c.SSHPrivateKey) > 0 {
		if _, err := ssh.ParseRawPrivateKey(c.SSHPrivateKey); err != nil {
			// The parser's message quotes no key material, but keep it out anyway.
			return nil, fmt.Errorf("%w: key sshPrivateKey is not a private key in PEM or OpenSSH format", ErrInvalidSecret)
		}
	}
	return c, nil
}

// StaticCredentials looks credentials up in a fixed list: an exact match of
// the repository URL first, else the entry with the longest URL that is a
// prefix of it, as Argo CD's credential templates work. A credential
// applies only to URLs of its own scheme and host, at its path or below
// it (a credential for https://host/org serves neither
// http://host/org/repo nor https://host/other). URLs are compared
// normalised: no .git suffix, no default port, case-insensitive; an
// scp-like git address counts as ssh, a registry given without a scheme as
// oci.
type StaticCredentials struct {
	entries []*RepoCredentials
}

var _ Credentials = (*StaticCredentials)(nil)

// NewStaticCredentials returns a lookup over creds.
func NewStaticCredentials(creds ...*RepoCredentials) *StaticCredentials {
	s := &StaticCredentials{}
	for _, c := range creds {
		if c != nil {
			s.entries = append(s.entries, c)
		}
	}
	// Longest URL first, so the first prefix match is the most specific.
	sort.SliceStable(s.entries, func(i, j int) bool {
		return len(scopeOf(s.entries[i].URL).where) > len(scopeOf(s.entries[j].URL).where)
	})
	return s
}

// Lookup returns the credentials for repoURL, or nil.
func (s *StaticCredentials) Lookup(_ context.Context, repoURL string) (*RepoCredentials, error) {
	want := scopeOf(repoURL)
	for _, c := range s.entries {
		if scopeOf(c.URL) == want {
			return c, nil
		}
	}
	for _, c := range s.entries {
		if scopeOf(c.URL).covers(want) {
			return c, nil
		}
	}
	return nil, nil
}

// lookupCredentials finds the credentials for repoURL. Credentials with a
// secret in them are refused for a plain http:// URL unless their Secret
// says insecure: ferry does not send a password where anyone on the path
// can read it.
func lookupCredentials(ctx context.Context, creds Credentials, repoURL string) (*RepoCredentials, error) {
	if creds == nil {
		return nil, nil
	}
	c, err := creds.Lookup(ctx, repoURL)
	if err != nil {
		return nil, &SourceError{Err: fmt.Errorf("looking up credentials of %s: %w", redactURL(repoURL), err), Transient: true}
	}
	if c != nil && c.hasSecret() && plainHTTP(repoURL) && !c.Insecure {
		return nil, &SourceError{Err: fmt.Errorf("%s: %w, and the repository Secret for %s does not say insecure: \"true\"; serve the repository over https, or set insecure",
			redactURL(repoURL), ErrPlainHTTPCredentials, redactURL(c.URL))}
	}
	return c, nil
}

// hasSecret reports whether c holds anything secret to send.
func (c *RepoCredentials) hasSecret() bool {
	return c.Username != "" || c.Password != "" || c.BearerToken != "" || len(c.SSHPrivateKey) > 0
}

// isSSHURL reports whether a git URL is reached over SSH: ssh:// or the
// scp-like user@host:path.
func isSSHURL(u string) bool {
	if strings.HasPrefix(u, "ssh://") || strings.HasPrefix(u, "git+ssh://") {
		return true
	}
	if strings.Contains(u, "://") {
		return false
	}
	at := strings.Index(u, "@")
	colon := strings.Index(u, ":")
	return at > 0 && colon > at
}

// GitAuth returns the go-git authentication for repoURL from c, and whether
// TLS verification is to be skipped. It returns a nil method for anonymous
// access. For SSH, known hosts are required unless c.Insecure is set.
func GitAuth(repoURL string, c *RepoCredentials) (transport.AuthMethod, bool, error) {
	if c == nil {
		return nil, false, nil
	}
	if isSSHURL(repoURL) {
		if len(c.SSHPrivateKey) == 0 {
			return nil, false, &SourceError{Err: fmt.Errorf("%s is an SSH URL but its credentials have no sshPrivateKey", redactURL(repoURL))}
		}
		user := "git"
		if u, err := url.Parse(repoURL); err == nil && u.User != nil && u.User.Username() != "" {
			user = u.User.Username()
		} else if at := strings.Index(repoURL, "@"); at > 0 && !strings.Contains(repoURL, "://") {
			user = repoURL[:at]
		}
		keys, err := gitssh.NewPublicKeys(user, c.SSHPrivateKey, "")
		if err != nil {
			return nil, false, &SourceError{Err: fmt.Errorf("the SSH key for %s cannot be used: it is not a private key, or it has a passphrase", redactURL(repoURL))}
		}
		switch {
		case c.Insecure:
			keys.HostKeyCallback = ssh.InsecureIgnoreHostKey() //nolint:gosec // asked for with insecure: true
		case len(c.SSHKnownHosts) > 0:
			cb, err := knownHostsCallback(c.SSHKnownHosts)
			if err != nil {
				return nil, false, &SourceError{Err: fmt.Errorf("the known hosts for %s: %w", redactURL(repoURL), err)}
			}
			keys.HostKeyCallback = cb
		default:
			return nil, false, &SourceError{Err: fmt.Errorf("%s is an SSH URL but its credentials have no sshKnownHosts; set them, or insecure: true to skip the host key check", redactURL(repoURL))}
		}
		return keys, false, nil
	}
	switch {
	case c.BearerToken != "":
		return &githttp.TokenAuth{Token: c.BearerToken}, c.Insecure, nil
	case c.Username != "" || c.Password != "":
		user := c.Username
		if user == "" {
			// Hosts that take a token as the password want some user name.
			user = "git"
		}
		return &githttp.BasicAuth{Username: user, Password: c.Password}, c.Insecure, nil
	}
	return nil, c.Insecure, nil
}

// knownHostsCallback checks host keys against known_hosts data. The
// knownhosts package reads only files, so the data passes through a
// private temporary file that is gone before this returns.
func knownHostsCallback(data []byte) (ssh.HostKeyCallback, error) {
	f, err := os.CreateTemp("", "ferry-known-hosts-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	cb, err := knownhosts.New(f.Name())
	if err != nil {
		return nil, fmt.Errorf("not in known_hosts format: %w", err)
	}
	return cb, nil
}

// scrub removes secrets from a message.
func scrub(msg string, secrets []string) string {
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, "xxxxx")
	}
	return msg
}
