package filesync

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"minimesh/certs"
)

// ManifestName is the file, in the synced directory, that lists the files
// this package wrote. Only files it lists are ever removed. Paths whose
// base name starts with ".minimesh-filesync" are reserved.
const ManifestName = ".minimesh-filesync.json"

const (
	reservedPrefix = ".minimesh-filesync"
	maxPathLen     = 1024
	maxNameLen     = 255
	maxDepth       = 32
	dirMode        = 0o755
	defaultMode    = 0o644
	maxManifest    = 8 << 20
)

// File is one desired file: Path is relative to the directory, with "/"
// separators; Mode holds permission bits only (0 means 0644).
type File struct {
	Path    string      `json:"path"`
	Mode    fs.FileMode `json:"mode"`
	Content []byte      `json:"content"`
}

// Config configures a Syncer.
type Config struct {
	// Dir is the shared directory; it must exist. Files are written only
	// beneath it.
	Dir string
	// Reload, if set, tells the app after a Sync that changed something.
	Reload Reload
	// Reserved names directories under Dir that something else owns (git
	// sync's checkout, the app's logs/): a file at or beneath one is refused, so the two
	// never write over each other.
	Reserved []string

	MaxFiles     int   // files per set, default 1000
	MaxFileSize  int64 // bytes per file, default 4 MiB
	MaxTotalSize int64 // bytes per set, default 32 MiB

	// ProcDir is where processes are looked up for a signal reload
	// (default /proc).
	ProcDir string

	Clock      certs.Clock           // default certs.SystemClock
	Logger     *slog.Logger          // default discards
	Registerer prometheus.Registerer // nil leaves the metrics unregistered
}

// Reload says how to tell the app its files changed. Either or both of URL
// and Process may be set.
type Reload struct {
	// URL receives an HTTP POST (empty body) after a change; a response
	// other than 2xx is an error.
	URL string
	// Process is the name of the processes to signal after a change,
	// matched against /proc/<pid>/comm and the base name of argv[0].
	// Signalling a process of another user needs CAP_KILL.
	Process string
	// Signal sent to Process, default SIGHUP.
	Signal syscall.Signal
	// Timeout bounds the HTTP call, default 5s.
	Timeout time.Duration
}

// Validate reports whether the config can be used.
func (c Config) Validate() error {
	if c.Dir == "" {
		return fmt.Errorf("%w: Dir is required", ErrInvalidConfig)
	}
	if c.MaxFiles < 0 || c.MaxFileSize < 0 || c.MaxTotalSize < 0 || c.Reload.Timeout < 0 {
		return fmt.Errorf("%w: negative limit or timeout", ErrInvalidConfig)
	}
	if c.Reload.URL != "" && !strings.HasPrefix(c.Reload.URL, "http://") && !strings.HasPrefix(c.Reload.URL, "https://") {
		return fmt.Errorf("%w: Reload.URL %q: want http:// or https://", ErrInvalidConfig, c.Reload.URL)
	}
	for _, r := range c.Reserved {
		if _, err := CleanPath(r); err != nil {
			return fmt.Errorf("%w: Reserved: %w", ErrInvalidConfig, err)
		}
	}
	if strings.ContainsAny(c.Reload.Process, "/\x00") {
		return fmt.Errorf("%w: Reload.Process %q: a process name, not a path", ErrInvalidConfig, c.Reload.Process)
	}
	return nil
}

// FileStatus is one file the Syncer owns.
type FileStatus struct {
	Path    string    `json:"path"`
	Size    int64     `json:"size"`
	Mode    string    `json:"mode"` // octal, "0644"
	SHA256  string    `json:"sha256"`
	Written time.Time `json:"written"` // when its current content was written
}

// Result is what one Sync did.
type Result struct {
	Written   []string  `json:"written,omitempty"`
	Removed   []string  `json:"removed,omitempty"`
	Unchanged int       `json:"unchanged"`
	At        time.Time `json:"at"`
	// Reloaded is true when a reload was configured, needed and succeeded.
	Reloaded    bool   `json:"reloaded,omitempty"`
	ReloadError string `json:"reload_error,omitempty"`
}

// Changed reports whether the Sync wrote or removed anything.
func (r Result) Changed() bool { return len(r.Written) > 0 || len(r.Removed) > 0 }

