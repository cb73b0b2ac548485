package main

// -replicas 3: issue 19's fan-out bench. Three meshd replicas (real
// binaries) on one etcd (Debian's /usr/bin/etcd, a child process on
// 127.0.0.1 random ports with its data in the bench's temp dir), the same
// CA key file and trust domain; N simulated proxies that each dial all
// three through internal/replicas (mesh-proxy's own client: pick_first over
// a shuffled list) and reconnect as mesh-proxy's agent does (jittered
// backoff from 0.5 s, a new connection each time, the version it holds
// claimed in its Hello). Measured per scope and size:
//
//   - apply → last ACK, the Apply sent to the leader, then to a follower
//     (median of -rounds each), with the last ACK on the replica that took
//     the Apply and the last ACK anywhere;
//   - a SIGKILL of the replica holding the most streams: the time until
//     every proxy that was on it has a stream registered on a survivor and
//     holds the version current at the kill, and until proxy-status (asked
//     of a survivor) shows all N SYNCED;
//   - the same kill on fresh streams with an Apply sent to a survivor at
//     once: the time until all N proxies ACKed it;
//   - each replica's CPU time (/proc/PID/stat), VmRSS and VmHWM
//     (/proc/PID/status) after each row, and the CPU the rest of the
//     machine used meanwhile (/proc/stat minus this bench, the replicas
//     and etcd).

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"

	"minimesh/controlplane/store/storetest"
	"minimesh/internal/meshctl"
	"minimesh/internal/replicas"
	meshv1 "minimesh/proto/mesh/v1"
)

type haConfig struct {
	ns       []int
	maxN     int
	scopes   []string
	rounds   int
	workers  int
	replicas int
	leaseTTL time.Duration
	results  string // RESULTS.md to rewrite the block of ("": print only)
	command  string // as typed, for the notes
}

// replica is one meshd process; name is r1, r2, ...
type replica struct {
	name               string
	addr, metrics, dir string
	cmd                *exec.Cmd
	exited             chan struct{}
	conn               *grpc.ClientConn
	admin              meshv1.AdminServiceClient
	restarts           int
	logPath            string
}

type haMesh struct {
	cfg      haConfig
	bin      string
	etcd     string // client URL
	etcdPID  int
	keyFile  string
	reps     []*replica
	all      string         // every replica's address, comma-separated
	byAddr   map[string]int // address → index in reps
	deadCPU  time.Duration  // CPU of replicas killed so far (read just before each kill)
	td       spiffeid.TrustDomain
	setupLog []string
}

func runHA(cfg haConfig) error {
	began := time.Now()
	etcdBin := storetest.EtcdBinary()
	if etcdBin == "" {
		return errors.New("-replicas: needs Debian's etcd binary (/usr/bin/etcd): sudo apt-get install -y etcd-server")
	}
	work, err := os.MkdirTemp("", "fanout-ha")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	m := &haMesh{cfg: cfg, byAddr: map[string]int{}, td: spiffeid.RequireTrustDomainFromString("minimesh.local")}
	m.bin = filepath.Join(work, "meshd")
	if out, err := exec.Command("go", "build", "-o", m.bin, "minimesh/cmd/meshd").CombinedOutput(); err != nil {
		return fmt.Errorf("build meshd: %v\n%s", err, out)
	}
	etcdDir := filepath.Join(work, "etcd")
	if err := os.Mkdir(etcdDir, 0o700); err != nil {
		return err
	}
	e, err := storetest.StartBinary(etcdBin, etcdDir)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer e.Stop()
	m.etcd = e.Endpoints[0]
	m.etcdPID = pidWithArg(etcdDir)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	m.keyFile = filepath.Join(work, "ca.key")
	if err := os.WriteFile(m.keyFile, key, 0o600); err != nil {
		return err
	}
	var addrs []string
	for i := range cfg.replicas {
		r := &replica{name: fmt.Sprintf("r%d", i+1), addr: freeAddr(), metrics: freeAddr(), dir: filepath.Join(work, fmt.Sprintf("m%d", i+1))}
		r.logPath = filepath.Join(work, r.name+".log")
		m.reps = append(m.reps, r)
		m.byAddr[r.addr] = i
		addrs = append(addrs, r.addr)
	}
	m.all = strings.Join(addrs, ",")
	defer m.stopAll()
	fail := func(err error) error {
		m.tails(os.Stderr)
		return err
	}
	// The first replica writes the CA into etcd; the others load it.
	for _, r := range m.reps {
		if err := m.start(r); err != nil {
			return fail(err)
		}
	}
	setup := time.Now()
	tcs, err := bootstrapAll(m.reps[0].admin, addrs, m.td, cfg.maxN, cfg.workers)
	if err != nil {
		return fail(err)
	}
	m.logf("set-up: %d proxies bootstrapped over %d replicas (own key, CSR, instance ID and SVID each; %d at once) in %s",
		cfg.maxN, len(m.reps), cfg.workers, time.Since(setup).Round(time.Millisecond))
	if _, err := apply(m.reps[0].admin, applied.Add(1)); err != nil {
		return fail(err)
	}
	var applies []haApplyRow
	var kills []haKillRow
	for _, scope := range cfg.scopes {
		for _, n := range cfg.ns {
			a, k, err := m.scopeRun(scope, tcs[:n])
			if err != nil {
				return fail(err)
			}
			applies = append(applies, a...)
			kills = append(kills, k...)
		}
	}
	body := m.report(applies, kills, time.Since(began))
	fmt.Print(body)
	if cfg.results != "" {
		if err := writeResults(cfg.results, body); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "fanout: wrote the block between %s and %s in %s\n", haBegin, haEnd, cfg.results)
	}
	return nil
}

