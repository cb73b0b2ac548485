package meshctl

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The browser opener gets the path of a private redirect page, never the
// URL with the session token: a command line is readable by every local
// user, and a browser the opener starts keeps it in its own for its life.
func TestOpenBrowserKeepsTheTokenOutOfTheCommandLine(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no opener on windows")
	}
	bin := t.TempDir()
	for _, name := range []string{"xdg-open", "open"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\nexit 0\n"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin)
	t.Setenv("TMPDIR", t.TempDir())
	var args []string
	old := startOpener
	startOpener = func(opener, arg string) error { args = append(args, arg); return nil }
	t.Cleanup(func() { startOpener = old })

	const token = "s3cr3t-t0ken"
	url := "http://127.0.0.1:8001/?token=" + token
	cleanup, err := openBrowser(url)
	if err != nil {
		t.Fatal(err)
	}
	if len(args) != 1 {
		t.Fatalf("opener ran %d times", len(args))
	}
	page := args[0]
	if strings.Contains(page, token) || !filepath.IsAbs(page) {
		t.Fatalf("the opener was given %q; want the path of a page, without the token", page)
	}
	fi, err := os.Stat(page)
	if err != nil {
		t.Fatal(err)
	}
	di, err := os.Stat(filepath.Dir(page))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || di.Mode().Perm() != 0o700 {
		t.Fatalf("page %v in a directory %v; want 0600 in 0700", fi.Mode(), di.Mode())
	}
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `<meta http-equiv="refresh" content="0;url=`+url+`">`) {
		t.Fatalf("the page does not send the browser on to the URL:\n%s", b)
	}
	cleanup()
	if _, err := os.Stat(filepath.Dir(page)); !os.IsNotExist(err) {
		t.Fatalf("after cleanup the page's directory is still there (%v)", err)
	}
}

// The URL goes into the page escaped: a quote cannot end the attribute.
func TestRedirectPageEscapes(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	page, cleanup, err := redirectPage(`http://127.0.0.1:1/?token=a"><script>x</script>&b=1`)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "<script>") || !strings.Contains(string(b), "a&#34;&gt;&lt;script&gt;x&lt;/script&gt;&amp;b=1") {
		t.Fatalf("not escaped:\n%s", b)
	}
}