// Status is the Syncer's state, for proxy-status.
type Status struct {
	Files      []FileStatus `json:"files"`
	Last       Result       `json:"last"`                 // the last Sync that applied
	LastChange time.Time    `json:"last_change,omitzero"` // when a file was last written or removed
	Error      string       `json:"error,omitempty"`      // why the last Sync failed, if it did
	ErrorAt    time.Time    `json:"error_at,omitzero"`
}

// Syncer applies desired sets of files to a directory. Its methods are safe
// for concurrent use; Syncs are serialized.
type Syncer struct {
	cfg    Config
	client *http.Client
	m      metrics

	mu sync.Mutex // serializes Sync

	smu    sync.Mutex
	status Status
}

// New checks cfg and returns a Syncer. It touches no file until Sync.
func New(cfg Config) (*Syncer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	reserved := make([]string, len(cfg.Reserved))
	for i, r := range cfg.Reserved {
		reserved[i], _ = CleanPath(r) // checked by Validate
	}
	cfg.Reserved = reserved
	if cfg.MaxFiles == 0 {
		cfg.MaxFiles = 1000
	}
	if cfg.MaxFileSize == 0 {
		cfg.MaxFileSize = 4 << 20
	}
	if cfg.MaxTotalSize == 0 {
		cfg.MaxTotalSize = 32 << 20
	}
	if cfg.ProcDir == "" {
		cfg.ProcDir = "/proc"
	}
	if cfg.Reload.Signal == 0 {
		cfg.Reload.Signal = syscall.SIGHUP
	}
	if cfg.Reload.Timeout == 0 {
		cfg.Reload.Timeout = 5 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Syncer{
		cfg: cfg,
		m:   m,
		client: &http.Client{
			Timeout: cfg.Reload.Timeout,
			// Reloads are rare: no idle connections, no proxy from the
			// environment, TLS 1.3 for an https URL.
			Transport: &http.Transport{
				DisableKeepAlives: true,
				TLSClientConfig:   &tls.Config{MinVersion: tls.VersionTLS13},
				ForceAttemptHTTP2: false,
			},
			// A reload URL answers; it does not send us elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// Status returns a copy of the Syncer's state.
func (s *Syncer) Status() Status {
	s.smu.Lock()
	defer s.smu.Unlock()
	st := s.status
	st.Files = slices.Clone(st.Files)
	return st
}

// Sync makes the directory hold exactly the files it owns that are named
// in files: each new or changed file is written to a temporary file beside
// it, fsynced and renamed over the old one, so a reader sees either the old
// or the new content, never a part; files it wrote earlier that files no
// longer names are removed; files it did not write are never removed.
//
// A set with an unsafe or invalid path is refused whole, before anything is
// written, with a *PathError naming the path and the reason: the error to
// NACK with. After a change the configured reload runs. A failed reload
// does not fail Sync — the set was applied, so it is no NACK — but
// Result.ReloadError and Status.Error say why (wrapping ErrReload in the
// log) and minimesh_filesync_syncs_total counts it as reload_error.
func (s *Syncer) Sync(files []File) (Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	res, owned, err := s.sync(files)
	var rerr error
	if err == nil && res.Changed() {
		if rerr = s.reload(); rerr != nil {
			res.ReloadError = rerr.Error()
		} else {
			res.Reloaded = s.cfg.Reload.URL != "" || s.cfg.Reload.Process != ""
		}
	}
	s.record(res, owned, err, rerr)
	return res, err
}

func (s *Syncer) record(res Result, owned []FileStatus, err, reloadErr error) {
	s.smu.Lock()
	defer s.smu.Unlock()
	if err == nil {
		s.status.Files = owned
		s.status.Last = res
		if res.Changed() {
			s.status.LastChange = res.At
		}
		s.m.files.Set(float64(len(owned)))
	}
	switch {
	case err != nil:
		s.status.Error, s.status.ErrorAt = err.Error(), s.cfg.Clock.Now()
	case reloadErr != nil:
		s.status.Error, s.status.ErrorAt = reloadErr.Error(), s.cfg.Clock.Now()
	default:
		s.status.Error, s.status.ErrorAt = "", time.Time{}
	}
	switch {
	case errors.Is(err, ErrUnsafePath), errors.Is(err, ErrInvalidFile):
		s.m.syncs.WithLabelValues("refused").Inc()
	case err != nil:
		s.m.syncs.WithLabelValues("error").Inc()
	case reloadErr != nil:
		s.m.syncs.WithLabelValues("reload_error").Inc()
	case res.Changed():
		s.m.syncs.WithLabelValues("applied").Inc()
	default:
		s.m.syncs.WithLabelValues("unchanged").Inc()
	}
}

// sync applies files and returns what it did and the files it now owns.
func (s *Syncer) sync(files []File) (Result, []FileStatus, error) {
	log := s.cfg.Logger
	res := Result{At: s.cfg.Clock.Now()}
	want, err := s.check(files)
	if err != nil {
		return res, nil, err
	}
	root, err := os.OpenRoot(s.cfg.Dir)
	if err != nil {
		return res, nil, fmt.Errorf("filesync: open dir: %w", err)
	}
	defer root.Close()
	// Every path is checked on disk before anything is written, so a
	// refused set leaves the directory as it was.
	paths := make([]string, 0, len(want))
	for p := range want {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		if err := checkOnDisk(root, p); err != nil {
			return res, nil, err
		}
	}
	old, err := readManifest(root)
	if err != nil {
		// Without the manifest we cannot know what we own; removing
		// nothing is the safe side.
		log.Warn("filesync: manifest unreadable, starting a new one", "err", err)
		old = map[string]FileStatus{}
	}
	// First record every path we are about to own, so a crash half-way
	// never leaves a file we wrote that no manifest names.
	owned := maps(old)
	grew := false
	for _, p := range paths {
		if _, ok := owned[p]; !ok {
			owned[p] = FileStatus{Path: p}
			grew = true
		}
	}
	if grew {
		if err := writeManifest(root, owned); err != nil {
			return res, nil, err
		}
	}
	for _, p := range paths {
		f := want[p]
		changed, err := writeFile(root, p, f)
		if err != nil {
			return res, nil, err
		}
		sum := sha256.Sum256(f.Content)
		st := FileStatus{Path: p, Size: int64(len(f.Content)), Mode: fmt.Sprintf("%04o", uint32(f.Mode)), SHA256: hex.EncodeToString(sum[:])}
		if changed {
			st.Written = res.At
			res.Written = append(res.Written, p)
			log.Info("filesync: wrote", "path", p, "bytes", len(f.Content))
		} else {
			st.Written = old[p].Written
			if st.Written.IsZero() {
				st.Written = res.At
			}
			res.Unchanged++
		}
		owned[p] = st
	}
	var removeErr error
	for _, p := range sortedKeys(old) {
		if _, ok := want[p]; ok {
			continue
		}
		removed, err := removeOwned(root, p)
		if err != nil {
			removeErr = errors.Join(removeErr, err)
			continue // keep owning it; the next Sync retries
		}
		delete(owned, p)
		if removed {
			res.Removed = append(res.Removed, p)
			log.Info("filesync: removed", "path", p)
		} else {
			log.Warn("filesync: not removing a path that is no longer our regular file", "path", p)
		}
	}
	if err := writeManifest(root, owned); err != nil {
		return res, nil, err
	}
	list := make([]FileStatus, 0, len(owned))
	for _, p := range sortedKeys(owned) {
		list = append(list, owned[p])
	}
	if removeErr != nil {
		return res, nil, removeErr
	}
	return res, list, nil
}

// check validates the set lexically and against the limits, and returns it
// keyed by clean path.
func (s *Syncer) check(files []File) (map[string]File, error) {
	if len(files) > s.cfg.MaxFiles {
		return nil, fmt.Errorf("%w: %d files, at most %d", ErrInvalidFile, len(files), s.cfg.MaxFiles)
	}
	want := make(map[string]File, len(files))
	var total int64
	for _, f := range files {
		p, err := CleanPath(f.Path)
		if err != nil {
			return nil, err
		}
		if _, dup := want[p]; dup {
			return nil, &PathError{Path: f.Path, Reason: "named twice", Kind: ErrInvalidFile}
		}
		for _, r := range s.cfg.Reserved {
			if p == r || strings.HasPrefix(p, r+"/") {
				return nil, &PathError{Path: f.Path, Reason: fmt.Sprintf("inside %q, which another part of the sidecar owns (git sync, or the app's logs)", r), Kind: ErrInvalidFile}
			}
		}
		if f.Mode&^fs.ModePerm != 0 {
			return nil, &PathError{Path: f.Path, Reason: fmt.Sprintf("mode %v has bits beyond 0777", f.Mode), Kind: ErrInvalidFile}
		}
		if f.Mode == 0 {
			f.Mode = defaultMode
		}
		size := int64(len(f.Content))
		if size > s.cfg.MaxFileSize {
			return nil, &PathError{Path: f.Path, Reason: fmt.Sprintf("%d bytes, at most %d", size, s.cfg.MaxFileSize), Kind: ErrInvalidFile}
		}
		if total += size; total > s.cfg.MaxTotalSize {
			return nil, &PathError{Path: f.Path, Reason: fmt.Sprintf("the set exceeds %d bytes", s.cfg.MaxTotalSize), Kind: ErrInvalidFile}
		}
		f.Path = p
		want[p] = f
	}
	return want, nil
}

// CleanPath checks a desired path lexically and returns its clean form:
// relative, "/"-separated, no ".." component, no NUL, within length limits,
// not reserved. "a//b" and "a/./b" are accepted as "a/b". It does not look
// at the disk; Sync also refuses paths through a symlink.
func CleanPath(p string) (string, error) {
	refuse := func(kind error, reason string) (string, error) {
		return "", &PathError{Path: p, Reason: reason, Kind: kind}
	}
	switch {
	case p == "":
		return refuse(ErrInvalidFile, "empty path")
	case len(p) > maxPathLen:
		return refuse(ErrInvalidFile, fmt.Sprintf("longer than %d bytes", maxPathLen))
	case strings.IndexByte(p, 0) >= 0:
		return refuse(ErrInvalidFile, "contains a NUL byte")
	case strings.HasPrefix(p, "/"):
		return refuse(ErrUnsafePath, "absolute path")
	}
	var parts []string
	for _, c := range strings.Split(p, "/") {
		switch {
		case c == "..":
			return refuse(ErrUnsafePath, `".." escapes the directory`)
		case c == "" || c == ".":
			continue
		case len(c) > maxNameLen:
			return refuse(ErrInvalidFile, fmt.Sprintf("a name longer than %d bytes", maxNameLen))
		case strings.HasPrefix(c, reservedPrefix):
			return refuse(ErrInvalidFile, fmt.Sprintf("names starting with %q are reserved", reservedPrefix))
		}
		parts = append(parts, c)
	}
	if len(parts) == 0 {
		return refuse(ErrInvalidFile, "names the directory itself")
	}
	if len(parts) > maxDepth {
		return refuse(ErrInvalidFile, fmt.Sprintf("deeper than %d", maxDepth))
	}
	return strings.Join(parts, "/"), nil
}

// checkOnDisk refuses p if a directory on its way or p itself is a
// symlink, or is not what it must be. os.Root already keeps every
// operation beneath the directory; this also refuses symlinks that stay
// inside it, so a path means what it says.
func checkOnDisk(root *os.Root, p string) error {
	parts := strings.Split(p, "/")
	for i := range parts {
		name := strings.Join(parts[:i+1], "/")
		fi, err := root.Lstat(name)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // created by us, below a checked directory
		}
		if err != nil {
			return &PathError{Path: p, Reason: err.Error(), Kind: ErrUnsafePath}
		}
		last := i == len(parts)-1
		switch {
		case fi.Mode()&fs.ModeSymlink != 0 && last:
			return &PathError{Path: p, Reason: "is a symlink", Kind: ErrUnsafePath}
		case fi.Mode()&fs.ModeSymlink != 0:
			return &PathError{Path: p, Reason: fmt.Sprintf("goes through the symlink %q", name), Kind: ErrUnsafePath}
		case !last && !fi.IsDir():
			return &PathError{Path: p, Reason: fmt.Sprintf("%q is not a directory", name), Kind: ErrInvalidFile}
		case last && !fi.Mode().IsRegular():
			return &PathError{Path: p, Reason: fmt.Sprintf("exists and is not a regular file (%v)", fi.Mode().Type()), Kind: ErrInvalidFile}
		}
	}
	return nil
}

// writeFile writes f at p unless it already holds exactly that content and
// mode: temp file beside it, fsync, rename, fsync of the directory.
func writeFile(root *os.Root, p string, f File) (changed bool, err error) {
	if fi, err := root.Lstat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm() == f.Mode && fi.Size() == int64(len(f.Content)) {
		if cur, err := root.ReadFile(p); err == nil && bytes.Equal(cur, f.Content) {
			return false, nil
		}
	}
	dir := path.Dir(p)
	if dir != "." {
		if err := root.MkdirAll(dir, dirMode); err != nil {
			return false, fmt.Errorf("filesync: %q: %w", p, err)
		}
	}
	tmp := path.Join(dir, reservedPrefix+"-tmp-"+rand.Text())
	fh, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.Mode)
	if err != nil {
		return false, fmt.Errorf("filesync: %q: %w", p, err)
	}
	defer func() {
		if err != nil {
			_ = fh.Close()
			_ = root.Remove(tmp)
		}
	}()
	if _, err = fh.Write(f.Content); err != nil {
		return false, fmt.Errorf("filesync: %q: %w", p, err)
	}
	if err = fh.Chmod(f.Mode); err != nil { // the umask may have narrowed it
		return false, fmt.Errorf("filesync: %q: %w", p, err)
	}
	if err = fh.Sync(); err != nil {
		return false, fmt.Errorf("filesync: %q: %w", p, err)
	}
	if err = fh.Close(); err != nil {
		return false, fmt.Errorf("filesync: %q: %w", p, err)
	}
	if err = root.Rename(tmp, p); err != nil {
		return false, fmt.Errorf("filesync: %q: %w", p, err)
	}
	if err := syncDir(root, dir); err != nil {
		return true, fmt.Errorf("filesync: %q: %w", p, err)
	}
	return true, nil
}

// removeOwned removes p if it is still a regular file reached without a
// symlink; removed is false when it was already gone or is something else
// now (then it is left alone and no longer ours).
func removeOwned(root *os.Root, p string) (removed bool, err error) {
	if err := checkOnDisk(root, p); err != nil {
		return false, nil
	}
	fi, err := root.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("filesync: remove %q: %w", p, err)
	}
	if !fi.Mode().IsRegular() {
		return false, nil
	}
	if err := root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("filesync: remove %q: %w", p, err)
	}
	if err := syncDir(root, path.Dir(p)); err != nil {
		return true, fmt.Errorf("filesync: remove %q: %w", p, err)
	}
	return true, nil
}

