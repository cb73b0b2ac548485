package logadapter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"minimesh/certs"
	"minimesh/dataplane/logrecord"
)

// Defaults and bounds.
const (
	DefaultPoll         = 250 * time.Millisecond
	DefaultMaxOpenFiles = 32
	// maxDirEntries bounds the entries read from one directory per poll
	// when a glob has a wildcard.
	maxDirEntries = 10000
	// readBudget bounds the bytes read from one file per poll, so one
	// busy file does not starve the others.
	readBudget = 4 << 20
	readBuf    = 64 << 10
)

// Config configures an Adapter.
type Config struct {
	// SharedDir is the pod's shared directory: the globs are relative to
	// it. Required.
	SharedDir string
	// StateDir keeps the read offsets (StateFile); empty keeps none (a
	// restart reads every file from its start).
	StateDir string
	// Sink receives the records (never blocks). Required.
	Sink logrecord.Sink
	// Service, Pod and Identity (called per record) fill the fields.
	Service  string
	Pod      string
	Identity func() string
	// Progress, when set, reports for each sink that keeps what it takes
	// (the output, the log shipper's spool) the records it took (accepted)
	// and has written: offsets are persisted only once every sink has
	// written every record emitted before them (Output.Progress,
	// logship.Shipper.Progress).
	Progress []func() (accepted, written uint64)
	// Poll is how often the files are looked at (default 250ms);
	// PersistEvery how often changed offsets are written (default 1s).
	Poll         time.Duration
	PersistEvery time.Duration
	// ShutdownWait is how long Run, once its context ends, still waits for
	// pending records to complete (default 1s; see Run).
	ShutdownWait time.Duration
	// MaxOpenFiles caps the files followed at once (default 32); more
	// matches wait, counted as skipped{reason="too_many_files"}.
	MaxOpenFiles int
	Clock        certs.Clock
	Logger       *slog.Logger
	Registerer   prometheus.Registerer
}

// Adapter follows the files of the LogAdapters set on it and offers their
// records to the Sink. Set may be called at any time; Run does the work.
type Adapter struct {
	cfg   Config
	specs atomic.Pointer[[]*Spec]
	kick  chan struct{}

	// Run's goroutine only.
	root      *root
	files     map[fileKey]*tailed
	saved     map[fileKey]fileState // offsets loaded at start, not yet resumed
	dirty     bool
	lastSave  time.Time
	enc       encoder
	idBuf     []byte
	buf       []byte
	warned    map[string]bool
	recovered bool
	waiting   *snapshot // offsets waiting for the output (Progress)

	records, truncatedRecs, dropped prometheus.Counter
	skipped                         *prometheus.CounterVec
	open                            prometheus.Gauge
}

// New checks cfg and builds an Adapter.
func New(cfg Config) (*Adapter, error) {
	if cfg.SharedDir == "" {
		return nil, errors.New("logadapter: SharedDir is required (--shared-dir)")
	}
	if cfg.Sink == nil {
		return nil, errors.New("logadapter: Sink is required")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.PersistEvery <= 0 {
		cfg.PersistEvery = time.Second
	}
	if cfg.ShutdownWait <= 0 {
		cfg.ShutdownWait = time.Second
	}
	if cfg.MaxOpenFiles <= 0 {
		cfg.MaxOpenFiles = DefaultMaxOpenFiles
	}
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Identity == nil {
		cfg.Identity = func() string { return "" }
	}
	a := &Adapter{cfg: cfg, kick: make(chan struct{}, 1), files: map[fileKey]*tailed{}, warned: map[string]bool{},
		records: prometheus.NewCounter(prometheus.CounterOpts{Name: "minimesh_proxy_logadapter_records_total",
			Help: "Records the log adapter made from the app's log files."}),
		truncatedRecs: prometheus.NewCounter(prometheus.CounterOpts{Name: "minimesh_proxy_logadapter_truncated_total",
			Help: "Records cut at the LogAdapter's maxRecordBytes."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "minimesh_proxy_logadapter_dropped_total",
			Help: "Records a sink (the output, the shipper) did not take because it was full."}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "minimesh_proxy_logadapter_skipped_total",
			Help: "Matched paths not read, by reason: not_regular (a symbolic link, FIFO, device, socket), too_many_files, error."}, []string{"reason"}),
		open: prometheus.NewGauge(prometheus.GaugeOpts{Name: "minimesh_proxy_logadapter_files",
			Help: "Files the log adapter follows now."}),
	}
	for _, r := range []string{"not_regular", "too_many_files", "error"} {
		a.skipped.WithLabelValues(r)
	}
	if reg := cfg.Registerer; reg != nil {
		var err error
		for _, c := range []*prometheus.Counter{&a.records, &a.truncatedRecs, &a.dropped} {
			if *c, err = register(reg, *c); err != nil {
				return nil, err
			}
		}
		if a.skipped, err = register(reg, a.skipped); err != nil {
			return nil, err
		}
		if a.open, err = register(reg, a.open); err != nil {
			return nil, err
		}
	}
	empty := []*Spec{}
	a.specs.Store(&empty)
	return a, nil
}

