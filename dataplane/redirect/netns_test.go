package redirect_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The addresses of the two namespaces: "pod" holds the app, the proxy and
// the rules; "peer" is the rest of the network.
const (
	podIP  = "10.211.0.2"
	peerIP = "10.211.0.1"
	nobody = "65534"
)

// TestRedirectInNetworkNamespaces proves the rules on a real kernel: two
// network namespaces joined by a veth pair, the app and the proxy (as
// another user) in one, a client and a server in the other, each a
// subprocess started with `ip netns exec`.
//
//   - a client in the peer namespace reaching the app's captured port is
//     answered by the app, but the app sees the connection come from the
//     proxy's socket, owned by the proxy's user, and the proxy logged it
//     with the original destination from SO_ORIGINAL_DST;
//   - the same client on a port that is not captured reaches the app
//     directly;
//   - the app's outbound connection reaches the peer server through the
//     proxy (the server sees the proxy's source port), and exactly once:
//     the proxy's own connection to the original destination was not
//     captured again, or it would loop back into the proxy;
//   - a connection made by the proxy's user, or to an excluded port, is
//     not captured.
//
// It needs root, ip (iproute2), iptables and setpriv. Without them it
// skips, except under CI=true, where it fails.
func TestRedirectInNetworkNamespaces(t *testing.T) {
	env := requireNetns(t)
	t.Cleanup(func() { goleak.VerifyNone(t) }) // registered first, runs last
	bin := env.helperBinary(t)
	pod, peer := env.namespaces(t)

	// The rules, installed twice: the second run must change nothing.
	redirectArgs := []string{"redirect", "--proxy-uid", nobody, "--capture-ports", "8080",
		"--inbound-port", "15006", "--outbound-port", "15001",
		"--exclude-inbound-ports", "15020", "--exclude-outbound-ports", "9091"}
	env.run(t, pod, bin, redirectArgs...)
	first := env.natRules(t, pod)
	env.run(t, pod, bin, redirectArgs...)
	if second := env.natRules(t, pod); second != first {
		t.Fatalf("installing twice changed the rules:\nfirst:\n%s\nsecond:\n%s", first, second)
	}
	for _, want := range []string{
		"-A PREROUTING -p tcp -j MESH_INBOUND",
		"-A OUTPUT -p tcp -j MESH_OUTPUT",
		"-A MESH_OUTPUT -m owner --uid-owner 65534 -j RETURN",
	} {
		if !strings.Contains(first, want) {
			t.Errorf("nat table lacks %q:\n%s", want, first)
		}
	}

	// The app listens on a captured port (8080) and one left plain (9000);
	// the peer server on a port the app's traffic is captured for (9090)
	// and one excluded from capture (9091).
	env.start(t, pod, "", bin, "server", "app", "0.0.0.0:8080", "0.0.0.0:9000").waitFor(t, "ready")
	env.start(t, peer, "", bin, "server", "peer", peerIP+":9090", peerIP+":9091").waitFor(t, "ready")
	px := env.start(t, pod, nobody, bin, "proxy", "0.0.0.0:15006", "127.0.0.1:15001")
	ready := px.waitFor(t, `"msg":"ready"`)
	if !strings.Contains(ready, `"uid":`+nobody) {
		t.Fatalf("proxy does not run as %s: %s", nobody, ready)
	}

	t.Run("inbound to a captured port goes through the proxy", func(t *testing.T) {
		got := parseAnswer(t, env.run(t, peer, bin, "client", podIP+":8080"))
		// The app was reached, from the pod's own address (the proxy's
		// relay), by a socket owned by the proxy's user.
		if got.name != "app" || got.port != "8080" || got.srcIP != podIP || got.uid != nobody {
			t.Fatalf("app answered %+v, want a connection from %s owned by uid %s", got, podIP, nobody)
		}
		ev := px.relayEvent(t, "inbound", podIP+":8080")
		if !strings.HasPrefix(ev.Src, peerIP+":") {
			t.Errorf("proxy relayed a connection from %s, want the peer %s", ev.Src, peerIP)
		}
		if ev.Via != got.src {
			t.Errorf("app saw %s, the proxy relayed from %s", got.src, ev.Via)
		}
	})

	t.Run("inbound to a port not captured reaches the app directly", func(t *testing.T) {
		got := parseAnswer(t, env.run(t, peer, bin, "client", podIP+":9000"))
		if got.name != "app" || got.srcIP != peerIP || got.uid != "none" {
			t.Fatalf("app answered %+v, want a direct connection from %s", got, peerIP)
		}
	})

	t.Run("outbound is captured once and reaches its destination", func(t *testing.T) {
		got := parseAnswer(t, env.run(t, pod, bin, "client", peerIP+":9090"))
		if got.name != "peer" || got.srcIP != podIP {
			t.Fatalf("peer answered %+v", got)
		}
		ev := px.relayEvent(t, "outbound", peerIP+":9090")
		if ev.Via != got.src {
			t.Errorf("peer saw %s, the proxy relayed from %s: the connection did not come from the proxy", got.src, ev.Via)
		}
		// Had the proxy's own connection been captured, it would have come
		// back to the outbound listener with the same original destination.
		if n := px.count("outbound", peerIP+":9090"); n != 1 {
			t.Errorf("outbound listener saw %d connections for %s:9090, want 1 (a loop would show more)", n, peerIP)
		}
	})

	t.Run("the proxy's user and excluded ports pass uncaptured", func(t *testing.T) {
		before := px.count("outbound", "")
		got := parseAnswer(t, env.runAs(t, pod, nobody, bin, "client", peerIP+":9090"))
		if got.name != "peer" || got.srcIP != podIP {
			t.Fatalf("peer answered %+v", got)
		}
		got = parseAnswer(t, env.run(t, pod, bin, "client", peerIP+":9091"))
		if got.name != "peer" || got.port != "9091" {
			t.Fatalf("peer answered %+v", got)
		}
		// Then one that is captured: once its log line is in, a line for
		// either connection before it would be in too (one pipe, in order).
		sentinel := parseAnswer(t, env.run(t, pod, bin, "client", peerIP+":9090"))
		px.wait(t, "the relay of "+sentinel.src, func(out string) bool {
			for _, ev := range px.matching(out, "outbound", "") {
				if ev.Via == sentinel.src {
					return true
				}
			}
			return false
		})
		if after := px.count("outbound", ""); after != before+1 {
			t.Errorf("outbound listener saw %d new connections, want 1: the proxy's user or the excluded port was captured", after-before)
		}
	})

	t.Run("clean removes every rule", func(t *testing.T) {
		env.run(t, pod, bin, "redirect", "--clean")
		if rules := env.natRules(t, pod); strings.Contains(rules, "MESH_") {
			t.Fatalf("rules left after --clean:\n%s", rules)
		}
		got := parseAnswer(t, env.run(t, peer, bin, "client", podIP+":8080"))
		if got.srcIP != peerIP {
			t.Fatalf("after --clean the app saw %s, want a direct connection from %s", got.src, peerIP)
		}
	})
}

