package main

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The tools this bench installs with `go install` (bench/sidebyside/run.sh,
// which must name the same versions), each into a directory of its own
// version under -cache, so a version bump installs afresh.
const (
	caddyModule   = "github.com/caddyserver/caddy/v2"
	caddyVersion  = "v2.11.9"
	vegetaModule  = "github.com/tsenart/vegeta/v12"
	vegetaVersion = "v12.13.0"
	// startCommit is issue 22's starting commit: its mesh-proxy is a row of
	// every run unless -old-proxy says otherwise.
	startCommit = "49cff41"
)

func caddyPath(cache string) string {
	return filepath.Join(cache, "caddy-"+caddyVersion, "caddy")
}

func vegetaPath(cache string) string {
	return filepath.Join(cache, "vegeta-"+vegetaVersion, "vegeta")
}

// moduleVersion is the main module and version a Go binary was built from
// (`go install mod@version` records both).
func moduleVersion(path string) string {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return filepath.Base(path) + " ?"
	}
	return bi.Main.Path + " " + bi.Main.Version
}

// oldProxy resolves -old-proxy: empty is no old row; a file is used as it
// is; anything else is a git revision of this repository, whose mesh-proxy
// is built once into cache/mesh-proxy-<commit>/ and reused by later runs.
// It returns the binary and how the header names it.
func oldProxy(ctx context.Context, spec, cache string) (path, desc string, err error) {
	if spec == "" {
		return "", "", nil
	}
	if st, err := os.Stat(spec); err == nil && st.Mode().IsRegular() {
		abs, err := filepath.Abs(spec)
		return abs, spec, err
	}
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--verify", "--quiet", spec+"^{commit}").Output()
	if err != nil {
		return "", "", fmt.Errorf("sidebyside: -old-proxy %q is neither a file nor a commit of this repository", spec)
	}
	sha := strings.TrimSpace(string(out))
	short := sha[:min(len(sha), 7)]
	dir, err := filepath.Abs(filepath.Join(cache, "mesh-proxy-"+sha))
	if err != nil {
		return "", "", err
	}
	path = filepath.Join(dir, "mesh-proxy")
	desc = "built from " + short
	if _, err := os.Stat(path); err == nil {
		return path, desc, nil
	}
	fmt.Printf("building mesh-proxy from %s into %s\n", short, dir)
	if err := buildAt(ctx, sha, short, dir); err != nil {
		return "", "", err
	}
	return path, desc, nil
}

// buildAt builds ./cmd/mesh-proxy of commit sha (a tree from git archive,
// so nobody's working tree is touched) into dir/mesh-proxy, stamped with
// the short commit as `make build` stamps the current one.
func buildAt(ctx context.Context, sha, short, dir string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	src, err := os.MkdirTemp("", "sidebyside-old-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(src)
	archive := exec.CommandContext(ctx, "git", "archive", "--format=tar", sha)
	tar := exec.CommandContext(ctx, "tar", "-x", "-C", src)
	var stderr bytes.Buffer
	archive.Stderr, tar.Stderr = &stderr, &stderr
	if tar.Stdin, err = archive.StdoutPipe(); err != nil {
		return err
	}
	if err := tar.Start(); err != nil {
		return err
	}
	if err := archive.Run(); err != nil {
		_ = tar.Wait()
		return fmt.Errorf("sidebyside: git archive %s: %w\n%s", short, err, stderr.Bytes())
	}
	if err := tar.Wait(); err != nil {
		return fmt.Errorf("sidebyside: unpacking %s: %w\n%s", short, err, stderr.Bytes())
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(dir, "mesh-proxy.partial")
	build := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X minimesh/internal/version.Version="+short, "-o", tmp, "./cmd/mesh-proxy")
	build.Dir = src
	build.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("sidebyside: building mesh-proxy at %s: %w\n%s", short, err, out)
	}
	return os.Rename(tmp, filepath.Join(dir, "mesh-proxy"))
}

// fileMB is a file's size in MiB, as the table's RSS column counts.
func fileMB(path string) float64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return float64(st.Size()) / (1 << 20)
}