func (m *haMesh) logf(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	m.setupLog = append(m.setupLog, s)
	fmt.Fprintln(os.Stderr, "fanout:", s)
}

// start runs r's meshd and waits until its operator credential works.
func (m *haMesh) start(r *replica) error {
	log, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	r.cmd = exec.Command(m.bin, "--data-dir", r.dir, "--listen", r.addr, "--metrics", r.metrics,
		"--store", "etcd://"+strings.TrimPrefix(m.etcd, "http://"), "--ca-key-file", m.keyFile,
		"--lease-ttl", m.cfg.leaseTTL.String(), "--log-level", "warn",
		"--bootstrap-burst", strconv.Itoa(m.cfg.maxN)) // every proxy bootstraps from 127.0.0.1
	r.cmd.Stdout, r.cmd.Stderr = log, log
	if err := r.cmd.Start(); err != nil {
		log.Close()
		return err
	}
	r.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { _ = cmd.Wait(); log.Close(); close(exited) }(r.cmd, r.exited)
	conn, admin, err := dialOperator(r.dir, r.addr, 30*time.Second)
	if err != nil {
		return fmt.Errorf("replica %s (%s): %w", r.name, r.addr, err)
	}
	r.conn, r.admin = conn, admin
	return nil
}

func (r *replica) alive() bool {
	if r.cmd == nil {
		return false
	}
	select {
	case <-r.exited:
		return false
	default:
		return true
	}
}

// kill SIGKILLs r and waits for it to be gone.
func (m *haMesh) kill(r *replica) {
	m.deadCPU += cpuTime(r.cmd.Process.Pid)
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.exited
	r.conn.Close()
}

func (m *haMesh) stopAll() {
	for _, r := range m.reps {
		if !r.alive() {
			continue
		}
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(15 * time.Second):
			_ = r.cmd.Process.Kill()
			<-r.exited
		}
		r.conn.Close()
	}
}

// tails prints the end of every replica's log (after a failure).
func (m *haMesh) tails(w io.Writer) {
	for _, r := range m.reps {
		b, _ := os.ReadFile(r.logPath)
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		fmt.Fprintf(w, "--- %s's log (last lines):\n%s\n", r.name, strings.Join(lines, "\n"))
	}
}

// leader is the index of the replica that leads, as a live replica's
// Version RPC says (the election's oldest key; a name host-PID-random), or
// -1.
func (m *haMesh) leader() int {
	for _, r := range m.reps {
		if !r.alive() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		v, err := r.admin.Version(ctx, &meshv1.VersionRequest{})
		cancel()
		if err != nil {
			continue
		}
		f := strings.Split(v.GetLeader(), "-")
		if len(f) < 3 {
			return -1
		}
		for i, rr := range m.reps {
			if rr.alive() && strconv.Itoa(rr.cmd.Process.Pid) == f[len(f)-2] {
				return i
			}
		}
		return -1
	}
	return -1
}