// netnsEnv is what the test needs from the machine.
type netnsEnv struct {
	ip, setpriv string
	path        string // PATH for the subprocesses, with the sbin dirs
}

func requireNetns(t *testing.T) *netnsEnv {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("CI") == "true" {
			t.Fatalf("network-namespace test cannot run under CI=true: %s", msg)
		}
		t.Skipf("network-namespace test skipped: %s (it needs root, iproute2, iptables and setpriv; under CI=true it fails instead)", msg)
	}
	if runtime.GOOS != "linux" {
		unavailable("not Linux")
	}
	if os.Geteuid() != 0 {
		unavailable("not root")
	}
	path := os.Getenv("PATH") + ":/usr/local/sbin:/usr/sbin:/sbin"
	look := func(name string) string {
		for _, dir := range filepath.SplitList(path) {
			p := filepath.Join(dir, name)
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
				return p
			}
		}
		unavailable("%s not found", name)
		return ""
	}
	env := &netnsEnv{ip: look("ip"), setpriv: look("setpriv"), path: path}
	look("iptables-restore")
	look("iptables-save")
	return env
}

// helperBinary copies this test binary where the proxy's user can run it.
func (e *netnsEnv) helperBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "minimesh-netns-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "helper")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// namespaces creates "pod" and "peer" joined by a veth pair; they are
// deleted, with the pair, at cleanup.
func (e *netnsEnv) namespaces(t *testing.T) (pod, peer string) {
	t.Helper()
	id := os.Getpid()
	pod, peer = fmt.Sprintf("mm%d-pod", id), fmt.Sprintf("mm%d-peer", id)
	vpod, vpeer := fmt.Sprintf("mm%dp", id), fmt.Sprintf("mm%dq", id)
	ip := func(args ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, e.ip, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	for _, ns := range []string{pod, peer} {
		if err := ip("netns", "add", ns); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal(err)
			}
			t.Skipf("network-namespace test skipped: %v", err)
		}
		t.Cleanup(func() {
			if err := ip("netns", "del", ns); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
	}
	steps := [][]string{
		{"link", "add", vpod, "netns", pod, "type", "veth", "peer", "name", vpeer, "netns", peer},
		{"-n", pod, "addr", "add", podIP + "/24", "dev", vpod},
		{"-n", peer, "addr", "add", peerIP + "/24", "dev", vpeer},
		{"-n", pod, "link", "set", vpod, "up"},
		{"-n", peer, "link", "set", vpeer, "up"},
		{"-n", pod, "link", "set", "lo", "up"},
		{"-n", peer, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			t.Fatal(err)
		}
	}
	return pod, peer
}

// command builds `ip netns exec NS [setpriv ...] BIN ARGS...`.
func (e *netnsEnv) command(ctx context.Context, ns, user, bin string, args ...string) *exec.Cmd {
	argv := []string{"netns", "exec", ns}
	if user != "" {
		argv = append(argv, e.setpriv, "--reuid", user, "--regid", user, "--clear-groups", "--")
	}
	argv = append(argv, bin)
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, e.ip, argv...)
	// A race-enabled binary sleeps a second at exit unless told not to.
	cmd.Env = append(os.Environ(), helperEnv+"=1", "PATH="+e.path, "GORACE=atexit_sleep_ms=0")
	return cmd
}

