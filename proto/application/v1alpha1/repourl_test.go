package v1alpha1

import (
	"strings"
	"testing"
)

func TestNormalizeRepoURL(t *testing.T) {
	cases := []struct{ in, want string }{
		{"https://github.com/acme/platform.git", "github.com/acme/platform"},
		{"https://github.com/acme/platform", "github.com/acme/platform"},
		{"https://GitHub.com/Acme/Platform.git/", "github.com/acme/platform"},
		{"git@github.com:acme/platform.git", "github.com/acme/platform"},
		{"git@github.com:Acme/platform", "github.com/acme/platform"},
		{"ssh://git@github.com/acme/platform.git", "github.com/acme/platform"},
		{"ssh://git@github.com:22/acme/platform.git", "github.com/acme/platform"},
		{"ssh://git@gitea.example.com:2222/acme/platform.git", "gitea.example.com:2222/acme/platform"},
		{"https://github.com:443/acme/platform", "github.com/acme/platform"},
		{"https://user:token@github.com/acme/platform.git", "github.com/acme/platform"},
		{"http://127.0.0.1:8080/platform/gitops.git", "127.0.0.1:8080/platform/gitops"},
		{"git://github.com/acme/platform.git", "github.com/acme/platform"},
		{"https://gitlab.example.com/group/sub/platform.git", "gitlab.example.com/group/sub/platform"},
		{"", ""},
	}
	for _, c := range cases {
		if got := NormalizeRepoURL(c.in); got != c.want {
			t.Errorf("NormalizeRepoURL(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestRedactRepoURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pw@host/x.git":    "https://host/x.git",
		"https://token@host/x.git":      "https://host/x.git",
		"https://host/x.git":            "https://host/x.git",
		"oci://user:pw@host/charts":     "oci://host/charts",
		"user:pw@host/charts":           "host/charts",
		"git@github.com:org/repo.git":   "git@github.com:org/repo.git",
		"ssh://git@github.com/org/repo": "ssh://github.com/org/repo",
		"git:pw@github.com:org/repo":    "github.com:org/repo",
		"http://user:p w@host/x.git":    "http://host/x.git",
		"http://user:p%zz@host:1/x.git": "http://host:1/x.git",
		"":                              "",
	} {
		if got := RedactRepoURL(in); got != want {
			t.Errorf("RedactRepoURL(%q) = %q; want %q", in, got, want)
		}
	}
}

// FuzzNormalizeRepoURL checks the properties NormalizeRepoURL keeps for
// any input, and that neither it nor RedactRepoURL lets a password in a
// URL through. It is not idempotent on every output, and is not meant to be:
// a normalised URL with a port (host:2222/org/repo) reads again as an
// scp-like address, host plus path "2222/org/repo", as git reads it; and
// only one ".git" suffix is dropped (repo.git.git becomes repo.git). An
// output with neither a ":" nor a ".git" suffix is a fixed point.
func FuzzNormalizeRepoURL(f *testing.F) {
	for _, s := range []string{
		"https://github.com/acme/platform.git",
		"git@github.com:Acme/platform",
		"ssh://git@gitea.example.com:2222/acme/platform.git",
		"https://user:token@github.com/acme/platform.git",
		"http://127.0.0.1:8080/platform/gitops.git",
		"registry.example.com/charts",
		"oci://registry.example.com:5000/charts",
		"https://user:pa ss@host/x",
		"https://[::1]:8443/a/b",
		"  HTTPS://GitHub.com/Org/Repo.git/  ",
		"",
	} {
		f.Add(s)
	}
	const secret = "zq9secretx7"
	f.Fuzz(func(t *testing.T, raw string) {
		out := NormalizeRepoURL(raw)
		if out != strings.ToLower(out) {
			t.Errorf("NormalizeRepoURL(%q) = %q is not lower-case", raw, out)
		}
		fixed := !strings.ContainsAny(out, ":@") && !strings.HasSuffix(out, ".git") &&
			!strings.HasPrefix(out, "/") && !strings.HasSuffix(out, "/") && strings.TrimSpace(out) == out
		if again := NormalizeRepoURL(out); fixed && again != out {
			t.Errorf("NormalizeRepoURL(%q) = %q, but NormalizeRepoURL(%q) = %q", raw, out, out, again)
		}
		// A password in the URL never survives, whether url.Parse takes
		// the URL or not.
		if !strings.Contains(strings.ToLower(raw), secret) {
			withCreds := "https://user:" + secret + "@" + raw
			if got := NormalizeRepoURL(withCreds); strings.Contains(got, secret) {
				t.Errorf("NormalizeRepoURL(%q) = %q keeps the password", withCreds, got)
			}
			if got := RedactRepoURL(withCreds); strings.Contains(strings.ToLower(got), secret) {
				t.Errorf("RedactRepoURL(%q) = %q keeps the password", withCreds, got)
			}
		}
	})
}