// waitLeader waits (bounded) until a live replica leads.
func (m *haMesh) waitLeader(d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	for {
		if l := m.leader(); l >= 0 {
			return l, nil
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("no live replica leads after %s", d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// usage is what the machine and this bench's processes had used by at.
type usage struct {
	at         time.Time
	busy, ours time.Duration
}

func (m *haMesh) usage() usage {
	u := usage{at: time.Now(), busy: machineBusy(), ours: cpuTime(os.Getpid()) + m.deadCPU}
	if m.etcdPID > 0 {
		u.ours += cpuTime(m.etcdPID)
	}
	for _, r := range m.reps {
		if r.alive() {
			u.ours += cpuTime(r.cmd.Process.Pid)
		}
	}
	return u
}

// otherLoad is the share of the machine's CPUs that anything but this
// bench, its replicas and etcd used between a and b (softirq time no
// process is charged for included).
func otherLoad(a, b usage) float64 {
	wall := b.at.Sub(a.at).Seconds() * float64(runtime.NumCPU())
	if wall <= 0 {
		return 0
	}
	return max(0, ((b.busy-a.busy)-(b.ours-a.ours)).Seconds()/wall)
}

// machineBusy is the CPU time all CPUs spent not idle, from /proc/stat.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i > 7 { // guest time is counted in user already
			break
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * (time.Second / 100)
}

// memOf is VmRSS and VmHWM of pid in bytes, from /proc/PID/status.
func memOf(pid int) (rss, hwm float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb * 1024
		case "VmHWM:":
			hwm = kb * 1024
		}
	}
	return rss, hwm
}

// pidWithArg finds the process whose command line has arg (etcd, started
// by storetest with its data dir under ours), or 0.
func pidWithArg(arg string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), arg) {
			return pid
		}
	}
	return 0
}

// perReplica is one value per replica, measured after a row.
type perReplica struct {
	cpu       []time.Duration // in the row (per Apply for the apply rows)
	rss, hwm  []float64
	streams   []int
	alive     []bool
	restarted []bool
}

func (m *haMesh) cpus() []time.Duration {
	out := make([]time.Duration, len(m.reps))
	for i, r := range m.reps {
		if r.alive() {
			out[i] = cpuTime(r.cmd.Process.Pid)
		}
	}
	return out
}

// measure reads each replica's memory now and its CPU since cpu0 (divided
// by div), and counts the proxies' streams on each.
func (m *haMesh) measure(cpu0 []time.Duration, div int, proxies []*haProxy) perReplica {
	pr := perReplica{}
	now := m.cpus()
	counts := streamsOn(proxies, len(m.reps))
	for i, r := range m.reps {
		var rss, hwm float64
		if r.alive() {
			rss, hwm = memOf(r.cmd.Process.Pid)
		}
		d := now[i] - cpu0[i]
		if d < 0 || !r.alive() {
			d = 0
		}
		pr.cpu = append(pr.cpu, d/time.Duration(div))
		pr.rss, pr.hwm = append(pr.rss, rss), append(pr.hwm, hwm)
		pr.streams = append(pr.streams, counts[i])
		pr.alive = append(pr.alive, r.alive())
		pr.restarted = append(pr.restarted, r.restarts > 0)
	}
	return pr
}

func streamsOn(proxies []*haProxy, n int) []int {
	counts := make([]int, n)
	for _, p := range proxies {
		if i := p.replica.Load(); i >= 0 && int(i) < n {
			counts[i]++
		}
	}
	return counts
}

type haApplyRow struct {
	scope     string
	n         int
	endpoints int
	target    string // "r1 (leader)"
	local     time.Duration
	all       time.Duration
	allMin    time.Duration
	allMax    time.Duration
	before    perReplica // streams at the start
	after     perReplica
	load      float64
}

type haKillRow struct {
	scope      string
	n          int
	victim     string // "r2 (leader)"
	held       int
	then       string
	backMed    time.Duration
	backLast   time.Duration
	allAcked   time.Duration // -1: no Apply in this row
	synced     time.Duration
	syncedNote string
	before     perReplica
	after      perReplica
	load       float64
	reconnects int64
}

// scopeRun is every row of one scope and size: fresh streams, the applies
// (leader, then a follower), a quiet kill, the killed replica restarted,
// fresh streams again, a kill with an Apply at once, the replica restarted.
func (m *haMesh) scopeRun(scope string, tcs []*tls.Config) ([]haApplyRow, []haKillRow, error) {
	n := len(tcs)
	proxies, err := m.connect(scope, tcs)
	if err != nil {
		return nil, nil, err
	}
	leader, err := m.waitLeader(30 * time.Second)
	if err != nil {
		drainHA(proxies)
		return nil, nil, err
	}
	follower := (leader + 1) % len(m.reps)
	var rows []haApplyRow
	for _, t := range []int{leader, follower} {
		role := "follower"
		if t == leader {
			role = "leader"
		}
		row, err := m.applyRow(scope, proxies, t, role)
		if err != nil {
			drainHA(proxies)
			return nil, nil, err
		}
		rows = append(rows, row)
	}
	var kills []haKillRow
	for _, withApply := range []bool{false, true} {
		if withApply {
			// Fresh streams over all three replicas again.
			drainHA(proxies)
			if proxies, err = m.connect(scope, tcs); err != nil {
				return nil, nil, err
			}
		}
		k, err := m.killRow(scope, proxies, withApply)
		if err != nil {
			drainHA(proxies)
			return nil, nil, err
		}
		kills = append(kills, k)
	}
	drainHA(proxies)
	m.logf("scope %s, %d proxies: done", scope, n)
	return rows, kills, nil
}

