package gitsync

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"minimesh/certs"
	"minimesh/internal/fsguard"
	"minimesh/internal/redact"
)

const (
	repoDir      = ".git-repo"  // bare repository the commits are fetched into
	worktreesDir = ".worktrees" // one checkout per commit, named by its hash
	maxStderr    = 4 << 10
)

var shaRE = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// Config configures a Syncer.
type Config struct {
	// Repo is the repository to fetch, anything `git fetch` accepts (a URL
	// or a local path).
	Repo string
	// Ref is a branch, tag or full commit hash (default HEAD).
	Ref string
	// Interval between fetches (default 30s).
	Interval time.Duration
	// Root is the directory the syncer owns, normally beneath the shared
	// directory; it is created (0755) if missing. It and the bare
	// repository in it must be this process's user's, writable by no one
	// else and reached through no symbolic link: git runs nothing in a
	// directory that fails this (checkRepo).
	Root string
	// Link is the name of the symlink in Root that points to the current
	// checkout (default "current"); the app reads Root/Link.
	Link string
	// Git is the git binary (default "git" from PATH).
	Git string
	// Timeout bounds each git command (default 2m).
	Timeout time.Duration

	Clock      certs.Clock           // default certs.SystemClock
	Logger     *slog.Logger          // default discards
	Registerer prometheus.Registerer // nil leaves the metrics unregistered
}

// Validate reports whether the config can be used.
func (c Config) Validate() error {
	switch {
	case c.Repo == "":
		return fmt.Errorf("%w: Repo is required", ErrInvalidConfig)
	case strings.HasPrefix(c.Repo, "-") || strings.ContainsAny(c.Repo, "\x00\n"):
		return fmt.Errorf("%w: Repo %q", ErrInvalidConfig, redact.Text(c.Repo))
	case strings.HasPrefix(c.Ref, "-") || strings.ContainsAny(c.Ref, "\x00\n\t :~^?*[\\"):
		return fmt.Errorf("%w: Ref %q is not a branch, tag or commit hash", ErrInvalidConfig, c.Ref)
	case c.Root == "":
		return fmt.Errorf("%w: Root is required", ErrInvalidConfig)
	case c.Link != "" && (strings.ContainsAny(c.Link, "/\x00") || strings.HasPrefix(c.Link, ".")):
		return fmt.Errorf("%w: Link %q must be a plain name not starting with '.'", ErrInvalidConfig, c.Link)
	case c.Interval < 0 || c.Timeout < 0:
		return fmt.Errorf("%w: negative interval or timeout", ErrInvalidConfig)
	}
	return nil
}

