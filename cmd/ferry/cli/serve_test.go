package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestServeRefusesToStartWithoutAWebhookSecret(t *testing.T) {
	t.Setenv("FERRY_GITHUB_WEBHOOK_SECRET", "")
	t.Setenv("FERRY_GITEA_WEBHOOK_SECRET", "")
	t.Setenv("FERRY_GITLAB_TOKEN", "")
	var out, errb bytes.Buffer
	code := Run(t.Context(), []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, &out, &errb)
	if code == 0 {
		t.Fatal("ferry serve started without a webhook secret")
	}
	for _, want := range []string{"no webhook secret", "--github-webhook-secret-file", "--insecure-skip-webhook-verify"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("error %q does not mention %q", errb.String(), want)
		}
	}
}

func TestServeNamesAnEmptySecretFile(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := Run(t.Context(), []string{"serve", "--github-webhook-secret-file", empty}, &out, &errb); code == 0 {
		t.Fatal("ferry serve started with an empty secret file")
	}
	if !strings.Contains(errb.String(), empty) || !strings.Contains(errb.String(), "empty") {
		t.Errorf("error %q does not name the empty file", errb.String())
	}
}

func TestVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Run(t.Context(), []string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "ferry ") {
		t.Fatalf("version: exit %d, %q %q", code, out.String(), errb.String())
	}
}

func TestServeGivesEachProviderItsOwnSecret(t *testing.T) {
	t.Setenv("FERRY_GITHUB_WEBHOOK_SECRET", "github-secret")
	t.Setenv("FERRY_GITEA_WEBHOOK_SECRET", "")
	t.Setenv("FERRY_GITLAB_TOKEN", "")
	o := DefaultServeOptions()
	got, err := o.webhookSecrets()
	if err != nil {
		t.Fatal(err)
	}
	if string(got["github"]) != "github-secret" {
		t.Errorf("github secret = %q", got["github"])
	}
	for _, p := range []string{"gitea", "gitlab"} {
		if s, ok := got[p]; ok {
			t.Errorf("%s got a secret (%q) it was not given: the GitHub key must not be reused", p, s)
		}
	}

	t.Run("a GitLab token alone is enough to start", func(t *testing.T) {
		t.Setenv("FERRY_GITHUB_WEBHOOK_SECRET", "")
		t.Setenv("FERRY_GITLAB_TOKEN", "gitlab-token")
		got, err := o.webhookSecrets()
		if err != nil || string(got["gitlab"]) != "gitlab-token" || len(got) != 1 {
			t.Fatalf("secrets %q, %v; want only gitlab", got, err)
		}
	})
}

func TestServeAcceptsTheOldGitLabFlagName(t *testing.T) {
	cmd := newServeCmd(nil)
	if err := cmd.ParseFlags([]string{"--gitlab-webhook-secret-file", "/x"}); err != nil {
		t.Fatal(err)
	}
	if v, _ := cmd.Flags().GetString("gitlab-token-file"); v != "/x" {
		t.Errorf("--gitlab-webhook-secret-file did not set --gitlab-token-file (%q)", v)
	}
}