// connect starts one simulated proxy per credential and waits until each
// holds the current config and (scope all) every proxy's endpoint.
func (m *haMesh) connect(scope string, tcs []*tls.Config) ([]*haProxy, error) {
	n := len(tcs)
	start := time.Now()
	proxies := make([]*haProxy, n)
	sem := make(chan struct{}, 64) // bound concurrent handshakes during set-up
	for i := range proxies {
		p := newHAProxy(instanceID(i), tcs[i], m.all, m.byAddr, scope)
		proxies[i] = p
		sem <- struct{}{}
		go p.run()
		go func() {
			select {
			case <-p.first:
			case <-time.After(30 * time.Second):
			}
			<-sem
		}()
	}
	wantEndpoints := int64(n)
	if scope == "upstream" {
		wantEndpoints = 0 // nothing serves default/api
	}
	cur := applied.Load()
	if err := waitAll(proxies, func(p *haProxy) bool {
		return p.epoch.Load() >= 1 && p.gen.Load() >= cur && p.endpoints.Load() == wantEndpoints
	}, 180*time.Second); err != nil {
		drainHA(proxies)
		return nil, fmt.Errorf("scope %s, %d proxies, set-up: %w", scope, n, err)
	}
	var reconnects int64
	for _, p := range proxies {
		reconnects += p.epoch.Load() - 1 + p.failed.Load()
	}
	m.logf("scope %s, %d proxies connected, streams per replica %v, in %s (%d stream opens failed or were cut and tried again)",
		scope, n, streamsOn(proxies, len(m.reps)), time.Since(start).Round(time.Millisecond), reconnects)
	return proxies, nil
}

// applyRow times rounds of Apply sent to replica t until every proxy ACKed.
func (m *haMesh) applyRow(scope string, proxies []*haProxy, t int, role string) (haApplyRow, error) {
	r := m.reps[t]
	n := len(proxies)
	before := m.measure(m.cpus(), 1, proxies)
	var locals, alls []time.Duration
	cpu0 := m.cpus()
	u0 := m.usage()
	for round := 0; round < m.cfg.rounds; round++ {
		// The other replicas see an Apply at their next once-a-second
		// check of the store (controlplane/push Run): an Apply sent just
		// after the last ACK of the one before would always land just
		// after that check. A random pause puts each at a random phase,
		// as an operator's Apply is.
		time.Sleep(250*time.Millisecond + mrand.N(time.Second))
		gen := applied.Add(1)
		start := time.Now()
		if _, err := apply(r.admin, gen); err != nil {
			return haApplyRow{}, fmt.Errorf("scope %s, %d proxies: Apply to %s: %w", scope, n, r.name, err)
		}
		if err := waitAll(proxies, func(p *haProxy) bool { return p.gen.Load() >= gen }, 60*time.Second); err != nil {
			return haApplyRow{}, fmt.Errorf("scope %s, %d proxies, Apply %d to %s: %w", scope, n, round+1, r.name, err)
		}
		var local, all time.Duration
		for _, p := range proxies {
			d := p.reachedAt(gen).Sub(start)
			all = max(all, d)
			if p.replica.Load() == int64(t) {
				local = max(local, d)
			}
		}
		locals, alls = append(locals, local), append(alls, all)
	}
	u1 := m.usage()
	after := m.measure(cpu0, m.cfg.rounds, proxies)
	return haApplyRow{scope: scope, n: n, endpoints: int(proxies[0].endpoints.Load()), target: r.name + " (" + role + ")",
		local: median(locals), all: median(alls), allMin: slices.Min(alls), allMax: slices.Max(alls),
		before: before, after: after, load: otherLoad(u0, u1)}, nil
}