// Set replaces the LogAdapters followed (nil or empty: none; files being
// read are read to their end, then closed).
func (a *Adapter) Set(specs []*Spec) {
	s := slices.Clone(specs)
	a.specs.Store(&s)
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Run follows the files until ctx ends, then shuts down (shutdown): the
// records complete by then are emitted, the offsets persisted, and a
// restart neither loses nor repeats a record, nor splits one.
func (a *Adapter) Run(ctx context.Context) error {
	r, err := openRoot(a.cfg.SharedDir)
	if err != nil {
		return fmt.Errorf("logadapter: %w", err)
	}
	a.root = r
	defer r.Close()
	if a.saved, err = loadState(a.cfg.StateDir); err != nil {
		a.cfg.Logger.Warn("log adapter: offsets unreadable, reading the files from their start", "err", err)
	}
	t := time.NewTicker(a.cfg.Poll)
	defer t.Stop()
	for {
		a.poll(false)
		select {
		case <-ctx.Done():
			a.shutdown()
			return nil
		case <-t.C:
		case <-a.kick:
		}
	}
}

// shutdown ends Run: for at most ShutdownWait it goes on as usual while
// records are pending (the app, stopping too, writes its last lines; an
// idle record is emitted after its flushAfter as always), then reads every
// file to its end and persists the offsets. A record still pending then
// (its file got bytes within flushAfter: it may go on) is not emitted: its
// start is the persisted offset, so the next run reads it whole. Nothing
// is lost, repeated, or split by a restart.
func (a *Adapter) shutdown() {
	deadline := time.Now().Add(a.cfg.ShutdownWait)
	a.poll(false)
	for a.pending() && time.Now().Before(deadline) {
		time.Sleep(min(a.cfg.Poll, time.Until(deadline)))
		a.poll(false)
	}
	a.poll(true)
	for k, f := range a.files {
		_ = f.f.Close()
		a.keep(k, f)
	}
	a.dirty = true
	a.persist(true)
}

// pending reports whether a file holds bytes read but not emitted.
func (a *Adapter) pending() bool {
	for _, f := range a.files {
		if f.committed() != f.off {
			return true
		}
	}
	return false
}

// keep moves a closed file's position into saved, so the final persist
// still has it.
func (a *Adapter) keep(k fileKey, f *tailed) {
	if a.saved == nil {
		a.saved = map[fileKey]fileState{}
	}
	for old := range a.saved {
		if len(a.saved) < maxStateFiles {
			break
		}
		delete(a.saved, old)
	}
	a.saved[k] = f.state()
}

func (t *tailed) state() fileState {
	t.fingerprint()
	return fileState{Dev: t.key.Dev, Ino: t.key.Ino, Gen: t.gen, Offset: t.committed(), Head: t.head, HeadLen: t.headLen,
		SkipLine: t.skipLine && !t.haveRec && len(t.line) == 0,
		SkipCont: t.skipCont && !t.haveRec, Path: t.path}
}

// poll matches the globs, follows new files, reads every file, emits
// idle records and closes files no glob matches any more once they are
// read to their end. final reads to the end and closes nothing.
func (a *Adapter) poll(final bool) {
	now := a.cfg.Clock.Now()
	specs := *a.specs.Load()
	for _, f := range a.files {
		f.matched = false
	}
	seen := map[string]bool{}
	for _, sp := range specs {
		for _, g := range sp.globs {
			for _, p := range a.expand(g) {
				if seen[p] {
					continue
				}
				seen[p] = true
				a.track(sp, p, now)
			}
		}
	}
	if !a.recovered && len(specs) > 0 {
		a.recover(specs, now)
		a.recovered = true
	}
	// Files no longer matched (renamed away by a rotation, or their
	// LogAdapter removed) first: their end comes before the new file's
	// start.
	order := make([]*tailed, 0, len(a.files))
	for _, f := range a.files {
		order = append(order, f)
	}
	slices.SortFunc(order, func(x, y *tailed) int {
		if x.matched != y.matched {
			if !x.matched {
				return -1
			}
			return 1
		}
		return strings.Compare(x.path, y.path)
	})
	// The app has moved on to the new file when it has new bytes: a file
	// renamed away and read to its end then has its last record complete.
	movedOn := map[*Spec]bool{}
	for _, f := range order {
		var st unix.Stat_t
		if f.matched && unix.Fstat(int(f.f.Fd()), &st) == nil && st.Size > f.off {
			movedOn[f.spec] = true
		}
	}
	for _, f := range order {
		got := a.read(f, now)
		if (!got && now.Sub(f.lastData) >= f.spec.flushAfter) || (!f.matched && f.atEOF && movedOn[f.spec]) {
			before := f.committed()
			f.flush(a.emit)
			if f.committed() != before {
				a.dirty = true
			}
		}
		if final {
			continue
		}
		idle := now.Sub(f.lastData) >= max(f.spec.flushAfter, 2*a.cfg.Poll)
		if f.failed || (!f.matched && !got && idle) {
			f.flush(a.emit)
			// A file still linked keeps its position: matched again (its
			// LogAdapter back), it is not read twice.
			var st unix.Stat_t
			if !f.failed && unix.Fstat(int(f.f.Fd()), &st) == nil && st.Nlink > 0 {
				a.keep(f.key, f)
			}
			_ = f.f.Close()
			delete(a.files, f.key)
			a.dirty = true
		}
	}
	a.open.Set(float64(len(a.files)))
	if !final {
		a.persist(false)
	}
}

// recover finds the files whose offsets were saved but that no glob
// matches now: rotated away while the proxy was down (app.log renamed to
// app.log.1). Each is looked for by inode in the directory it was in, and
// read to its end; offsets of files gone are forgotten.
func (a *Adapter) recover(specs []*Spec, now time.Time) {
	for k, s := range a.saved {
		delete(a.saved, k)
		if _, ok := a.files[k]; ok || len(a.files) >= a.cfg.MaxOpenFiles {
			continue
		}
		sp := specFor(specs, s.Path)
		if sp == nil {
			continue
		}
		dir := path.Dir(s.Path)
		for _, name := range a.list(dir) {
			p := join(strings.TrimPrefix(dir, "."), name)
			st, err := a.root.lstatBeneath(p)
			if err != nil || st.Ino != k.Ino || uint64(st.Dev) != k.Dev || st.Mode&unix.S_IFMT != unix.S_IFREG {
				continue
			}
			fh, st, err := a.root.openRegular(p)
			if err != nil || st.Ino != k.Ino {
				if fh != nil {
					_ = fh.Close()
				}
				break
			}
			t := &tailed{key: k, f: fh, path: p, spec: sp, lastData: now}
			t.resume(s, st.Size)
			a.files[k] = t
			a.dirty = true
			break
		}
	}
}

// specFor is the first LogAdapter with a glob in p's directory.
func specFor(specs []*Spec, p string) *Spec {
	for _, sp := range specs {
		for _, g := range sp.globs {
			if ok, _ := path.Match(path.Dir(g), path.Dir(p)); ok {
				return sp
			}
		}
	}
	return nil
}

// track follows path p (relative) if it is a regular file not followed
// yet.
func (a *Adapter) track(sp *Spec, p string, now time.Time) {
	st, err := a.root.lstatBeneath(p)
	if err != nil {
		a.skip(p, err)
		return
	}
	k := fileKey{uint64(st.Dev), st.Ino}
	if f, ok := a.files[k]; ok {
		f.matched, f.path, f.spec = true, p, sp
		return
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		a.skip(p, fmt.Errorf("%s: %w (%s)", p, errNotRegular, typeName(uint32(st.Mode))))
		return
	}
	if len(a.files) >= a.cfg.MaxOpenFiles {
		a.skipped.WithLabelValues("too_many_files").Inc()
		a.warnOnce(p, "log adapter: too many files open, this one waits", "file", p, "max", a.cfg.MaxOpenFiles)
		return
	}
	fh, st, err := a.root.openRegular(p)
	if err != nil {
		a.skip(p, err)
		return
	}
	k = fileKey{uint64(st.Dev), st.Ino}
	if f, ok := a.files[k]; ok { // replaced between lstat and open
		_ = fh.Close()
		f.matched, f.path = true, p
		return
	}
	t := &tailed{key: k, f: fh, path: p, spec: sp, matched: true, lastData: now}
	if s, ok := a.saved[k]; ok {
		t.resume(s, st.Size)
		delete(a.saved, k)
	}
	a.files[k] = t
	a.dirty = true
	delete(a.warned, p)
}

func (a *Adapter) skip(p string, err error) {
	if errors.Is(err, errNotRegular) {
		a.skipped.WithLabelValues("not_regular").Inc()
		a.warnOnce(p, "log adapter: not following a path that is not a regular file", "file", p, "err", err)
		return
	}
	if errors.Is(err, unix.ENOENT) {
		return // gone between the glob and the open
	}
	a.skipped.WithLabelValues("error").Inc()
	a.warnOnce(p, "log adapter: cannot open", "file", p, "err", err)
}

func (a *Adapter) warnOnce(p, msg string, args ...any) {
	if a.warned[p] {
		return
	}
	if len(a.warned) > 1000 {
		clear(a.warned)
	}
	a.warned[p] = true
	a.cfg.Logger.Warn(msg, args...)
}

// read reads what f has beyond its offset (at most readBudget); it
// reports whether any bytes came.
func (a *Adapter) read(f *tailed, now time.Time) bool {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.f.Fd()), &st); err != nil {
		f.failed = true
		return false
	}
	if st.Size < f.off {
		f.truncated(a.emit)
		a.dirty = true
	}
	if a.buf == nil {
		a.buf = make([]byte, readBuf)
	}
	got := false
	defer func() { f.atEOF = f.off >= st.Size }()
	for budget := readBudget; budget > 0 && f.off < st.Size; {
		n, err := f.f.ReadAt(a.buf[:min(len(a.buf), budget)], f.off)
		if n > 0 {
			got = true
			budget -= n
			f.feed(a.buf[:n], a.emit)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			a.cfg.Logger.Warn("log adapter: read failed", "file", f.path, "err", err)
			f.failed = true
			break
		}
		if n == 0 {
			break
		}
	}
	if got {
		f.lastData = now
		a.dirty = true
	}
	return got
}

