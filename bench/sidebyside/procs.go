package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// 100 on every Linux this runs on (getconf CLK_TCK).
const clockTicks = 100

// procs owns every child process: logs go to files in dir, and stopAll
// ends each one (SIGTERM, then SIGKILL after 5 s). Children also get
// SIGKILL if this process dies first (Pdeathsig).
type procs struct {
	dir  string
	list []*child
}

type child struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func (p *procs) start(name string, env []string, bin string, args ...string) (*child, error) {
	logPath := filepath.Join(p.dir, name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("sidebyside: start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		lf.Close()
		close(c.done)
	}()
	p.list = append(p.list, c)
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// tail is the end of the child's log, for error messages.
func (c *child) tail() string {
	b, _ := os.ReadFile(c.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func (p *procs) stopAll() {
	for i := len(p.list) - 1; i >= 0; i-- {
		c := p.list[i]
		if c.exited() {
			continue
		}
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
}

// descendants returns pid and every process below it (nginx's workers).
func descendants(pid int) []int {
	parent := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := readStat(n)
		if err != nil {
			continue
		}
		parent[f.ppid] = append(parent[f.ppid], n)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, parent[out[i]]...)
	}
	return out
}

type statFields struct {
	ppid         int
	utime, stime int64
}

// readStat reads ppid, utime and stime from /proc/<pid>/stat; the command
// name in parentheses may hold spaces, so fields are counted after its
// closing parenthesis.
func readStat(pid int) (statFields, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return statFields{}, err
	}
	return parseStat(b)
}

func parseStat(b []byte) (statFields, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return statFields{}, fmt.Errorf("sidebyside: malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state(3) ppid(4) ... utime(14) stime(15).
	if len(f) < 13 {
		return statFields{}, fmt.Errorf("sidebyside: short stat")
	}
	var s statFields
	var err error
	if s.ppid, err = strconv.Atoi(f[1]); err != nil {
		return s, err
	}
	if s.utime, err = strconv.ParseInt(f[11], 10, 64); err != nil {
		return s, err
	}
	if s.stime, err = strconv.ParseInt(f[12], 10, 64); err != nil {
		return s, err
	}
	return s, nil
}

// cpuTicks is the summed utime+stime of pids.
func cpuTicks(pids []int) int64 {
	var t int64
	for _, p := range pids {
		if s, err := readStat(p); err == nil {
			t += s.utime + s.stime
		}
	}
	return t
}

// peakRSS is the summed VmHWM (peak resident set) of pids, in bytes.
func peakRSS(pids []int) int64 {
	var t int64
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		t += parseHWM(string(b))
	}
	return t
}

// resetPeakRSS sets each process's VmHWM back to its current RSS
// (clear_refs 5, Linux 4.0 on; the processes are this bench's children).
func resetPeakRSS(pids []int) error {
	for _, p := range pids {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p), []byte("5"), 0); err != nil {
			return fmt.Errorf("sidebyside: reset peak RSS: %w", err)
		}
	}
	return nil
}

func parseHWM(status string) int64 {
	for _, line := range strings.Split(status, "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// freePort returns a loopback address nothing listens on right now.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitFor polls check every 100 ms until it succeeds, c exits or the
// timeout passes.
func waitFor(ctx context.Context, c *child, what string, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if c != nil && c.exited() {
			return fmt.Errorf("sidebyside: %s exited: %v\n%s", what, err, c.tail())
		}
		if time.Now().After(deadline) {
			msg := ""
			if c != nil {
				msg = "\n" + c.tail()
			}
			return fmt.Errorf("sidebyside: %s not ready after %s: %w%s", what, timeout, err, msg)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// machineBusy is the machine's busy time in clock ticks, summed over CPUs,
// from the first line of /proc/stat (user nice system idle iowait irq
// softirq steal ...): everything but idle and iowait.
func machineBusy() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	return parseBusy(string(b))
}

func parseBusy(stat string) int64 {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:9] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy
}

// switches counts context switches: voluntary (the thread blocked:
// waiting for a socket, a futex, a sleep) and not (the kernel preempted
// it for another thread).
type switches struct{ vol, invol int64 }

func (s switches) sub(o switches) switches { return switches{s.vol - o.vol, s.invol - o.invol} }

// ctxSwitches is pid's context switches summed over every thread
// (/proc/<pid>/task/*/status: a process's own status counts its first
// thread only).
func ctxSwitches(pid int) switches {
	var n switches
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return n
	}
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, e.Name()))
		if err == nil {
			s := parseCtxSwitches(string(b))
			n.vol += s.vol
			n.invol += s.invol
		}
	}
	return n
}

func parseCtxSwitches(status string) switches {
	var n switches
	for _, line := range strings.Split(status, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		c, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "voluntary_ctxt_switches":
			n.vol = c
		case "nonvoluntary_ctxt_switches":
			n.invol = c
		}
	}
	return n
}

// connsTo counts the established TCP connections that pids hold to port
// on loopback: a proxy's connections to the app. Their sockets are found
// by inode in the pids' descriptors and in /proc/net/tcp{,6}.
func connsTo(pids []int, port int) int {
	inodes := map[string]bool{}
	for _, pid := range pids {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			l, err := os.Readlink(filepath.Join(dir, e.Name()))
			if ino, ok := strings.CutPrefix(l, "socket:["); err == nil && ok {
				inodes[strings.TrimSuffix(ino, "]")] = true
			}
		}
	}
	if len(inodes) == 0 {
		return 0
	}
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err == nil {
			n += countConnsTo(string(b), port, inodes)
		}
	}
	return n
}

// countConnsTo counts the lines of a /proc/net/tcp table in state 01
// (established) whose remote port is port and inode one of inodes.
func countConnsTo(table string, port int, inodes map[string]bool) int {
	want := fmt.Sprintf(":%04X", port)
	n := 0
	for _, line := range strings.Split(table, "\n") {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "01" || !strings.HasSuffix(f[2], want) {
			continue
		}
		if inodes[f[9]] {
			n++
		}
	}
	return n
}