// killRow SIGKILLs the replica holding the most streams and times its
// proxies' return; withApply sends an Apply to a survivor at once and
// times it to the last ACK. The replica is restarted afterwards.
func (m *haMesh) killRow(scope string, proxies []*haProxy, withApply bool) (haKillRow, error) {
	n := len(proxies)
	counts := streamsOn(proxies, len(m.reps))
	victim := 0
	for i, c := range counts {
		if c > counts[victim] {
			victim = i
		}
	}
	leader := m.leader()
	role := "follower"
	if leader == victim {
		role = "leader"
	}
	v := m.reps[victim]
	row := haKillRow{scope: scope, n: n, victim: v.name + " (" + role + ")", held: counts[victim], allAcked: -1, then: "nothing"}
	var on []*haProxy
	epochs := map[*haProxy]int64{}
	for _, p := range proxies {
		if p.replica.Load() == int64(victim) {
			on = append(on, p)
			epochs[p] = p.epoch.Load()
		}
	}
	survivor := (victim + 1) % len(m.reps)
	if leader >= 0 && leader != victim {
		survivor = leader
	}
	g := applied.Load() // the version current at the kill
	row.before = m.measure(m.cpus(), 1, proxies)
	cpu0 := m.cpus()
	u0 := m.usage()
	t0 := time.Now()
	m.kill(v)
	var gen int64
	if withApply {
		gen = applied.Add(1)
		start := time.Now()
		if _, err := apply(m.reps[survivor].admin, gen); err != nil {
			return row, fmt.Errorf("scope %s, %d proxies: Apply to %s right after %s's SIGKILL: %w", scope, n, m.reps[survivor].name, v.name, err)
		}
		row.then = fmt.Sprintf("Apply to %s at once (answered in %s)", m.reps[survivor].name, fmtDur(time.Since(start)))
	}
	back := func(p *haProxy) bool {
		r := p.replica.Load()
		return p.epoch.Load() > epochs[p] && r >= 0 && r != int64(victim) && p.gen.Load() >= g
	}
	if err := waitAll(on, back, 120*time.Second); err != nil {
		return row, fmt.Errorf("scope %s, %d proxies, %s SIGKILLed: its proxies did not come back: %w", scope, n, v.name, err)
	}
	var backs []time.Duration
	for _, p := range on {
		at := p.registeredAt()
		if r := p.reachedAt(g); r.After(at) {
			at = r
		}
		backs = append(backs, at.Sub(t0))
	}
	row.backMed, row.backLast = median(backs), slices.Max(backs)
	if withApply {
		if err := waitAll(proxies, func(p *haProxy) bool { return p.gen.Load() >= gen }, 120*time.Second); err != nil {
			return row, fmt.Errorf("scope %s, %d proxies, %s SIGKILLed then an Apply: %w", scope, n, v.name, err)
		}
		for _, p := range proxies {
			row.allAcked = max(row.allAcked, p.reachedAt(gen).Sub(t0))
		}
	}
	// What an operator sees: proxy-status from a survivor, every proxy
	// connected and SYNCED. Asked only now, so that its load is not in the
	// times above.
	row.synced, row.syncedNote = m.allSynced(m.reps[survivor], n, t0)
	u1 := m.usage()
	row.after = m.measure(cpu0, 1, proxies)
	row.load = otherLoad(u0, u1)
	for _, p := range on {
		row.reconnects += p.epoch.Load() - epochs[p] - 1 + p.failedSince(t0)
	}
	m.logf("scope %s, %d proxies: SIGKILL %s holding %d streams, then %s: back and ACKed after %s (median %s; %d stream opens failed and were tried again), streams now %v",
		scope, n, row.victim, row.held, row.then, fmtDur(row.backLast), fmtDur(row.backMed), row.reconnects, row.after.streams)
	// Restart it: the next row starts from three replicas again.
	v.restarts++
	if err := m.start(v); err != nil {
		return row, fmt.Errorf("restart %s: %w", v.name, err)
	}
	return row, nil
}

