package v1alpha1

import "testing"

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
