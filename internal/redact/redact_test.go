package redact

import (
	"slices"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:s3cr3t@git.example.com/org/repo.git":               "https://<redacted>@git.example.com/org/repo.git",
		"https://ghp_TOKEN@github.com/org/repo":                          "https://<redacted>@github.com/org/repo",
		"https://git.example.com/repo.git?private_token=s3cr3t&ref=main": "https://git.example.com/repo.git?private_token=<redacted>&ref=main",
		"https://b.example/o?X-Amz-Signature=abc&X-Amz-Credential=AKIA":  "https://b.example/o?X-Amz-Credential=<redacted>&X-Amz-Signature=<redacted>",
		"https://git.example.com/org/repo.git":                           "https://git.example.com/org/repo.git",
		"git@github.com:org/repo.git":                                    "git@github.com:org/repo.git",
		"/srv/git/site.git":                                              "/srv/git/site.git",
		"https://u:p%zz@host/x":                                          "https://<redacted>@host/x",
	} {
		if got := URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestText(t *testing.T) {
	in := "git fetch: exit status 128: fatal: unable to access 'https://bob:hunter2@git.example.com/r.git/': 403"
	got := Text(in)
	if strings.Contains(got, "hunter2") || strings.Contains(got, "bob") || !strings.Contains(got, "git.example.com/r.git/") {
		t.Errorf("Text = %q", got)
	}
}

func TestArgs(t *testing.T) {
	in := []string{"/usr/local/bin/mesh-proxy", "--service=web", "--token=abc.SECRET1", "--token", "abc.SECRET2",
		"-token=abc.SECRET3", "--token-file=/var/run/token", "--ca-pin", "sha256:00", "--git-repo=https://u:SECRET4@h/r.git",
		"--db-password", "SECRET5", "--api-key=SECRET6", "MYSQL_PASSWORD=SECRET7", "--public-key", "/etc/tls.key", "--", "https://x:SECRET8@h/"}
	want := []string{"/usr/local/bin/mesh-proxy", "--service=web", "--token=<redacted>", "--token=<redacted>",
		"-token=<redacted>", "--token-file=/var/run/token", "--ca-pin", "sha256:00", "--git-repo=https://<redacted>@h/r.git",
		"--db-password=<redacted>", "--api-key=<redacted>", "MYSQL_PASSWORD=<redacted>", "--public-key", "/etc/tls.key", "--", "https://<redacted>@h/"}
	got := Args(in)
	if !slices.Equal(got, want) {
		t.Errorf("Args:\n got %q\nwant %q", got, want)
	}
	if strings.Contains(strings.Join(got, " "), "SECRET") {
		t.Errorf("a secret is left: %q", got)
	}
	if got := Args([]string{"x", "--token"}); !slices.Equal(got, []string{"x", "--token"}) {
		t.Errorf("a trailing --token: %q", got)
	}
}