func (e *netnsEnv) run(t *testing.T, ns, bin string, args ...string) string {
	t.Helper()
	return e.runAs(t, ns, "", bin, args...)
}

// runAs runs a helper to completion and returns its standard output.
func (e *netnsEnv) runAs(t *testing.T, ns, user, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := e.command(ctx, ns, user, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s in %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), ns, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// natRules is the nat table of ns, without comments and counters.
func (e *netnsEnv) natRules(t *testing.T, ns string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.ip, "netns", "exec", ns, "iptables-save", "-t", "nat")
	cmd.Env = append(os.Environ(), "PATH="+e.path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save in %s: %v: %s", ns, err, out)
	}
	var keep []string
	for line := range strings.Lines(string(out)) {
		if !strings.HasPrefix(line, "#") {
			keep = append(keep, regexp.MustCompile(`\[\d+:\d+\]`).ReplaceAllString(line, "[0:0]"))
		}
	}
	return strings.Join(keep, "")
}

// proc is a long-running helper whose standard output is collected.
type proc struct {
	mu   sync.Mutex
	out  bytes.Buffer
	cond *sync.Cond
	done bool
}

func (e *netnsEnv) start(t *testing.T, ns, user, bin string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := e.command(ctx, ns, user, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{}
	p.cond = sync.NewCond(&p.mu)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		r := bufio.NewReader(stdout)
		for {
			line, err := r.ReadString('\n')
			p.mu.Lock()
			p.out.WriteString(line)
			if err != nil {
				p.done = true
			}
			p.cond.Broadcast()
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel() // kills the helper: ip netns exec and setpriv exec it in place
		<-copied
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s stderr:\n%s", strings.Join(args, " "), stderr.String())
		}
	})
	return p
}

// waitFor waits until a line containing s is out, and returns it. The
// bound only stops a broken test; it measures nothing.
func (p *proc) waitFor(t *testing.T, s string) string {
	t.Helper()
	var line string
	p.wait(t, "output "+s, func(out string) bool {
		for l := range strings.Lines(out) {
			if strings.Contains(l, s) {
				line = l
				return true
			}
		}
		return false
	})
	return line
}

func (p *proc) wait(t *testing.T, what string, cond func(string) bool) {
	t.Helper()
	timer := time.AfterFunc(30*time.Second, func() {
		p.mu.Lock()
		p.done = true
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer timer.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for !cond(p.out.String()) {
		if p.done {
			t.Fatalf("gave up waiting for %s; output so far:\n%s", what, p.out.String())
		}
		p.cond.Wait()
	}
}

// relayEvent is a proxy log line for one relayed connection.
type relayEvent struct {
	Msg         string `json:"msg"`
	Listener    string `json:"listener"`
	Src         string `json:"src"`
	OriginalDst string `json:"original_dst"`
	Via         string `json:"via"`
}

func (p *proc) events(out string) []relayEvent {
	var evs []relayEvent
	for line := range strings.Lines(out) {
		var ev relayEvent
		if json.Unmarshal([]byte(line), &ev) == nil && ev.Msg == "transparent: relaying" {
			evs = append(evs, ev)
		}
	}
	return evs
}

func (p *proc) matching(out, listener, dst string) []relayEvent {
	var m []relayEvent
	for _, ev := range p.events(out) {
		if ev.Listener == listener && (dst == "" || ev.OriginalDst == dst) {
			m = append(m, ev)
		}
	}
	return m
}

// relayEvent waits for a relay of listener to dst and returns the latest.
func (p *proc) relayEvent(t *testing.T, listener, dst string) relayEvent {
	t.Helper()
	var ev relayEvent
	p.wait(t, listener+" relay to "+dst, func(out string) bool {
		m := p.matching(out, listener, dst)
		if len(m) == 0 {
			return false
		}
		ev = m[len(m)-1]
		return true
	})
	return ev
}

// count is how many relays of listener to dst ("" for any) are logged.
func (p *proc) count(listener, dst string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.matching(p.out.String(), listener, dst))
}

// answer is a server helper's reply line.
type answer struct{ name, port, src, srcIP, uid string }

var answerRE = regexp.MustCompile(`^(\S+) port=(\d+) saw=((\d+\.\d+\.\d+\.\d+):\d+) peer_uid=(\S+)$`)

func parseAnswer(t *testing.T, out string) answer {
	t.Helper()
	m := answerRE.FindStringSubmatch(strings.TrimSpace(out))
	if m == nil {
		t.Fatalf("unexpected answer %q", out)
	}
	return answer{name: m[1], port: m[2], src: m[3], srcIP: m[4], uid: m[5]}
}