// allSynced polls r's ProxyStatus (every 250 ms, up to 60 s) until n
// proxies are connected and SYNCED on their current version; it returns
// the time since t0, or -1 and what it saw last.
func (m *haMesh) allSynced(r *replica, n int, t0 time.Time) (time.Duration, string) {
	deadline := time.Now().Add(60 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := r.admin.ProxyStatus(ctx, &meshv1.ProxyStatusRequest{})
		cancel()
		if err != nil {
			last = err.Error()
		} else {
			connected, synced := 0, 0
			for _, p := range resp.GetProxies() {
				if !p.GetProxy().GetConnected() {
					continue
				}
				connected++
				if p.GetState() == meshv1.SyncState_SYNC_STATE_SYNCED && p.GetAckedVersion() == p.GetCurrentVersion() {
					synced++
				}
			}
			if connected == n && synced == n {
				return time.Since(t0), ""
			}
			last = fmt.Sprintf("%d connected, %d SYNCED", connected, synced)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return -1, last
}

// waitAll waits until ok holds for every proxy, d in all.
func waitAll(proxies []*haProxy, ok func(*haProxy) bool, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for i, p := range proxies {
		for !ok(p) {
			select {
			case <-p.changed:
			case <-timer.C:
				return fmt.Errorf("%s (%d before it did) not in %s: on replica %d (-1: none), stream %d, holds Apply %d with %d endpoints; last error: %v",
					p.id, i, d, p.replica.Load(), p.epoch.Load(), p.gen.Load(), p.endpoints.Load(), p.lastErr())
			}
		}
	}
	return nil
}

// As mesh-proxy's agent (dataplane/agent: BackoffMin, BackoffMax, jitter).
const (
	agentBackoffMin = 500 * time.Millisecond
	agentBackoffMax = 30 * time.Second
)

// haProxy is one simulated proxy over several replicas: it ACKs every
// snapshot at once and, when its stream ends, reconnects as mesh-proxy's
// agent does.
type haProxy struct {
	id      string
	tc      *tls.Config
	all     string
	byAddr  map[string]int
	scope   *meshv1.EndpointScope
	ctx     context.Context
	cancel  context.CancelFunc
	leaving atomic.Bool
	done    chan struct{} // run ended
	first   chan struct{} // the first stream registered or failed
	once    sync.Once
	changed chan struct{} // registered or ACKed (capacity 1)

	mu      sync.Mutex
	st      meshv1.ConfigService_StreamClient
	version string // the snapshot it holds, claimed in its next Hello
	regAt   time.Time
	history []genAt // each ACK's Apply and when
	err     error
	fails   []time.Time

	epoch     atomic.Int64 // streams meshd registered
	replica   atomic.Int64 // index of the replica holding its stream; -1 between streams
	gen       atomic.Int64 // Apply of the snapshot it holds
	endpoints atomic.Int64
	failed    atomic.Int64 // stream opens that ended before registering
}

type genAt struct {
	gen int64
	at  time.Time
}

func newHAProxy(id string, tc *tls.Config, all string, byAddr map[string]int, scope string) *haProxy {
	p := &haProxy{id: id, tc: tc, all: all, byAddr: byAddr, done: make(chan struct{}), first: make(chan struct{}), changed: make(chan struct{}, 1)}
	if scope == "upstream" {
		// As a proxy whose outbound has one --upstream port.
		p.scope = &meshv1.EndpointScope{Services: []string{"default/api"}}
	}
	p.replica.Store(-1)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p
}

func (p *haProxy) signal() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

func (p *haProxy) lastErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *haProxy) registeredAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.regAt
}

// reachedAt is when it first ACKed a snapshot of Apply gen or later
// (zero if never).
func (p *haProxy) reachedAt(gen int64) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, h := range p.history {
		if h.gen >= gen {
			return h.at
		}
	}
	return time.Time{}
}

func (p *haProxy) failedSince(t time.Time) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var c int64
	for _, f := range p.fails {
		if f.After(t) {
			c++
		}
	}
	return c
}

// run holds a stream, reconnecting with the agent's jittered exponential
// backoff, until the proxy leaves.
func (p *haProxy) run() {
	defer close(p.done)
	backoff := agentBackoffMin
	for {
		start := time.Now()
		registered, err := p.stream()
		p.replica.Store(-1)
		p.once.Do(func() { close(p.first) })
		if p.leaving.Load() || p.ctx.Err() != nil {
			return
		}
		p.mu.Lock()
		p.err = err
		if !registered {
			p.failed.Add(1)
			p.fails = append(p.fails, time.Now())
		}
		p.mu.Unlock()
		if time.Since(start) > agentBackoffMax {
			backoff = agentBackoffMin
		}
		wait := time.Duration(float64(backoff) * (1 + 0.2*(2*mrand.Float64()-1)))
		backoff = min(backoff*2, agentBackoffMax)
		select {
		case <-p.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// stream is one connection and stream, as the agent's: a new client over
// every replica, a Hello claiming the version it holds, an ACK for every
// snapshot. It returns when the stream ends.
func (p *haProxy) stream() (registered bool, err error) {
	conn, err := replicas.NewClient(p.all, grpc.WithTransportCredentials(credentials.NewTLS(p.tc)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}))
	if err != nil {
		return false, err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	st, err := meshv1.NewConfigServiceClient(conn).Stream(ctx)
	if err != nil {
		return false, err
	}
	p.mu.Lock()
	claimed := p.version
	p.mu.Unlock()
	hello := &meshv1.StreamRequest{Message: &meshv1.StreamRequest_Hello{Hello: &meshv1.Hello{
		InstanceId: p.id, Service: "bench", AdvertiseAddress: "127.0.0.1:1", ProxyVersion: "fanout",
		EndpointScope: p.scope, AppliedVersion: claimed,
	}}}
	if err := st.Send(hello); err != nil {
		if errors.Is(err, io.EOF) { // the stream's status comes from Recv
			_, err = st.Recv()
		}
		return false, err
	}
	for {
		msg, err := st.Recv()
		if err != nil {
			return registered, err
		}
		if msg.GetRegistered() != nil {
			idx := int64(-1)
			if pr, ok := peer.FromContext(st.Context()); ok && pr.Addr != nil {
				if i, ok := p.byAddr[pr.Addr.String()]; ok {
					idx = int64(i)
				}
			}
			p.mu.Lock()
			p.st, p.regAt = st, time.Now()
			p.mu.Unlock()
			p.replica.Store(idx)
			p.epoch.Add(1)
			registered = true
			p.once.Do(func() { close(p.first) })
			p.signal()
			continue
		}
		snap := msg.GetSnapshot()
		if snap == nil {
			continue
		}
		p.mu.Lock()
		err = st.Send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Ack{Ack: &meshv1.Ack{Version: snap.GetVersion()}}})
		if err == nil {
			g := routeGen(snap)
			p.version = snap.GetVersion()
			p.history = append(p.history, genAt{gen: g, at: time.Now()})
			p.endpoints.Store(int64(len(snap.GetEndpoints())))
			p.gen.Store(g)
		}
		p.mu.Unlock()
		if err != nil {
			return registered, err
		}
		p.signal()
	}
}

// drainHA ends every proxy as mesh-proxy ends on SIGTERM: a Drain, so
// meshd drops its endpoint at once and ends the stream (see drainAll).
func drainHA(proxies []*haProxy) {
	for _, p := range proxies {
		p.leaving.Store(true)
		p.mu.Lock()
		if p.st != nil && p.replica.Load() >= 0 {
			_ = p.st.Send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Drain{Drain: &meshv1.Drain{}}})
		}
		p.mu.Unlock()
	}
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	expired := false
	for _, p := range proxies {
		if !expired {
			select {
			case <-p.done:
			case <-deadline.C:
				expired = true
				fmt.Fprintln(os.Stderr, "fanout: meshd did not end every drained stream in 30s")
			}
		}
		p.cancel()
	}
	for _, p := range proxies {
		<-p.done
	}
}