// Status is the syncer's state, for /ready's detail and status pages.
type Status struct {
	Repo string `json:"repo"`
	Ref  string `json:"ref"`
	// Commit is the hash of the live checkout, empty before the first.
	Commit     string    `json:"commit,omitempty"`
	CommitTime time.Time `json:"commit_time,omitzero"`
	// Path is the symlink the app reads.
	Path        string    `json:"path"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	// LastError is why the last sync failed; empty after a success.
	LastError string `json:"last_error,omitempty"`
	// Failures counts syncs failed in a row.
	Failures int `json:"failures,omitempty"`
}

// Syncer keeps Root/Link pointing at a checkout of Ref.
type Syncer struct {
	cfg Config
	m   metrics

	syncMu sync.Mutex // one sync at a time

	mu sync.Mutex
	st Status
}

// New checks cfg and returns a Syncer; nothing runs until Run or Sync.
func New(cfg Config) (*Syncer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Ref == "" {
		cfg.Ref = "HEAD"
	}
	if cfg.Interval == 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.Link == "" {
		cfg.Link = "current"
	}
	if cfg.Git == "" {
		cfg.Git = "git"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("%w: Root: %w", ErrInvalidConfig, err)
	}
	cfg.Root = root
	git, err := exec.LookPath(cfg.Git)
	if err != nil {
		return nil, fmt.Errorf("%w: git binary: %w", ErrInvalidConfig, err)
	}
	cfg.Git = git
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Syncer{cfg: cfg, m: m}
	s.st = Status{Repo: redact.URL(cfg.Repo), Ref: cfg.Ref, Path: filepath.Join(root, cfg.Link)}
	return s, nil
}

// Status returns the syncer's state.
func (s *Syncer) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// Ready returns nil once a checkout is live (even if later syncs fail: the
// last good one stays), else why not.
func (s *Syncer) Ready() error {
	st := s.Status()
	if st.Commit != "" {
		return nil
	}
	if st.LastError != "" {
		return fmt.Errorf("%w: %s", ErrNoCheckout, st.LastError)
	}
	return ErrNoCheckout
}

// Run syncs at once, then every Interval, until ctx is cancelled; then it
// returns nil. A failed sync keeps the last good checkout and is retried
// at the next tick; it is reported by Status, Ready (before the first
// success) and the metrics.
func (s *Syncer) Run(ctx context.Context) error {
	if err := s.adopt(ctx); err != nil {
		s.cfg.Logger.Warn("gitsync: previous checkout not reused", "err", err)
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := s.Sync(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Logger.Warn("gitsync: sync failed, keeping the last good checkout", "err", redact.Text(err.Error()), "commit", s.Status().Commit)
		}
		t.Reset(s.cfg.Interval)
	}
}

// adopt takes over the checkout a previous run left behind, so a restart
// serves it at once.
func (s *Syncer) adopt(ctx context.Context) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	target, err := os.Readlink(filepath.Join(s.cfg.Root, s.cfg.Link))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("gitsync: %w", err)
	}
	dir, sha := filepath.Split(target)
	if filepath.Clean(dir) != worktreesDir || !shaRE.MatchString(sha) {
		return fmt.Errorf("gitsync: link points to %q, not one of our checkouts", target)
	}
	if _, err := os.Stat(filepath.Join(s.cfg.Root, target)); err != nil {
		return fmt.Errorf("gitsync: %w", err)
	}
	ct, err := s.commitTime(ctx, sha)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.st.Commit, s.st.CommitTime = sha, ct
	s.mu.Unlock()
	s.m.commitTime.Set(float64(ct.Unix()))
	return nil
}

// Sync fetches Ref once and, if it names a new commit, checks it out
// beside the current one and swaps the link to it. It is what Run does at
// each tick; it is exported for a manual trigger.
func (s *Syncer) Sync(ctx context.Context) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	start := s.cfg.Clock.Now()
	changed, sha, ct, err := s.sync(ctx)
	if err != nil && ctx.Err() != nil {
		return err // shutting down: not a failure of the repository
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.LastAttempt = start
	switch {
	case err != nil:
		s.st.LastError = redact.Text(err.Error())
		s.st.Failures++
		s.m.syncs.WithLabelValues("error").Inc()
		return err
	case changed:
		s.m.syncs.WithLabelValues("changed").Inc()
	default:
		s.m.syncs.WithLabelValues("unchanged").Inc()
	}
	now := s.cfg.Clock.Now()
	s.st.Commit, s.st.CommitTime = sha, ct
	s.st.LastSuccess, s.st.LastError, s.st.Failures = now, "", 0
	s.m.commitTime.Set(float64(ct.Unix()))
	s.m.lastSuccess.Set(float64(now.Unix()))
	return nil
}

func (s *Syncer) sync(ctx context.Context) (changed bool, sha string, ct time.Time, err error) {
	if err := s.init(ctx); err != nil {
		return false, "", time.Time{}, err
	}
	sha, err = s.fetch(ctx)
	if err != nil {
		return false, "", time.Time{}, err
	}
	ct, err = s.commitTime(ctx, sha)
	if err != nil {
		return false, "", time.Time{}, err
	}
	rel := filepath.Join(worktreesDir, sha)
	link := filepath.Join(s.cfg.Root, s.cfg.Link)
	if cur, err := os.Readlink(link); err == nil && cur == rel {
		if _, err := os.Stat(link + "/"); err == nil {
			return false, sha, ct, nil
		}
	}
	wt := filepath.Join(s.cfg.Root, rel)
	// A checkout of this commit left by a crash may be partial: redo it.
	if _, err := os.Lstat(wt); err == nil {
		s.removeWorktree(ctx, wt)
	}
	if _, err := s.git(ctx, "worktree", "add", "--quiet", "--detach", "--force", wt, sha); err != nil {
		return false, "", time.Time{}, err
	}
	if err := s.swap(rel); err != nil {
		return false, "", time.Time{}, err
	}
	s.cfg.Logger.Info("gitsync: switched", "commit", sha, "commit_time", ct, "link", link)
	s.cleanup(ctx, sha)
	return true, sha, ct, nil
}

// init creates Root and the bare repository once.
func (s *Syncer) init(ctx context.Context) error {
	// 0755 less the umask: never writable by group or others.
	if err := os.MkdirAll(filepath.Join(s.cfg.Root, worktreesDir), 0o755); err != nil {
		return fmt.Errorf("gitsync: %w", err)
	}
	root, err := fsguard.OpenDir(s.cfg.Root, false)
	if err != nil {
		return fmt.Errorf("%w: Root: %w", ErrUntrusted, err)
	}
	_ = root.Close()
	repo := filepath.Join(s.cfg.Root, repoDir)
	if _, err := os.Stat(filepath.Join(repo, "HEAD")); err == nil {
		return nil
	}
	if err := os.RemoveAll(repo); err != nil {
		return fmt.Errorf("gitsync: %w", err)
	}
	// --shared=0644: the repository's files are 0644 and its directories
	// 0755 whatever the umask (git would make them 0664 and 0775 under
	// umask 002), so checkRepo does not refuse what git made.
	_, err = s.run(ctx, "", "init", "--quiet", "--bare", "--shared=0644", repo)
	return err
}

// checkRepo runs before every git command in the bare repository. Whoever
// else can write there (the app beside us, on the shared volume, or
// anyone if Root was made group-writable) could plant a hook or a config
// (a filter, an fsmonitor, an ssh command) that git would run as this
// process's user, which holds the workload's key. So Root and the
// repository must be directories of this process's user that no one else
// can write, reached through no symbolic link (fsguard's rule), the
// repository's config a file of ours no one else can write, and its hooks
// directory, if any, the same as Root. Git itself refuses a repository
// another user owns; this also refuses one others can write. Every git
// command runs with hooks and fsmonitor off besides (run).
func (s *Syncer) checkRepo() error {
	root, err := fsguard.OpenDir(s.cfg.Root, false)
	if err != nil {
		return fmt.Errorf("%w: Root: %w", ErrUntrusted, err)
	}
	defer root.Close()
	repo, err := root.OpenDir(repoDir, false)
	if err != nil {
		return fmt.Errorf("%w: bare repository: %w", ErrUntrusted, err)
	}
	defer repo.Close()
	if ok, err := repo.Check("config", false); err != nil || !ok {
		if err == nil {
			err = fmt.Errorf("%s: %w", filepath.Join(repo.Path(), "config"), fs.ErrNotExist)
		}
		return fmt.Errorf("%w: bare repository: %w", ErrUntrusted, err)
	}
	hooks, err := repo.OpenDir("hooks", false)
	if err == nil {
		_ = hooks.Close()
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: bare repository: %w", ErrUntrusted, err)
	}
	return nil
}

// fetch brings Ref into the bare repository and returns its commit.
func (s *Syncer) fetch(ctx context.Context) (string, error) {
	if _, err := s.git(ctx, "fetch", "--quiet", "--no-tags", "--force", "--", s.cfg.Repo, s.cfg.Ref); err != nil {
		return "", err
	}
	out, err := s.git(ctx, "rev-parse", "--verify", "--quiet", "FETCH_HEAD^{commit}")
	if err != nil {
		return "", err
	}
	sha := strings.TrimSpace(out)
	if !shaRE.MatchString(sha) {
		return "", fmt.Errorf("gitsync: rev-parse gave %q", sha)
	}
	if shaRE.MatchString(s.cfg.Ref) && sha != s.cfg.Ref {
		return "", fmt.Errorf("gitsync: fetched %s, want %s", sha, s.cfg.Ref)
	}
	return sha, nil
}

func (s *Syncer) commitTime(ctx context.Context, sha string) (time.Time, error) {
	out, err := s.git(ctx, "show", "--no-patch", "--format=%ct", sha)
	if err != nil {
		return time.Time{}, err
	}
	sec, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("gitsync: commit time of %s: %w", sha, err)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// swap points the link at rel atomically: a new symlink under a temporary
// name is renamed over the old one, so a reader resolves either the old
// checkout or the new, both complete.
func (s *Syncer) swap(rel string) error {
	tmp := filepath.Join(s.cfg.Root, "."+s.cfg.Link+".tmp-"+rand.Text())
	if err := os.Symlink(rel, tmp); err != nil {
		return fmt.Errorf("gitsync: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.cfg.Root, s.cfg.Link)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("gitsync: swap link: %w", err)
	}
	d, err := os.Open(s.cfg.Root)
	if err != nil {
		return fmt.Errorf("gitsync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("gitsync: %w", err)
	}
	return nil
}

// cleanup removes every checkout but keep's, and leftover temporary links.
func (s *Syncer) cleanup(ctx context.Context, keep string) {
	ents, err := os.ReadDir(filepath.Join(s.cfg.Root, worktreesDir))
	if err != nil {
		s.cfg.Logger.Warn("gitsync: cleanup", "err", err)
		return
	}
	for _, e := range ents {
		if e.Name() != keep {
			s.removeWorktree(ctx, filepath.Join(s.cfg.Root, worktreesDir, e.Name()))
		}
	}
	if tmps, _ := filepath.Glob(filepath.Join(s.cfg.Root, "."+s.cfg.Link+".tmp-*")); len(tmps) > 0 {
		for _, t := range tmps {
			_ = os.Remove(t)
		}
	}
	if _, err := s.git(ctx, "worktree", "prune"); err != nil {
		s.cfg.Logger.Warn("gitsync: worktree prune", "err", err)
	}
}

func (s *Syncer) removeWorktree(ctx context.Context, dir string) {
	if _, err := s.git(ctx, "worktree", "remove", "--force", "--force", dir); err != nil {
		s.cfg.Logger.Debug("gitsync: worktree remove", "dir", dir, "err", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		s.cfg.Logger.Warn("gitsync: remove old checkout", "dir", dir, "err", err)
	}
}

// git runs git in the bare repository, once checkRepo has found it ours.
func (s *Syncer) git(ctx context.Context, args ...string) (string, error) {
	if err := s.checkRepo(); err != nil {
		return "", err
	}
	return s.run(ctx, filepath.Join(s.cfg.Root, repoDir), args...)
}

// noHooks is given to every git command: no hook runs (a post-checkout
// hook would at each `worktree add`) and no fsmonitor, whatever a
// repository's config says (command-line settings override it).
var noHooks = []string{"-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"}

// run runs the git binary (no shell) with a timeout, in its own process
// group so a timeout also ends the helpers it started.
func (s *Syncer) run(ctx context.Context, dir string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	full := append([]string(nil), noHooks...)
	if dir != "" {
		full = append(full, "-C", dir)
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, s.cfg.Git, full...)
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=", "SSH_ASKPASS=", "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout bytes.Buffer
	stderr := &tailBuffer{max: maxStderr}
	cmd.Stdout, cmd.Stderr = &limitedWriter{w: &stdout, n: 1 << 20}, stderr
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if ctx.Err() != nil {
			return "", fmt.Errorf("%w: git %s: %w (%s)", ErrGit, args[0], ctx.Err(), msg)
		}
		return "", fmt.Errorf("%w: git %s: %w: %s", ErrGit, args[0], err, msg)
	}
	return stdout.String(), nil
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }

// limitedWriter drops what is written past n bytes.
type limitedWriter struct {
	w interface{ Write([]byte) (int, error) }
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		q := p
		if len(q) > l.n {
			q = q[:l.n]
		}
		l.n -= len(q)
		_, _ = l.w.Write(q)
	}
	return len(p), nil
}

type metrics struct {
	syncs       *prometheus.CounterVec
	commitTime  prometheus.Gauge
	lastSuccess prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "minimesh_gitsync_syncs_total",
			Help: "Git syncs by result: changed (a new commit went live), unchanged, error (the last good checkout stays).",
		}, []string{"result"}),
		commitTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "minimesh_gitsync_commit_timestamp_seconds",
			Help: "Committer time of the live checkout's commit.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "minimesh_gitsync_last_success_timestamp_seconds",
			Help: "When a sync last succeeded.",
		}),
	}
	for _, r := range []string{"changed", "unchanged", "error"} {
		m.syncs.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.syncs, m.commitTime, m.lastSuccess} {
		if err := reg.Register(c); err != nil {
			return metrics{}, fmt.Errorf("gitsync: metrics: %w", err)
		}
	}
	return m, nil
}