func syncDir(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

type manifest struct {
	Version int          `json:"version"`
	Files   []FileStatus `json:"files"`
}

func readManifest(root *os.Root) (map[string]FileStatus, error) {
	out := map[string]FileStatus{}
	fi, err := root.Lstat(ManifestName)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxManifest {
		return nil, fmt.Errorf("filesync: manifest is not a regular file under %d bytes", maxManifest)
	}
	b, err := root.ReadFile(ManifestName)
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("filesync: manifest: %w", err)
	}
	if m.Version != 1 {
		return nil, fmt.Errorf("filesync: manifest version %d, want 1", m.Version)
	}
	for _, f := range m.Files {
		// A manifest entry is trusted no more than a desired path.
		p, err := CleanPath(f.Path)
		if err != nil || p != f.Path {
			continue
		}
		out[p] = f
	}
	return out, nil
}

func writeManifest(root *os.Root, owned map[string]FileStatus) error {
	m := manifest{Version: 1, Files: make([]FileStatus, 0, len(owned))}
	for _, p := range sortedKeys(owned) {
		m.Files = append(m.Files, owned[p])
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("filesync: manifest: %w", err)
	}
	if fi, err := root.Lstat(ManifestName); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("filesync: manifest %s is not a regular file", ManifestName)
	}
	if _, err := writeFile(root, ManifestName, File{Path: ManifestName, Mode: 0o600, Content: append(b, '\n')}); err != nil {
		return fmt.Errorf("filesync: manifest: %w", err)
	}
	return nil
}

func maps(m map[string]FileStatus) map[string]FileStatus {
	out := make(map[string]FileStatus, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func sortedKeys(m map[string]FileStatus) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

type metrics struct {
	syncs   *prometheus.CounterVec
	reloads *prometheus.CounterVec
	files   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "minimesh_filesync_syncs_total",
			Help: "File syncs by result: applied, unchanged, refused, error, reload_error.",
		}, []string{"result"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "minimesh_filesync_reloads_total",
			Help: "App reloads after a file change, by method (http, signal) and result (ok, error).",
		}, []string{"method", "result"}),
		files: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "minimesh_filesync_files",
			Help: "Files the sidecar currently owns in the shared directory.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.syncs, m.reloads, m.files} {
		if err := reg.Register(c); err != nil {
			return metrics{}, fmt.Errorf("filesync: metrics: %w", err)
		}
	}
	return m, nil
}
