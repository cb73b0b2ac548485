package topz

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"minimesh/internal/redact"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat.
// The kernel ABI fixes it at 100 on every architecture Go runs on Linux.
const clockTicks = 100

// statInfo is what topz needs from /proc/<pid>/stat.
type statInfo struct {
	comm      string
	state     string
	ppid      int
	cpuTicks  uint64 // utime + stime
	threads   int
	startTick uint64 // since boot
	rssPages  int64
}

// parseStat parses /proc/<pid>/stat. The command is in parentheses and may
// itself hold spaces and parentheses, so the fields start after the last
// ')'.
func parseStat(b []byte) (statInfo, error) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return statInfo{}, fmt.Errorf("%w: stat: no command", ErrParse)
	}
	f := strings.Fields(string(b[end+1:]))
	// f[0] is field 3 (state); field n is f[n-3].
	if len(f) < 22 {
		return statInfo{}, fmt.Errorf("%w: stat: %d fields", ErrParse, len(f)+2)
	}
	var s statInfo
	s.comm = string(b[open+1 : end])
	s.state = f[0]
	var err error
	num := func(i int) uint64 {
		if err != nil {
			return 0
		}
		var v uint64
		v, err = strconv.ParseUint(f[i-3], 10, 64)
		return v
	}
	s.ppid = int(num(4))
	s.cpuTicks = num(14) + num(15)
	s.threads = int(num(20))
	s.startTick = num(22)
	rss, rerr := strconv.ParseInt(f[24-3], 10, 64)
	if err != nil || rerr != nil {
		return statInfo{}, fmt.Errorf("%w: stat: %w", ErrParse, errors.Join(err, rerr))
	}
	s.rssPages = rss
	return s, nil
}

// parseStatusUID returns the real user ID from /proc/<pid>/status.
func parseStatusUID(b []byte) (int, error) {
	for line := range bytes.Lines(b) {
		rest, ok := bytes.CutPrefix(line, []byte("Uid:"))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) == 0 {
			break
		}
		uid, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("%w: status Uid: %w", ErrParse, err)
		}
		return int(uid), nil
	}
	return 0, fmt.Errorf("%w: status: no Uid line", ErrParse)
}

// parseUptime returns the seconds since boot from /proc/uptime.
func parseUptime(b []byte) (float64, error) {
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("%w: uptime", ErrParse)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%w: uptime %q", ErrParse, f[0])
	}
	return v, nil
}

// parsePasswd maps user IDs to names from an /etc/passwd file; malformed
// lines are skipped and the first name of a uid wins.
func parsePasswd(r io.Reader) map[int]string {
	users := map[int]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.SplitN(line, ":", 4)
		if len(f) < 4 || f[0] == "" {
			continue
		}
		uid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			continue
		}
		if _, dup := users[int(uid)]; !dup {
			users[int(uid)] = sanitize(f[0], 32)
		}
	}
	return users
}

// cmdline turns /proc/<pid>/cmdline (NUL-separated) into one line, the
// values of secret flags redacted.
func cmdline(b []byte, max int) string {
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return ""
	}
	// Secrets out before anything is shown or cut (redact.Args: --token=X,
	// --token X, --password, NAME_SECRET=X, user:pass@ in URLs).
	argv := redact.Args(strings.Split(string(b), "\x00"))
	return sanitize(strings.Join(argv, " "), max)
}

// sanitize cuts s to max bytes and replaces control and invalid bytes with
// '?', so names are safe in a table and a log.
func sanitize(s string, max int) string {
	if len(s) > max {
		s = s[:max]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == 0xfffd || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

var tcpStates = map[string]string{
	"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
	"05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
	"09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING", "0C": "NEW_SYN_RECV",
}

var udpStates = map[string]string{"01": "ESTABLISHED", "07": "UNCONN"}

// inetSocket is one line of /proc/<pid>/net/{tcp,tcp6,udp,udp6}.
type inetSocket struct {
	local, remote netip.AddrPort
	state         string
	inode         uint64
}

// parseInetLine parses a data line of a tcp/udp table; udp selects the
// state names.
func parseInetLine(line string, udp bool) (inetSocket, error) {
	f := strings.Fields(line)
	if len(f) < 10 {
		return inetSocket{}, fmt.Errorf("%w: socket line: %d fields", ErrParse, len(f))
	}
	local, err := parseHexAddr(f[1])
	if err != nil {
		return inetSocket{}, err
	}
	remote, err := parseHexAddr(f[2])
	if err != nil {
		return inetSocket{}, err
	}
	inode, err := strconv.ParseUint(f[9], 10, 64)
	if err != nil {
		return inetSocket{}, fmt.Errorf("%w: socket inode %q", ErrParse, f[9])
	}
	states := tcpStates
	if udp {
		states = udpStates
	}
	state, ok := states[strings.ToUpper(f[3])]
	if !ok {
		state = "0x" + sanitize(f[3], 4)
	}
	return inetSocket{local: local, remote: remote, state: state, inode: inode}, nil
}

// parseHexAddr parses "0100007F:1F90": the address as the kernel's 32-bit
// words, each printed in host byte order, then the port in hex.
func parseHexAddr(s string) (netip.AddrPort, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok || (len(h) != 8 && len(h) != 32) || len(p) != 4 {
		return netip.AddrPort{}, fmt.Errorf("%w: socket address %q", ErrParse, s)
	}
	raw, err := hex.DecodeString(h)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: socket address %q", ErrParse, s)
	}
	for i := 0; i < len(raw); i += 4 {
		w := binary.BigEndian.Uint32(raw[i:])
		binary.NativeEndian.PutUint32(raw[i:], w)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: socket port %q", ErrParse, s)
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}

// unixSocket is one line of /proc/<pid>/net/unix.
type unixSocket struct {
	typ   string
	state string
	inode uint64
	path  string
}

var unixTypes = map[string]string{"0001": "stream", "0002": "dgram", "0005": "seqpacket"}
var unixStates = map[string]string{"01": "UNCONNECTED", "02": "CONNECTING", "03": "CONNECTED", "04": "DISCONNECTING"}

// parseUnixLine parses a data line of /proc/<pid>/net/unix:
// "Num RefCount Protocol Flags Type St Inode [Path]".
func parseUnixLine(line string) (unixSocket, error) {
	f := strings.Fields(line)
	if len(f) < 7 {
		return unixSocket{}, fmt.Errorf("%w: unix line: %d fields", ErrParse, len(f))
	}
	inode, err := strconv.ParseUint(f[6], 10, 64)
	if err != nil {
		return unixSocket{}, fmt.Errorf("%w: unix inode %q", ErrParse, f[6])
	}
	flags, err := strconv.ParseUint(f[3], 16, 32)
	if err != nil {
		return unixSocket{}, fmt.Errorf("%w: unix flags %q", ErrParse, f[3])
	}
	u := unixSocket{inode: inode, typ: unixTypes[f[4]], state: unixStates[f[5]]}
	if u.typ == "" {
		u.typ = "0x" + sanitize(f[4], 4)
	}
	if flags&0x10000 != 0 { // __SO_ACCEPTCON: a listening socket
		u.state = "LISTEN"
	}
	if len(f) > 7 {
		// The path is the rest of the line; it may hold spaces.
		rest := line
		for range 7 {
			rest = strings.TrimLeft(rest, " \t")
			i := strings.IndexAny(rest, " \t")
			if i < 0 {
				rest = ""
				break
			}
			rest = rest[i:]
		}
		u.path = sanitize(strings.TrimSpace(rest), 512)
	}
	return u, nil
}

// readFileLimit reads at most limit bytes of a small /proc file.
func readFileLimit(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}
