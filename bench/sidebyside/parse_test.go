package main

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

const wrkOut = `Running 10s test @ https://127.0.0.1:40000/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.67ms    1.73ms  30.02ms   86.33%
    Req/Sec    10.33k     1.02k   12.51k    70.50%
  Latency Distribution
     50%    2.30ms
     75%    3.02ms
     90%    4.35ms
     99%    9.65ms
  205612 requests in 10.01s, 43.33MB read
  Socket errors: connect 0, read 2, write 1, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:  20541.76
Transfer/sec:      4.33MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkOut)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{Requests: 205612, Elapsed: 10010 * time.Millisecond, P50: 2300 * time.Microsecond, P99: 9650 * time.Microsecond, Errors: 6, Non2xx: 4}
	want.RPS = float64(want.Requests) / want.Elapsed.Seconds()
	if r != want {
		t.Fatalf("got %+v, want %+v", r, want)
	}
	for _, bad := range []string{"", strings.Replace(wrkOut, "99%", "98%", 1), strings.Replace(wrkOut, "205612 requests", "x requests", 1)} {
		if _, err := parseWrk(bad); err == nil {
			t.Errorf("no error for %.40q", bad)
		}
	}
}

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want statFields
		ok   bool
	}{
		{"123 (mesh-proxy) S 1 123 123 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 1 0 0", statFields{ppid: 1, utime: 250, stime: 75}, true},
		{"7 (a) b (c) R 6 7 7 0 -1 0 0 0 0 0 3 4 0 0", statFields{ppid: 6, utime: 3, stime: 4}, true},
		{"7 (short) R 6", statFields{}, false},
		{"no parenthesis", statFields{}, false},
	} {
		got, err := parseStat([]byte(tc.in))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseStat(%q) = %+v, %v; want %+v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseHWM(t *testing.T) {
	if got := parseHWM("Name:\tx\nVmPeak:\t 9000 kB\nVmHWM:\t   30720 kB\nVmRSS:\t 1 kB\n"); got != 30<<20 {
		t.Errorf("got %d", got)
	}
	if got := parseHWM("Name:\tx\n"); got != 0 {
		t.Errorf("got %d without VmHWM", got)
	}
}

func TestParsePerfAndCategory(t *testing.T) {
	out := `# Samples: 2K of event 'cpu-clock:ppp'
#
    10.30%  [kernel.kallsyms]  [k] finish_task_switch.isra.0
     3.30%  mesh-proxy         [.] runtime.selectgo
     1.60%  mesh-proxy         [.] runtime.mallocgcSmallScanNoHeader
     1.50%  [vdso]             [.] __vdso_clock_gettime
     1.10%  mesh-proxy         [.] aeshashbody
     1.00%  mesh-proxy         [.] crypto/internal/fips140/aes/gcm.gcmAesDec
     0.90%  mesh-proxy         [.] net/textproto.CanonicalMIMEHeaderKey
     0.80%  libcrypto.so.3     [.] EVP_CIPHER_CTX_get_iv_length
     0.70%  mesh-proxy         [.] runtime.pcvalue