// emit builds one record and offers it to the sink.
func (a *Adapter) emit(f *tailed, text []byte, start int64, truncated bool) {
	a.idBuf = appendRecordID(a.idBuf[:0], f.key.Ino, f.gen, start)
	m := recordMeta{id: a.idBuf, service: a.cfg.Service, pod: a.cfg.Pod, file: f.path, truncated: truncated, time: a.cfg.Clock.Now()}
	if f.spec.fields[1] {
		m.identity = a.cfg.Identity()
	}
	rec := a.enc.encode(f.spec, text, &m)
	a.records.Inc()
	if truncated {
		a.truncatedRecs.Inc()
	}
	if !a.cfg.Sink.Offer(rec) {
		a.dropped.Inc()
	}
}

// persist writes the offsets if they changed, at most every
// PersistEvery (force: now, at shutdown). With Config.Progress, offsets
// are written only once the output has written every record emitted
// before them (a snapshot waits for it), so a SIGKILL cannot lose a
// record still queued for stdout.
func (a *Adapter) persist(force bool) {
	if a.cfg.StateDir == "" {
		return
	}
	now := a.cfg.Clock.Now()
	if p := a.waiting; p != nil && a.caughtUp(p.accepted) {
		a.save(p.files)
		a.waiting = nil
	}
	if !a.dirty || (!force && (now.Sub(a.lastSave) < a.cfg.PersistEvery || a.waiting != nil)) {
		return
	}
	snap := &snapshot{files: a.states(), accepted: a.accepted()}
	a.dirty, a.lastSave = false, now
	if force {
		// Shutdown: the output is still running; give it a moment.
		for deadline := time.Now().Add(2 * time.Second); !a.caughtUp(snap.accepted) && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if a.caughtUp(snap.accepted) {
		a.save(snap.files)
		a.waiting = nil
		return
	}
	if !force {
		a.waiting = snap
	}
}

// snapshot is offsets waiting for the sinks to write what came before.
type snapshot struct {
	files    []fileState
	accepted []uint64 // per Config.Progress
}

// accepted is what each sink of Config.Progress has taken so far.
func (a *Adapter) accepted() []uint64 {
	out := make([]uint64, len(a.cfg.Progress))
	for i, p := range a.cfg.Progress {
		out[i], _ = p()
	}
	return out
}

// caughtUp reports whether every sink has written what it had taken when
// accepted was read.
func (a *Adapter) caughtUp(accepted []uint64) bool {
	for i, p := range a.cfg.Progress {
		if _, w := p(); w < accepted[i] {
			return false
		}
	}
	return true
}

func (a *Adapter) states() []fileState {
	var out []fileState
	for _, f := range a.files {
		out = append(out, f.state())
	}
	// Offsets loaded but not resumed yet (a file not matched this run)
	// are kept, within the bound.
	for k, s := range a.saved {
		if _, ok := a.files[k]; !ok && len(out) < maxStateFiles {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(x, y fileState) int { return strings.Compare(x.Path, y.Path) })
	return out
}

func (a *Adapter) save(files []fileState) {
	if err := saveState(a.cfg.StateDir, files); err != nil {
		a.cfg.Logger.Warn("log adapter: cannot save offsets", "err", err)
		a.dirty = true
	}
}

// expand lists the paths matching glob g (relative, '/'-separated),
// reading each directory on the way without following symbolic links.
func (a *Adapter) expand(g string) []string {
	parts := strings.Split(g, "/")
	paths := []string{""}
	for i, part := range parts {
		last := i == len(parts)-1
		var next []string
		for _, dir := range paths {
			if !hasMeta(part) {
				next = append(next, join(dir, part))
				continue
			}
			for _, name := range a.list(dir) {
				if ok, _ := path.Match(part, name); ok && (last || name[0] != '.' || part[0] == '.') {
					next = append(next, join(dir, name))
				}
			}
			if len(next) > maxDirEntries {
				break
			}
		}
		if len(next) > maxDirEntries {
			next = next[:maxDirEntries]
		}
		paths = next
	}
	slices.Sort(paths)
	return paths
}

func (a *Adapter) list(dir string) []string {
	if dir == "" {
		dir = "."
	}
	d, err := a.root.open(dir, true)
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(maxDirEntries)
	return names
}

func hasMeta(s string) bool { return strings.ContainsAny(s, `*?[\`) }

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// register registers c, or returns the collector already registered
// under its name (two sidecars in one test share a registry).
func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if e, ok := are.ExistingCollector.(T); ok {
				return e, nil
			}
		}
		return c, err
	}
	return c, nil
}
