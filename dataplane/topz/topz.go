package topz

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	wire "minimesh/api/topz"
	"minimesh/certs"
)

// Config configures a Collector. The zero value reads /proc and
// /etc/passwd and samples CPU over 200ms.
type Config struct {
	ProcDir    string // default /proc
	PasswdFile string // default /etc/passwd; a uid it does not name shows as the number
	// SampleInterval is the window CPU % is measured over: Snapshot reads
	// every process twice, this far apart (default 200ms). Negative means
	// no sampling: CPU % is then the average since each process started.
	SampleInterval time.Duration
	MaxProcesses   int // rows per Snapshot, default 2000
	MaxEntries     int // sockets and files per Inspect, default 1000
	// MaxConcurrent bounds Snapshots and Inspects running at once
	// (default 2); more wait for a slot or their context.
	MaxConcurrent int

	Clock  certs.Clock  // default certs.SystemClock; stamps Table.Time
	Logger *slog.Logger // default discards
}

// Validate reports whether the config can be used.
func (c Config) Validate() error {
	if c.MaxProcesses < 0 || c.MaxEntries < 0 || c.MaxConcurrent < 0 {
		return fmt.Errorf("%w: negative limit", ErrInvalidConfig)
	}
	return nil
}

// The answers' types are the wire form of the topz and procz queries,
// which meshctl decodes and prints: they live in api/topz.
type (
	// Table is one Snapshot: the processes visible in ProcDir.
	Table = wire.Table
	// Row is one process; see api/topz.
	Row = wire.Row
	// Process is one process in detail (Inspect), each list at most
	// MaxEntries long.
	Process = wire.Process
	// Socket is one open socket of a process.
	Socket = wire.Socket
	// OpenFile is an open file descriptor that is not a socket.
	OpenFile = wire.OpenFile
)

// Collector reads processes from /proc. It keeps no state between calls
// and is safe for concurrent use.
type Collector struct {
	cfg Config
	sem chan struct{}
}

// New checks cfg and returns a Collector.
func New(cfg Config) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ProcDir == "" {
		cfg.ProcDir = "/proc"
	}
	if cfg.PasswdFile == "" {
		cfg.PasswdFile = "/etc/passwd"
	}
	if cfg.SampleInterval == 0 {
		cfg.SampleInterval = 200 * time.Millisecond
	}
	if cfg.MaxProcesses == 0 {
		cfg.MaxProcesses = 2000
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = 1000
	}
	if cfg.MaxConcurrent == 0 {
		cfg.MaxConcurrent = 2
	}
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Collector{cfg: cfg, sem: make(chan struct{}, cfg.MaxConcurrent)}, nil
}

var defaultCollector, _ = New(Config{})

// Snapshot lists the processes in /proc with the default Config.
func Snapshot(ctx context.Context) (Table, error) { return defaultCollector.Snapshot(ctx) }

// Inspect describes one process in /proc with the default Config.
func Inspect(pid int) (Process, error) { return defaultCollector.Inspect(context.Background(), pid) }

func (c *Collector) acquire(ctx context.Context) error {
	select {
	case c.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("topz: waiting for a slot: %w", ctx.Err())
	}
}

func (c *Collector) release() { <-c.sem }

// Snapshot lists the processes visible in ProcDir, sorted by PID. It reads
// every process twice, SampleInterval apart, to measure CPU %; a process
// seen only the second time gets its average since start.
func (c *Collector) Snapshot(ctx context.Context) (Table, error) {
	if err := c.acquire(ctx); err != nil {
		return Table{}, err
	}
	defer c.release()
	pids, truncated, err := c.pids()
	if err != nil {
		return Table{}, err
	}
	var before map[int]uint64
	var t0 time.Time
	if c.cfg.SampleInterval > 0 {
		before = make(map[int]uint64, len(pids))
		t0 = time.Now()
		for _, pid := range pids {
			if b, err := readFileLimit(c.path(pid, "stat"), 4096); err == nil {
				if st, err := parseStat(b); err == nil {
					before[pid] = st.cpuTicks
				}
			}
		}
		timer := time.NewTimer(c.cfg.SampleInterval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return Table{}, fmt.Errorf("topz: %w", ctx.Err())
		case <-timer.C:
		}
	}
	pids2, truncated2, err := c.pids()
	if err != nil {
		return Table{}, err
	}
	window := time.Since(t0).Seconds()
	uptime, boot, err := c.boot()
	if err != nil {
		return Table{}, err
	}
	users := c.users()
	tab := Table{Time: c.cfg.Clock.Now(), Processes: make([]Row, 0, len(pids2)), Truncated: truncated || truncated2}
	if c.cfg.SampleInterval > 0 {
		tab.CPUWindowSeconds = window
	}
	for _, pid := range pids2 {
		row, st, err := c.row(pid, users, boot)
		if err != nil {
			continue // exited meanwhile
		}
		if prev, ok := before[pid]; ok && window > 0 && st.cpuTicks >= prev {
			row.CPUPercent = float64(st.cpuTicks-prev) / clockTicks / window * 100
		} else {
			row.CPUPercent = sinceStart(st, uptime)
		}
		tab.Processes = append(tab.Processes, row)
	}
	return tab, nil
}