// dialOperator connects to addr with the operator credential in dir and
// waits (up to d) until it answers.
func dialOperator(dir, addr string, d time.Duration) (*grpc.ClientConn, meshv1.AdminServiceClient, error) {
	deadline := time.Now().Add(d)
	var last error
	for time.Now().Before(deadline) {
		conn, err := meshctl.Dial(addr, filepath.Join(dir, "operator"))
		if err == nil {
			c := meshv1.NewAdminServiceClient(conn)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = c.ListProxies(ctx, &meshv1.ListProxiesRequest{})
			cancel()
			if err == nil {
				return conn, c, nil
			}
			conn.Close()
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return nil, nil, fmt.Errorf("meshd on %s did not answer in %s: %v", addr, d, last)
}

func fmtDur(d time.Duration) string {
	switch {
	case d < 0:
		return "—"
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Round(time.Millisecond).Milliseconds())
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

func mb(v float64) string {
	if v == 0 {
		return "—"
	}
	return strconv.Itoa(int(math.Round(v / (1 << 20))))
}

func triple[T any](vs []T, alive []bool, f func(T) string) string {
	var parts []string
	for i, v := range vs {
		if alive != nil && !alive[i] {
			parts = append(parts, "†")
			continue
		}
		parts = append(parts, f(v))
	}
	return strings.Join(parts, " / ")
}

func ms(d time.Duration) string {
	return strconv.FormatInt(d.Round(time.Millisecond).Milliseconds(), 10)
}

const (
	haBegin   = "<!-- fanout-ha:begin (generated by bench/fanout -replicas 3; notes go below the end marker) -->"
	haEnd     = "<!-- fanout-ha:end -->"
	haHeading = "## Fan-out over three replicas (issue 19)\n\n    make bench-fanout-ha     # go run ./bench/fanout -replicas 3 -n 2000 (-scopes all,upstream)"
)

// report is the block for RESULTS.md: both tables and the notes that
// belong to this run.
func (m *haMesh) report(applies []haApplyRow, kills []haKillRow, took time.Duration) string {
	var b strings.Builder
	names := make([]string, len(m.reps))
	for i, r := range m.reps {
		names[i] = r.name
	}
	rs := strings.Join(names, " / ")
	fmt.Fprintf(&b, "Machine: %s, %s. %s UTC. Command: `%s` (%s in all, set-up included).\n\n",
		cpuModelHA(), memTotal(), time.Now().UTC().Format("2006-01-02 15:04"), m.cfg.command, took.Round(time.Second))
	fmt.Fprintf(&b, "%d meshd replicas (%s) on one etcd (Debian's %s, a child process), `--lease-ttl %s`, one CA key file; %s.\n\n",
		len(m.reps), rs, etcdVersion(), m.cfg.leaseTTL, strings.Join(m.setupLog[:1], ""))
	b.WriteString("**Apply → last ACK** (median of " + strconv.Itoa(m.cfg.rounds) + " applies, each after a random pause of 0.25 to 1.25 s; the last ACK of all with the fastest and slowest of them; per replica: " + rs + "; CPU is each replica's per Apply; RSS and peak RSS (VmHWM) after the row; a replica killed in an earlier row was restarted, so its peak counts from then):\n\n")
	b.WriteString("| scope | proxies | endpoints per snapshot | Apply sent to | streams per replica | last ACK on that replica | last ACK of all | target (2000 < 1 s) | CPU per Apply (ms) | RSS (MB) | peak RSS (MB) | other load |\n")
	b.WriteString("| --- | ---: | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |\n")
	for _, r := range applies {
		target := ""
		if r.n >= 2000 {
			target = "missed"
			if r.all < time.Second {
				target = "**met**"
			}
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %s | %s (%s–%s) | %s | %s | %s | %s | %.0f %% |\n",
			r.scope, r.n, r.endpoints, r.target, triple(r.before.streams, nil, strconv.Itoa), fmtDur(r.local), fmtDur(r.all), fmtDur(r.allMin), fmtDur(r.allMax), target,
			triple(r.after.cpu, r.after.alive, ms), triple(r.after.rss, r.after.alive, mb), triple(r.after.hwm, r.after.alive, mb), 100*r.load)
	}
	b.WriteString("\n**A replica SIGKILLed** (the one holding the most streams; then restarted, and the next row starts on fresh streams over all three). \"Back\": every proxy that was on it has a stream registered on a survivor and holds the version current at the kill (its Hello claims the version it holds, which meshd takes as its ACK, as with mesh-proxy). \"proxy-status\": asked of a survivor after the proxies were back, every 250 ms, until all N are connected and SYNCED. CPU is each replica's from the kill to the end of the row; † the killed replica:\n\n")
	b.WriteString("| scope | proxies | SIGKILLed | its streams | then | its proxies back: median / last | all N ACKed the Apply | proxy-status all SYNCED | streams after | survivors' CPU (ms) | RSS (MB) | peak RSS (MB) | other load |\n")
	b.WriteString("| --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, k := range kills {
		synced := fmtDur(k.synced)
		if k.synced < 0 {
			synced = "not in 60 s (" + k.syncedNote + ")"
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %d | %s | %s / %s | %s | %s | %s | %s | %s | %s | %.0f %% |\n",
			k.scope, k.n, k.victim, k.held, k.then, fmtDur(k.backMed), fmtDur(k.backLast), fmtDur(k.allAcked), synced,
			triple(k.after.streams, k.after.alive, strconv.Itoa), triple(k.after.cpu, k.after.alive, ms),
			triple(k.after.rss, k.after.alive, mb), triple(k.after.hwm, k.after.alive, mb), 100*k.load)
	}
	b.WriteString("\nOther load: CPU used by anything but this bench, its replicas and etcd during the row (/proc/stat), as a share of the machine's cores; the machine is shared with other engineers' builds and tests, so compare rows only within this run.\n")
	b.WriteString("\nSet-up and what each kill saw (the bench's log):\n\n")
	for _, s := range m.setupLog[1:] {
		b.WriteString("- " + s + "\n")
	}
	return b.String()
}

func cpuModelHA() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			return fmt.Sprintf("%d × %s", runtime.NumCPU(), strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":")))
		}
	}
	return fmt.Sprintf("%d cores", runtime.NumCPU())
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return fmt.Sprintf("%.0f GiB", kb/(1<<20))
		}
	}
	return "? GiB"
}

func etcdVersion() string {
	out, err := exec.Command(storetest.EtcdBinary(), "--version").Output()
	if err != nil {
		return "etcd"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(strings.Replace(line, "etcd Version:", "etcd", 1))
}

// writeResults replaces the block between haBegin and haEnd in path, or
// appends the section with it.
func writeResults(path, body string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(replaceHABlock(string(b), body)), 0o644)
}

func replaceHABlock(doc, body string) string {
	block := haBegin + "\n" + strings.TrimRight(body, "\n") + "\n" + haEnd
	i := strings.Index(doc, "<!-- fanout-ha:begin")
	j := strings.Index(doc, haEnd)
	if i >= 0 && j > i {
		return doc[:i] + block + doc[j+len(haEnd):]
	}
	section := haHeading + "\n\n" + block + "\n"
	// After the single-replica fan-out section: before the heading that
	// follows it, or at the end.
	if k := strings.Index(doc, "## Config push fan-out"); k >= 0 {
		if next := strings.Index(doc[k+1:], "\n## "); next >= 0 {
			at := k + 1 + next + 1
			return doc[:at] + section + "\n" + doc[at:]
		}
	}
	return strings.TrimRight(doc, "\n") + "\n\n" + section
}
