package topz_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"minimesh/api/topz"
)

// meshctl top and procz print what a proxy answered: a hostile one's
// strings are escaped in the table, and make no row of their own.
func TestTablesEscapeCells(t *testing.T) {
	var b strings.Builder
	topz.WriteTable(&b, topz.Table{Processes: []topz.Row{{PID: 7, User: "\x1b[2J", Args: "app\n1  root  0.0  0B  1  0  S  fake\u202e", State: "S"}}})
	topz.WriteProcess(&b, topz.Process{Row: topz.Row{PID: 7, Args: "x"}, Files: []topz.OpenFile{{FD: 3, Path: "/tmp/\x1b]0;t\x07"}}, Sockets: []topz.Socket{{Proto: "tcp", Local: "\x1b[1A:1"}}, FDError: "no\x1b[0m"})
	out := b.String()
	if strings.ContainsAny(out, "\x1b\x07\u202e") {
		t.Errorf("raw control characters:\n%q", out)
	}
	for _, want := range []string{`\x1b[2J`, `app\x0a1  root`, `fake\u202e`, `/tmp/\x1b]0;t\x07`, `\x1b[1A:1`, `# no\x1b[0m`} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n"); n != 3+12 {
		t.Errorf("%d lines, want 15 (a value made a line of its own?):\n%s", n, out)
	}
}

// The JSON field names are the wire contract between mesh-proxy and
// meshctl: a proxy's answer, as it is sent, decodes into every field.
func TestWireNames(t *testing.T) {
	const answer = `{"pid":9,"ppid":1,"uid":1337,"user":"mesh","command":"mesh-proxy","args":"mesh-proxy --service web",
"state":"S","cpu_percent":1.5,"rss_bytes":2048,"threads":7,"fds":12,"started":"2030-01-02T03:04:05Z",
"sockets":[{"fd":3,"inode":77,"proto":"unix","type":"stream","local":"@x","remote":"/run/y","state":"CONNECTED"}],
"files":[{"fd":4,"path":"/etc/hosts"}],"truncated":true,"fd_error":"none"}`
	dec := json.NewDecoder(strings.NewReader(answer))
	dec.DisallowUnknownFields()
	var p topz.Process
	if err := dec.Decode(&p); err != nil {
		t.Fatal(err)
	}
	want := topz.Process{
		Row: topz.Row{PID: 9, PPID: 1, UID: 1337, User: "mesh", Command: "mesh-proxy", Args: "mesh-proxy --service web", State: "S",
			CPUPercent: 1.5, RSSBytes: 2048, Threads: 7, FDs: 12, Started: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)},
		Sockets:   []topz.Socket{{FD: 3, Inode: 77, Proto: "unix", Type: "stream", Local: "@x", Remote: "/run/y", State: "CONNECTED"}},
		Files:     []topz.OpenFile{{FD: 4, Path: "/etc/hosts"}},
		Truncated: true,
		FDError:   "none",
	}
	b1, _ := json.Marshal(p)
	b2, _ := json.Marshal(want)
	if string(b1) != string(b2) {
		t.Errorf("decoded\n%s\nwant\n%s", b1, b2)
	}

	const table = `{"time":"2030-01-02T03:04:05Z","cpu_window_seconds":0.2,"processes":[{"pid":1,"user":"root","command":"pause","args":"","state":"S","fds":-1}],"truncated":true}`
	dec = json.NewDecoder(strings.NewReader(table))
	dec.DisallowUnknownFields()
	var tab topz.Table
	if err := dec.Decode(&tab); err != nil {
		t.Fatal(err)
	}
	if tab.CPUWindowSeconds != 0.2 || !tab.Truncated || len(tab.Processes) != 1 || tab.Processes[0].FDs != -1 || !tab.Time.Equal(want.Started) {
		t.Errorf("decoded %+v", tab)
	}
}

func ExampleWriteProcess() {
	topz.WriteProcess(os.Stdout, topz.Process{
		Row:     topz.Row{PID: 9, User: "1337", Command: "mesh-proxy", Args: "mesh-proxy --service web", State: "S", CPUPercent: 0.5, RSSBytes: 40 << 20, Threads: 9, FDs: 5},
		Sockets: []topz.Socket{{FD: 3, Proto: "tcp", Local: "0.0.0.0:15006", State: "LISTEN"}, {FD: 4, Proto: "unix", Type: "stream"}},
		Files:   []topz.OpenFile{{FD: 0, Path: "/dev/null"}},
	})
	// Output:
	// pid 9  user 1337  cpu 0.5% (since start)  rss 40.0M  threads 9  fds 5  state S
	// command: mesh-proxy --service web
	//
	// SOCKETS (2)
	// FD  PROTO        LOCAL          REMOTE  STATE
	// 3   tcp          0.0.0.0:15006  -       LISTEN
	// 4   unix/stream  -              -       -
	//
	// FILES (1)
	// FD  PATH
	// 0   /dev/null
}

func ExampleWriteTable() {
	topz.WriteTable(os.Stdout, topz.Table{
		Time: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		Processes: []topz.Row{
			{PID: 1, User: "root", Command: "pause", State: "S", RSSBytes: 512, Threads: 1, FDs: -1},
		},
		Truncated: true,
	})
	// Output:
	// # 1 processes at 2030-01-02T03:04:05Z, CPU % since start
	// PID  USER  CPU%  RSS   THR  FDS  S  COMMAND
	// 1    root  0.0   512B  1    ?    S  [pause]
	// # truncated
}
