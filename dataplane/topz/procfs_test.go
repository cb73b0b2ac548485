package topz

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

const statLine = "4242 (we(ird) comm) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 7 0 12345 100000000 789 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"

func TestParseStat(t *testing.T) {
	st, err := parseStat([]byte(statLine))
	if err != nil {
		t.Fatal(err)
	}
	want := statInfo{comm: "we(ird) comm", state: "S", ppid: 1, cpuTicks: 300, threads: 7, startTick: 12345, rssPages: 789}
	if st != want {
		t.Errorf("got %+v\nwant %+v", st, want)
	}
	for _, bad := range []string{"", "1 comm S", "1 (x) S 1 2", strings.Replace(statLine, " 250 ", " x ", 1)} {
		if _, err := parseStat([]byte(bad)); !errors.Is(err, ErrParse) {
			t.Errorf("parseStat(%q) = %v", bad, err)
		}
	}
}

func TestParseInetLine(t *testing.T) {
	tests := []struct {
		line          string
		udp           bool
		local, remote string
		state         string
		inode         uint64
	}{
		{"   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 194817 1 0000 100 0 0 10 0",
			false, "127.0.0.1:8080", "0.0.0.0:0", "LISTEN", 194817},
		{"   1: 0100007F:B1C2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 555 1 0000",
			false, "127.0.0.1:45506", "127.0.0.1:8080", "ESTABLISHED", 555},
		{"   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0",
			false, "[::1]:8080", "[::]:0", "LISTEN", 777},
		{"   0: 0000000000000000FFFF00000100007F:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 888 2 0 0",
			true, "127.0.0.1:53", "[::]:0", "UNCONN", 888},
	}
	for _, tt := range tests {
		s, err := parseInetLine(tt.line, tt.udp)
		if err != nil {
			t.Errorf("%q: %v", tt.line, err)
			continue
		}
		if s.local.String() != tt.local || s.remote.String() != tt.remote || s.state != tt.state || s.inode != tt.inode {
			t.Errorf("%q: got %v %v %s %d", tt.line, s.local, s.remote, s.state, s.inode)
		}
	}
	for _, bad := range []string{"", "0: 0100007F:1F90", "0: 0100007G:1F90 00000000:0000 0A a b c d e 1", "0: 0100007F:1F90 00000000:0000 0A a b c d e x"} {
		if _, err := parseInetLine(bad, false); !errors.Is(err, ErrParse) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestParseUnixLine(t *testing.T) {
	tests := []struct {
		line, typ, state, path string
		inode                  uint64
	}{
		{"0000000082b1a6d2: 00000002 00000000 00010000 0001 01 20001 /run/app with space.sock", "stream", "LISTEN", "/run/app with space.sock", 20001},
		{"00000000bc69631a: 00000003 00000000 00000000 0001 03  1679", "stream", "CONNECTED", "", 1679},
		{"00000000bc69631b: 00000002 00000000 00000000 0002 01 1680 @abstract", "dgram", "UNCONNECTED", "@abstract", 1680},
	}
	for _, tt := range tests {
		u, err := parseUnixLine(tt.line)
		if err != nil || u.typ != tt.typ || u.state != tt.state || u.path != tt.path || u.inode != tt.inode {
			t.Errorf("%q: %+v %v", tt.line, u, err)
		}
	}
}

func TestParsePasswd(t *testing.T) {
	users := parsePasswd(strings.NewReader("root:x:0:0:root:/root:/bin/bash\n\n#x:x:1:1\nbad\nnobody:x:65534:65534::/:/sbin/nologin\nevil\x1b[31m:x:7:7::/:/bin/sh\n"))
	if users[0] != "root" || users[65534] != "nobody" || users[7] != "evil?[31m" || len(users) != 3 {
		t.Errorf("%v", users)
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte(statLine))
	f.Add([]byte("1 ((((( R"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseStat(b)
		if err != nil {
			if !errors.Is(err, ErrParse) {
				t.Fatalf("error %v does not wrap ErrParse", err)
			}
			return
		}
		if !strings.Contains(string(b), "("+st.comm+")") {
			t.Fatalf("comm %q is not what the parentheses hold in %q", st.comm, b)
		}
	})
}

func FuzzParseInetLine(f *testing.F) {
	f.Add("   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 194817 1", false)
	f.Add("   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 07 0 0 0 0 0 777", true)
	f.Fuzz(func(t *testing.T, line string, udp bool) {
		s, err := parseInetLine(line, udp)
		if err != nil {
			if !errors.Is(err, ErrParse) {
				t.Fatalf("error %v does not wrap ErrParse", err)
			}
			return
		}
		if !s.local.IsValid() || !s.remote.IsValid() || s.state == "" {
			t.Fatalf("accepted %q as %+v", line, s)
		}
		if !utf8.ValidString(s.state) || strings.ContainsAny(s.state, "\x00\n") {
			t.Fatalf("state %q", s.state)
		}
	})
}

func FuzzParseUnixLine(f *testing.F) {
	f.Add("0000000082b1a6d2: 00000002 00000000 00010000 0001 01 20001 /run/app.sock")
	f.Add("x: 1 2 3 4 5 6")
	f.Fuzz(func(t *testing.T, line string) {
		u, err := parseUnixLine(line)
		if err != nil {
			if !errors.Is(err, ErrParse) {
				t.Fatalf("error %v does not wrap ErrParse", err)
			}
			return
		}
		if strings.ContainsAny(u.path, "\x00\n\r\x1b") || len(u.path) > 512 {
			t.Fatalf("path %q not sanitized", u.path)
		}
	})
}

func FuzzParsePasswd(f *testing.F) {
	f.Add("root:x:0:0:root:/root:/bin/bash\n")
	f.Fuzz(func(t *testing.T, s string) {
		for uid, name := range parsePasswd(strings.NewReader(s)) {
			if uid < 0 || name == "" || len(name) > 32 || strings.ContainsAny(name, "\n\x00") {
				t.Fatalf("uid %d name %q", uid, name)
			}
		}
	})
}
