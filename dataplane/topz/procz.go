package topz

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// maxTableLines bounds the lines read from one /proc/<pid>/net table.
const maxTableLines = 1 << 20

// Inspect describes one process from ProcDir: its row, its sockets
// (matched by inode from /proc/<pid>/fd to /proc/<pid>/net/{tcp,tcp6,udp,
// udp6,unix}) and its open files. It reads, never traces. A pid that does
// not exist gives ErrNoProcess.
func (c *Collector) Inspect(ctx context.Context, pid int) (Process, error) {
	if pid <= 0 {
		return Process{}, fmt.Errorf("%w: pid %d", ErrNoProcess, pid)
	}
	if err := c.acquire(ctx); err != nil {
		return Process{}, err
	}
	defer c.release()
	uptime, boot, err := c.boot()
	if err != nil {
		return Process{}, err
	}
	row, st, err := c.row(pid, c.users(), boot)
	if err != nil {
		return Process{}, notFound(pid, err)
	}
	row.CPUPercent = sinceStart(st, uptime)
	p := Process{Row: row, Sockets: []Socket{}, Files: []OpenFile{}}

	fds, truncated, err := c.fds(pid)
	if err != nil {
		p.FDError = fdError(err)
		return p, nil
	}
	p.Truncated = truncated
	// inode -> index in p.Sockets
	want := map[uint64]int{}
	for _, fd := range fds {
		if inode, ok := socketInode(fd.target); ok {
			want[inode] = len(p.Sockets)
			p.Sockets = append(p.Sockets, Socket{FD: fd.fd, Inode: inode, Proto: "other"})
			continue
		}
		p.Files = append(p.Files, OpenFile{FD: fd.fd, Path: sanitize(fd.target, 1024)})
	}
	if len(want) > 0 {
		for _, t := range []struct {
			name string
			udp  bool
		}{{"tcp", false}, {"tcp6", false}, {"udp", true}, {"udp6", true}} {
			c.scanInet(pid, t.name, t.udp, want, p.Sockets)
		}
		c.scanUnix(pid, want, p.Sockets)
	}
	return p, nil
}

type fdEntry struct {
	fd     int
	target string
}

// fds reads /proc/<pid>/fd, sorted by fd, at most MaxEntries.
func (c *Collector) fds(pid int) ([]fdEntry, bool, error) {
	dir := c.path(pid, "fd")
	d, err := os.Open(dir)
	if err != nil {
		return nil, false, err
	}
	defer d.Close()
	var nums []int
	truncated := false
	for {
		names, err := d.Readdirnames(256)
		for _, n := range names {
			if fd, err := strconv.Atoi(n); err == nil {
				nums = append(nums, fd)
			}
		}
		if errors.Is(err, io.EOF) || len(names) == 0 {
			break
		}
		if err != nil {
			return nil, false, err
		}
		if len(nums) > 16*c.cfg.MaxEntries {
			truncated = true
			break
		}
	}
	slices.Sort(nums)
	if len(nums) > c.cfg.MaxEntries {
		nums, truncated = nums[:c.cfg.MaxEntries], true
	}
	out := make([]fdEntry, 0, len(nums))
	for _, fd := range nums {
		target, err := os.Readlink(filepath.Join(dir, strconv.Itoa(fd)))
		if err != nil {
			continue // closed meanwhile
		}
		out = append(out, fdEntry{fd: fd, target: target})
	}
	return out, truncated, nil
}

func fdError(err error) string {
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EACCES) {
		return "permission denied: listing another user's open files needs the same uid or CAP_SYS_PTRACE"
	}
	return err.Error()
}

// socketInode parses "socket:[12345]".
func socketInode(target string) (uint64, bool) {
	s, ok := strings.CutPrefix(target, "socket:[")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "]")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

func (c *Collector) scanLines(pid int, table string, each func(line string)) {
	f, err := os.Open(c.path(pid, filepath.Join("net", table)))
	if err != nil {
		return // no IPv6, or the process exited
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for n := 0; sc.Scan() && n < maxTableLines; n++ {
		if n == 0 {
			continue // header
		}
		each(sc.Text())
	}
}

func (c *Collector) scanInet(pid int, table string, udp bool, want map[uint64]int, socks []Socket) {
	c.scanLines(pid, table, func(line string) {
		s, err := parseInetLine(line, udp)
		if err != nil {
			return
		}
		i, ok := want[s.inode]
		if !ok || s.inode == 0 {
			return
		}
		sk := &socks[i]
		sk.Proto = table
		sk.Local = s.local.String()
		sk.State = s.state
		if s.remote.Addr().IsUnspecified() && s.remote.Port() == 0 {
			sk.Remote = ""
		} else {
			sk.Remote = s.remote.String()
		}
	})
}

func (c *Collector) scanUnix(pid int, want map[uint64]int, socks []Socket) {
	c.scanLines(pid, "unix", func(line string) {
		u, err := parseUnixLine(line)
		if err != nil {
			return
		}
		i, ok := want[u.inode]
		if !ok || u.inode == 0 {
			return
		}
		sk := &socks[i]
		sk.Proto, sk.Type, sk.State, sk.Local = "unix", u.typ, u.state, u.path
	})
}