func sinceStart(st statInfo, uptime float64) float64 {
	alive := uptime - float64(st.startTick)/clockTicks
	if alive <= 0 {
		return 0
	}
	return float64(st.cpuTicks) / clockTicks / alive * 100
}

// pids lists the numeric entries of ProcDir, sorted, at most MaxProcesses.
func (c *Collector) pids() ([]int, bool, error) {
	d, err := os.Open(c.cfg.ProcDir)
	if err != nil {
		return nil, false, fmt.Errorf("topz: %w", err)
	}
	defer d.Close()
	var pids []int
	for {
		names, err := d.Readdirnames(1024)
		for _, n := range names {
			if pid, err := strconv.Atoi(n); err == nil && pid > 0 {
				pids = append(pids, pid)
			}
		}
		if errors.Is(err, io.EOF) || len(names) == 0 {
			break
		}
		if err != nil {
			return nil, false, fmt.Errorf("topz: %w", err)
		}
		if len(pids) > 4*c.cfg.MaxProcesses+4096 {
			break // enough to fill the table; the rest is cut anyway
		}
	}
	slices.Sort(pids)
	if len(pids) > c.cfg.MaxProcesses {
		return pids[:c.cfg.MaxProcesses], true, nil
	}
	return pids, false, nil
}

// boot returns the uptime and the boot time, for process start times.
func (c *Collector) boot() (float64, time.Time, error) {
	b, err := readFileLimit(filepath.Join(c.cfg.ProcDir, "uptime"), 256)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("topz: %w", err)
	}
	up, err := parseUptime(b)
	if err != nil {
		return 0, time.Time{}, err
	}
	return up, time.Now().Add(-time.Duration(up * float64(time.Second))), nil
}

func (c *Collector) users() map[int]string {
	f, err := os.Open(c.cfg.PasswdFile)
	if err != nil {
		c.cfg.Logger.Debug("topz: no passwd file; users show as numbers", "err", err)
		return nil
	}
	defer f.Close()
	return parsePasswd(io.LimitReader(f, 4<<20))
}

func (c *Collector) path(pid int, name string) string {
	return filepath.Join(c.cfg.ProcDir, strconv.Itoa(pid), name)
}

// row reads one process; CPUPercent is left for the caller.
func (c *Collector) row(pid int, users map[int]string, boot time.Time) (Row, statInfo, error) {
	b, err := readFileLimit(c.path(pid, "stat"), 4096)
	if err != nil {
		return Row{}, statInfo{}, err
	}
	st, err := parseStat(b)
	if err != nil {
		return Row{}, statInfo{}, err
	}
	row := Row{
		PID: pid, PPID: st.ppid, Command: sanitize(st.comm, 64), State: st.state,
		RSSBytes: st.rssPages * int64(os.Getpagesize()), Threads: st.threads, UID: -1, FDs: -1,
		Started: boot.Add(time.Duration(st.startTick) * (time.Second / clockTicks)).UTC().Truncate(time.Second),
	}
	if b, err := readFileLimit(c.path(pid, "status"), 64<<10); err == nil {
		if uid, err := parseStatusUID(b); err == nil {
			row.UID = uid
		}
	}
	row.User = strconv.Itoa(row.UID)
	if name, ok := users[row.UID]; ok {
		row.User = name
	}
	if b, err := readFileLimit(c.path(pid, "cmdline"), 4096); err == nil {
		row.Args = cmdline(b, 512)
	}
	if n, err := countDir(c.path(pid, "fd"), 1<<20); err == nil {
		row.FDs = n
	}
	return row, st, nil
}

// countDir counts a directory's entries, reading at most limit of them.
func countDir(name string, limit int) (int, error) {
	d, err := os.Open(name)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	n := 0
	for n < limit {
		names, err := d.Readdirnames(1024)
		n += len(names)
		if errors.Is(err, io.EOF) || len(names) == 0 {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// notFound maps a missing /proc/<pid> to ErrNoProcess.
func notFound(pid int, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: pid %d", ErrNoProcess, pid)
	}
	return fmt.Errorf("topz: pid %d: %w", pid, err)
}
