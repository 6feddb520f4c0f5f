package render

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

func sshKey(t *testing.T) (privatePEM []byte, public ssh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(block), sp
}

func TestParseRepositorySecret(t *testing.T) {
	key, _ := sshKey(t)
	cases := []struct {
		name    string
		data    map[string]string
		want    *RepoCredentials
		wantErr string
	}{
		{"reads an HTTPS secret", map[string]string{"url": "https://github.com/org/repo", "username": "bot", "password": "tok", "insecure": "true"},
			&RepoCredentials{URL: "https://github.com/org/repo", Username: "bot", Password: "tok", Insecure: true}, ""},
		{"reads an SSH secret with known hosts", map[string]string{"url": "git@github.com:org/repo.git", "sshPrivateKey": string(key), "sshKnownHosts": "github.com ssh-ed25519 AAAA"},
			&RepoCredentials{URL: "git@github.com:org/repo.git", SSHPrivateKey: key, SSHKnownHosts: []byte("github.com ssh-ed25519 AAAA")}, ""},
		{"reads an OCI Helm repository", map[string]string{"url": "registry.example.com/charts", "type": "helm", "enableOCI": "true", "insecureOCIForceHttp": "true"},
			&RepoCredentials{URL: "registry.example.com/charts", Type: "helm", EnableOCI: true, ForceHTTP: true}, ""},
		{"requires a url", map[string]string{"username": "u"}, nil, "key url is missing"},
		{"refuses an unknown type", map[string]string{"url": "x", "type": "svn"}, nil, `type "svn"`},
		{"refuses a flag that is not a boolean", map[string]string{"url": "x", "insecure": "maybe"}, nil, "key insecure is not a boolean"},
		{"refuses a key that is not a key, without quoting it", map[string]string{"url": "x", "sshPrivateKey": "hunter2-not-a-key"}, nil, "key sshPrivateKey is not a private key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := map[string][]byte{}
			for k, v := range tc.data {
				data[k] = []byte(v)
			}
			got, err := ParseRepositorySecret(data)
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ErrInvalidSecret) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v; want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Errorf("error quotes the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("credentials (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCredentialsNeverPrinted(t *testing.T) {
	key, _ := sshKey(t)
	c := &RepoCredentials{URL: "https://bot:pw-in-url@git.example.com/r", Username: "bot", Password: "p4ssw0rd", SSHPrivateKey: key}
	var logs strings.Builder
	slog.New(slog.NewTextHandler(&logs, nil)).Info("using", "creds", c)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %s", c, c, c), logs.String()} {
		if strings.Contains(s, "p4ssw0rd") || strings.Contains(s, "pw-in-url") || strings.Contains(s, "PRIVATE KEY") {
			t.Errorf("printed secrets: %s", s)
		}
	}
}

func TestStaticCredentials(t *testing.T) {
	exact := &RepoCredentials{URL: "https://github.com/org/repo.git", Password: "exact"}
	org := &RepoCredentials{URL: "https://github.com/org", Password: "org"}
	host := &RepoCredentials{URL: "https://github.com", Password: "host"}
	oci := &RepoCredentials{URL: "oci://registry.example.com", Password: "oci"}
	s := NewStaticCredentials(host, org, exact, oci)
	cases := []struct {
		url  string
		want *RepoCredentials
	}{
		{"https://github.com/org/repo", exact},
		{"https://GitHub.com/org/repo.git/", exact},
		{"https://github.com/org/other", org},
		{"https://github.com/organisation/x", host},
		{"https://gitlab.com/org/repo", nil},
		{"registry.example.com/charts", oci},
		{"oci://registry.example.com/charts", oci},
	}
	for _, tc := range cases {
		t.Run(tc.url, func(t *testing.T) {
			got, err := s.Lookup(t.Context(), tc.url)
			if err != nil || got != tc.want {
				t.Errorf("Lookup = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestGitAuth(t *testing.T) {
	key, pub := sshKey(t)
	knownHosts := []byte("git.example.com " + string(ssh.MarshalAuthorizedKey(pub)))

	t.Run("uses basic auth over HTTPS, with a user name for a bare token", func(t *testing.T) {
		auth, insecure, err := GitAuth("https://git.example.com/r.git", &RepoCredentials{Password: "tok", Insecure: true})
		ba, ok := auth.(*githttp.BasicAuth)
		if err != nil || !ok || ba.Username != "git" || ba.Password != "tok" || !insecure {
			t.Errorf("GitAuth = %#v, %t, %v", auth, insecure, err)
		}
	})
	t.Run("uses a bearer token", func(t *testing.T) {
		auth, _, err := GitAuth("https://git.example.com/r.git", &RepoCredentials{BearerToken: "tok"})
		if _, ok := auth.(*githttp.TokenAuth); err != nil || !ok {
			t.Errorf("GitAuth = %#v, %v", auth, err)
		}
	})
	t.Run("uses the SSH key, checking the host key against known hosts", func(t *testing.T) {
		auth, _, err := GitAuth("ssh://deploy@git.example.com/r.git", &RepoCredentials{SSHPrivateKey: key, SSHKnownHosts: knownHosts})
		if err != nil {
			t.Fatal(err)
		}
		pk := auth.(*gitssh.PublicKeys)
		remote := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 22}
		if pk.User != "deploy" {
			t.Errorf("user = %q", pk.User)
		}
		if err := pk.HostKeyCallback("git.example.com:22", remote, pub); err != nil {
			t.Errorf("known host refused: %v", err)
		}
		_, other := sshKey(t)
		if err := pk.HostKeyCallback("git.example.com:22", remote, other); err == nil {
			t.Error("an unknown host key was accepted")
		}
	})
	t.Run("takes the user of an scp-like URL", func(t *testing.T) {
		auth, _, err := GitAuth("git@git.example.com:org/r.git", &RepoCredentials{SSHPrivateKey: key, SSHKnownHosts: knownHosts})
		if err != nil || auth.(*gitssh.PublicKeys).User != "git" {
			t.Errorf("GitAuth = %v, %v", auth, err)
		}
	})
	t.Run("refuses SSH without known hosts unless insecure", func(t *testing.T) {
		if _, _, err := GitAuth("git@git.example.com:org/r.git", &RepoCredentials{SSHPrivateKey: key}); err == nil || !strings.Contains(err.Error(), "sshKnownHosts") {
			t.Errorf("error = %v", err)
		}
		if _, _, err := GitAuth("git@git.example.com:org/r.git", &RepoCredentials{SSHPrivateKey: key, Insecure: true}); err != nil {
			t.Errorf("insecure: %v", err)
		}
	})
	t.Run("is anonymous without credentials", func(t *testing.T) {
		if auth, _, err := GitAuth("https://x/r.git", nil); auth != nil || err != nil {
			t.Errorf("GitAuth = %v, %v", auth, err)
		}
	})
}

// TestGitCredentials fetches through a proxy that wants basic auth, as a
// private Git host does.
func TestGitCredentials(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.NewRepo(t, "private")
	repo.WriteFile(t, "apps/cm.yaml", cmYAML("private"))
	sha := repo.Commit(t, "private")
	upstream, err := url.Parse(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(upstream)
	private := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "bot" || p != "token-123456" {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(private.Close)
	repoURL := private.URL + "/private.git"
	a := app("private", "default", v1alpha1.ApplicationSource{RepoURL: repoURL, Path: "apps", TargetRevision: gitserver.Branch})

	// Every credential here says Insecure: the proxy is plain http, where
	// credentials go only when their Secret says so.
	t.Run("fetches with the credentials for the repository", func(t *testing.T) {
		creds := NewStaticCredentials(&RepoCredentials{URL: repoURL, Username: "bot", Password: "token-123456", Insecure: true})
		r := newRenderer(t, Options{}, WithCredentials(creds))
		_, rev, err := r.Render(t.Context(), Request{App: a})
		if err != nil || rev != sha {
			t.Errorf("render = %s, %v; want %s", rev, err, sha)
		}
	})
	t.Run("fails without them, terminally, and shows no password", func(t *testing.T) {
		creds := NewStaticCredentials(&RepoCredentials{URL: repoURL, Username: "bot", Password: "wrong-password-99", Insecure: true})
		for _, r := range []*Renderer{newRenderer(t, Options{}), newRenderer(t, Options{}, WithCredentials(creds))} {
			_, _, err := r.Render(t.Context(), Request{App: a})
			if err == nil || IsTransient(err) || strings.Contains(err.Error(), "wrong-password-99") {
				t.Errorf("error = %v (transient %t)", err, IsTransient(err))
			}
		}
	})
	t.Run("lists refs for the poller with the same credentials", func(t *testing.T) {
		creds := NewStaticCredentials(&RepoCredentials{URL: repoURL, Username: "bot", Password: "token-123456", Insecure: true})
		gc, err := NewGitCache(t.TempDir(), WithCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		refs, _, err := gc.Refs(t.Context(), repoURL)
		if err != nil || refs["refs/heads/"+gitserver.Branch] != sha {
			t.Errorf("Refs = %v, %v", refs, err)
		}
	})
	t.Run("refuses a nil credentials option", func(t *testing.T) {
		if _, err := NewGitCache(t.TempDir(), WithCredentials(nil)); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("error = %v", err)
		}
	})
}