`
	syms := parsePerf(out)
	if len(syms) != 9 || syms[0].pct != 10.3 || syms[0].dso != "[kernel]" || syms[1].sym != "runtime.selectgo" {
		t.Fatalf("parsed %+v", syms)
	}
	want := []string{"kernel (syscalls, TCP, switches)", "scheduler, channels, locks", "GC and allocation", "clock reads (vdso)",
		"maps and hashing (headers)", "TLS and crypto", "HTTP and proxy code", "TLS and crypto", "goroutine stacks (growth, unwinding)"}
	for i, s := range syms {
		if got := category(s.dso, s.sym); got != want[i] {
			t.Errorf("category(%s, %s) = %q, want %q", s.dso, s.sym, got, want[i])
		}
	}
}

func TestReplaceSection(t *testing.T) {
	doc := "# Results\n\n## Fan-out\n\nkept\n"
	once := replaceSection(doc, "table one\n")
	if !strings.HasPrefix(once, doc[:len(doc)-1]) || !strings.Contains(once, heading) || !strings.Contains(once, "table one") {
		t.Fatalf("append:\n%s", once)
	}
	notes := once + "\nhand-written notes\n"
	twice := replaceSection(notes, "table two")
	if strings.Contains(twice, "table one") || !strings.Contains(twice, "table two") ||
		!strings.Contains(twice, "hand-written notes") || strings.Count(twice, heading) != 1 || !strings.Contains(twice, "kept") {
		t.Fatalf("replace:\n%s", twice)
	}
}

func TestThousandsAndMedian(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 20541.76: "20,542", 1234567: "1,234,567"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %q, want %q", in, got, want)
		}
	}
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median odd = %v", got)
	}
	if got := median([]time.Duration{4, 1, 3, 2}); got != 2 {
		t.Errorf("median even = %v", got)
	}
}

func TestParsePerfStat(t *testing.T) {
	m := parsePerfStat("1911581,,raw_syscalls:sys_enter,1003000,100.00,,\n272,,context-switches,1003000,100.00,,\n<not counted>,,cpu-migrations,0,100.00,,\n")
	if m["raw_syscalls:sys_enter"] != 1911581 || m["context-switches"] != 272 || len(m) != 2 {
		t.Fatalf("got %v", m)
	}
}

func TestParseBusy(t *testing.T) {
	if got := parseBusy("cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"); got != 161 {
		t.Errorf("got %d, want 161", got)
	}
	if got := parseBusy("intr 1 2 3\n"); got != 0 {
		t.Errorf("got %d for a malformed stat", got)
	}
}

func TestSyscallsByName(t *testing.T) {
	counts := parsePerfStat("400,,syscalls:sys_enter_read,1,100.00,,\n200,,syscalls:sys_enter_write,1,100.00,,\n0,,syscalls:sys_enter_writev,1,100.00,,\n1,,syscalls:sys_enter_futex,1,100.00,,\n")
	got := syscallsByName(counts, 100)
	// futex is 0.01 per request: kept; writev (0) is not.
	want := []perRequest{{"read", 4}, {"write", 2}, {"futex", 0.01}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestCPUSplitTable(t *testing.T) {
	// 10,000 requests; the target used 0.5 s, the app 0.3 s, wrk 0.2 s:
	// 50, 30 and 20 µs per request.
	r := &row{t: &target{name: "mesh-proxy", shape: "one hop", hops: [][]int{{1}}}, runs: map[int][]sample{
		64: {{r: wrkResult{Requests: 10000, CPUTicks: 0.2 * clockTicks}, cpuTicks: 0.5 * clockTicks, appTicks: 0.3 * clockTicks, idle: 0.04, appCS: switches{vol: 10000, invol: 2500}, appSys: 0.12 * clockTicks, appConns: 64}},
	}}
	got := cpuSplitTable([]*row{r}, 64)
	if !strings.Contains(got, "| mesh-proxy | one hop | 50.0 | 30.0 | 20.0 | 100.0 | 4 % | 40 % | 1.00 + 0.25 | 64 |") {
		t.Fatalf("got\n%s", got)
	}
}

func TestCtxSwitches(t *testing.T) {
	if got := parseCtxSwitches("Name:\tx\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t 7\n"); got != (switches{120, 7}) {
		t.Fatalf("parseCtxSwitches = %+v, want {120 7}", got)
	}
	// This process's threads have switched at least once (the test
	// runner's goroutines sleep), and every thread is counted: the sum
	// is at least the first thread's own count.
	self := os.Getpid()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc")
	}
	if all, first := ctxSwitches(self), parseCtxSwitches(string(b)); all.vol < first.vol || all.invol < first.invol || all.vol == 0 {
		t.Fatalf("ctxSwitches = %+v, first thread alone %+v", all, first)
	}
}

func TestConnsTo(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 111 1 0 20 4 30 10 -1
   1: 0100007F:9C41 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0 20 4 30 10 -1
   2: 0100007F:9C42 0100007F:1F90 06 00000000:00000000 00:00000000 00000000     0        0 333 1 0 20 4 30 10 -1
   3: 0100007F:9C43 0100007F:1F91 01 00000000:00000000 00:00000000 00000000     0        0 444 1 0 20 4 30 10 -1
   4: 0100007F:1F90 0100007F:9C44 01 00000000:00000000 00:00000000 00000000     0        0 555 1 0 20 4 30 10 -1
`
	// Established to port 8080 (0x1F90) and ours: 111 only (222 is
	// another process's, 333 in TIME_WAIT, 444 to another port, 555 the
	// app's end).
	ours := map[string]bool{"111": true, "333": true, "444": true, "555": true}
	if got := countConnsTo(table, 8080, ours); got != 1 {
		t.Fatalf("countConnsTo = %d, want 1", got)
	}
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("no /proc/net/tcp")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if got := connsTo([]int{os.Getpid()}, port); got != 3 {
		t.Fatalf("connsTo = %d, want 3", got)
	}
}

func TestTracepoint(t *testing.T) {
	if tracepoint("syscalls/sys_enter_no_such_call") {
		t.Fatal("a tracepoint no kernel has was found")
	}
	if _, err := os.Stat("/sys/kernel/tracing/events/syscalls/sys_enter_read"); err == nil && !tracepoint("syscalls/sys_enter_read") {
		t.Fatal("sys_enter_read is in tracefs but was not found")
	}
}
