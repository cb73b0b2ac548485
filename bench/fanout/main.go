// Command fanout measures config push fan-out: N proxies as real gRPC
// streams over mTLS to a real meshd (a subprocess, so its CPU time and heap
// are measured apart from the simulated proxies), one Apply, and the time
// until every proxy has ACKed the new snapshot. Set-up is not timed.
//
// Each simulated proxy holds its own SVID, bound to its own instance ID, got
// the way a real proxy gets one: its own key and CSR, a Bootstrap over gRPC
// with a join token (one token of max(-n) uses), the instance ID in the
// request. meshd's Hello check then sees what it sees from a real fleet: the
// instance in the Hello is the one in the caller's certificate. All the
// proxies bootstrap from 127.0.0.1, so meshd is started with
// --bootstrap-burst max(-n) (its per-source-address limit).
//
//	go run ./bench/fanout -n 100,1000,2000
//
// With -replicas 3 (ha.go, issue 19) it runs three meshd replicas on one
// etcd instead, measures the Apply sent to the leader and to a follower,
// SIGKILLs the replica holding the most streams (times its proxies' return
// to a survivor, and an Apply sent right after the kill), reads each
// replica's CPU time and RSS, and rewrites its block in bench/RESULTS.md:
//
//	go run ./bench/fanout -replicas 3 -n 2000
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"minimesh/certs"
	"minimesh/controlplane/identity"
	"minimesh/internal/meshctl"
	meshv1 "minimesh/proto/mesh/v1"
)

func main() {
	sizes := flag.String("n", "100,1000,2000", "numbers of proxies, comma-separated")
	rounds := flag.Int("rounds", 3, "applies per size (the table shows the median)")
	scopes := flag.String("scopes", "all,upstream", "endpoint scopes the proxies ask for, comma-separated: all (no scope, as with a Host-routed port) or upstream (one --upstream service)")
	workers := flag.Int("bootstrap-workers", 16, "proxies bootstrapping at once during set-up")
	reps := flag.Int("replicas", 1, "meshd replicas: 1 (bbolt), or 2 to 7 on one etcd (Debian's /usr/bin/etcd), with a replica SIGKILLed (issue 19)")
	leaseTTL := flag.Duration("lease-ttl", 10*time.Second, "with -replicas > 1: meshd's --lease-ttl")
	results := flag.String("results", "bench/RESULTS.md", "with -replicas > 1: Markdown file whose fanout-ha block is rewritten (empty: print only)")
	flag.Parse()
	var err error
	if *reps == 1 {
		err = run(*sizes, *scopes, *rounds, *workers)
	} else {
		err = runReplicas(*sizes, *scopes, *rounds, *workers, *reps, *leaseTTL, *results)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fanout:", err)
		os.Exit(1)
	}
}

type result struct {
	scope         string
	n             int
	endpoints     int // in each proxy's snapshot
	converge      time.Duration
	meshdCPU      time.Duration
	heapMB, rssMB float64
	target        string
}

// parseFlags checks the flags both modes share.
func parseFlags(sizes, scopes string, rounds, workers int) (ns []int, maxN int, scopeList []string, err error) {
	if rounds < 1 {
		return nil, 0, nil, fmt.Errorf("-rounds: must be at least 1, got %d", rounds)
	}
	if workers < 1 || workers > 1024 {
		return nil, 0, nil, fmt.Errorf("-bootstrap-workers: must be 1 to 1024, got %d", workers)
	}
	for _, f := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > identity.MaxTokenUses {
			return nil, 0, nil, fmt.Errorf("-n: %q: want a number of proxies from 1 to %d (a join token's most uses)", f, identity.MaxTokenUses)
		}
		ns = append(ns, n)
		maxN = max(maxN, n)
	}
	for _, scope := range strings.Split(scopes, ",") {
		scope = strings.TrimSpace(scope)
		if scope != "all" && scope != "upstream" {
			return nil, 0, nil, fmt.Errorf("-scopes: %q: want all or upstream", scope)
		}
		scopeList = append(scopeList, scope)
	}
	return ns, maxN, scopeList, nil
}

// runReplicas is the -replicas mode (ha.go).
func runReplicas(sizes, scopes string, rounds, workers, reps int, leaseTTL time.Duration, results string) error {
	ns, maxN, scopeList, err := parseFlags(sizes, scopes, rounds, workers)
	if err != nil {
		return err
	}
	if reps < 2 || reps > 7 {
		return fmt.Errorf("-replicas: want 1, or 2 to 7 replicas on etcd, got %d", reps)
	}
	if leaseTTL < 2*time.Second || leaseTTL > time.Hour || leaseTTL%time.Second != 0 {
		return fmt.Errorf("-lease-ttl: want whole seconds from 2s to 1h (meshd's --lease-ttl), got %s", leaseTTL)
	}
	return runHA(haConfig{ns: ns, maxN: maxN, scopes: scopeList, rounds: rounds, workers: workers, replicas: reps,
		leaseTTL: leaseTTL, results: results, command: "go run ./bench/fanout " + strings.Join(os.Args[1:], " ")})
}

func run(sizes, scopes string, rounds, workers int) error {
	ns, maxN, scopeList, err := parseFlags(sizes, scopes, rounds, workers)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "fanout")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin := filepath.Join(work, "meshd")
	if out, err := exec.Command("go", "build", "-o", bin, "minimesh/cmd/meshd").CombinedOutput(); err != nil {
		return fmt.Errorf("build meshd: %v\n%s", err, out)
	}
	addr, metrics := freeAddr(), freeAddr()
	data := filepath.Join(work, "data")
	cmd := exec.Command(bin, "--data-dir", data, "--listen", addr, "--metrics", metrics, "--log-level", "warn",
		"--bootstrap-burst", strconv.Itoa(maxN)) // every proxy bootstraps from 127.0.0.1
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	td := spiffeid.RequireTrustDomainFromString("minimesh.local")
	admin, err := operator(data, addr)
	if err != nil {
		return err
	}
	setup := time.Now()
	tcs, err := bootstrapAll(admin, []string{addr}, td, maxN, workers)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "fanout: set-up: %d proxies bootstrapped (own key, CSR, instance ID and SVID each; %d at once) in %s\n", maxN, workers, time.Since(setup).Round(time.Millisecond))
	if _, err := apply(admin, applied.Add(1)); err != nil {
		return err
	}

	var results []result
	for _, scope := range scopeList {
		for _, n := range ns {
			r, err := fanout(admin, addr, tcs[:n], cmd.Process.Pid, metrics, rounds, scope)
			if err != nil {
				return err
			}
			results = append(results, r)
		}
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "scope\tproxies\tendpoints per snapshot\tall ACKed after\tmeshd CPU\tmeshd heap MB\tmeshd RSS MB\ttarget (2000 < 1s)\t")
	for _, r := range results {
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%s\t%.1f\t%.1f\t%s\t\n", r.scope, r.n, r.endpoints, r.converge.Round(time.Millisecond), r.meshdCPU.Round(time.Millisecond), r.heapMB, r.rssMB, r.target)
	}
	return w.Flush()
}

// proxy is one simulated proxy: it ACKs every snapshot at once.
type proxy struct {
	conn      *grpc.ClientConn
	cancel    context.CancelFunc
	mu        sync.Mutex // one sender on the stream at a time
	st        meshv1.ConfigService_StreamClient
	done      chan struct{} // closed when the receive loop ends
	err       error         // why it ended; read after done
	gen       atomic.Int64  // the Apply (routeGen) of the last snapshot ACKed
	endpoints atomic.Int64  // in the last snapshot ACKed
	acked     chan struct{} // a snapshot was ACKed (capacity 1)
	scope     *meshv1.EndpointScope
}

// fanout connects one proxy per bootstrapped credential in tcs (proxy i is
// instance instanceID(i)), times rounds of Apply until every one ACKed,
// and drains them all.
func fanout(admin meshv1.AdminServiceClient, addr string, tcs []*tls.Config, pid int, metrics string, rounds int, scope string) (result, error) {
	n := len(tcs)
	proxies := make([]*proxy, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 64) // bound concurrent handshakes during set-up
	for i := range proxies {
		p := &proxy{acked: make(chan struct{}, 1), done: make(chan struct{})}
		if scope == "upstream" {
			// As a proxy whose outbound has one --upstream port.
			p.scope = &meshv1.EndpointScope{Services: []string{"default/api"}}
		}
		proxies[i] = p
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			err := p.start(addr, tcs[i], instanceID(i))
			<-sem
			if err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	defer drainAll(proxies)
	if r := retried.Swap(0); r > 0 {
		fmt.Fprintf(os.Stderr, "fanout: scope %s, %d proxies: %d push stream opens were refused or cut (Unavailable) and tried again\n", scope, n, r)
	}
	select {
	case err := <-errs:
		return result{}, err
	default:
	}
	// Before the clock starts, every proxy holds the current config and
	// (scope all) every proxy's endpoint: no push for the set-up is still
	// on its way when the timed Apply goes out.
	wantEndpoints := int64(n)
	if scope == "upstream" {
		wantEndpoints = 0 // nothing serves default/api
	}
	cur := applied.Load()
	for i, p := range proxies {
		if err := p.waitFor(func() bool { return p.gen.Load() >= cur && p.endpoints.Load() == wantEndpoints }, 60*time.Second); err != nil {
			return result{}, fmt.Errorf("scope %s, %d proxies, set-up: %s (%d before it did) did not ACK a snapshot with the config and %d endpoints: %w", scope, n, instanceID(i), i, wantEndpoints, err)
		}
	}
	var times []time.Duration
	var cpu time.Duration
	for r := 0; r < rounds; r++ {
		gen := applied.Add(1)
		cpu0 := cpuTime(pid)
		start := time.Now()
		if _, err := apply(admin, gen); err != nil {
			return result{}, err
		}
		for i, p := range proxies {
			if err := p.waitFor(func() bool { return p.gen.Load() >= gen }, 30*time.Second); err != nil {
				return result{}, fmt.Errorf("scope %s, %d proxies, round %d: %s (%d before it did) did not ACK the Apply: %w", scope, n, r+1, instanceID(i), i, err)
			}
		}
		times = append(times, time.Since(start))
		cpu += cpuTime(pid) - cpu0
	}
	med := median(times)
	heap, rss := scrape(metrics)
	res := result{scope: scope, n: n, endpoints: int(proxies[0].endpoints.Load()), converge: med, meshdCPU: cpu / time.Duration(rounds), heapMB: heap / (1 << 20), rssMB: rss / (1 << 20), target: "-"}
	if n >= 2000 {
		res.target = "missed"
		if med < time.Second {
			res.target = "met"
		}
	}
	return res, nil
}

func (p *proxy) start(addr string, tc *tls.Config, id string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		close(p.done)
		return err
	}
	p.conn = conn
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	hello := &meshv1.StreamRequest{Message: &meshv1.StreamRequest_Hello{Hello: &meshv1.Hello{
		InstanceId: id, Service: "bench", AdvertiseAddress: "127.0.0.1:1", ProxyVersion: "fanout", EndpointScope: p.scope,
	}}}
	// As mesh-proxy's agent does, a connection refused or cut (meshd's
	// handshake deadline on a loaded machine while it pushes to the
	// proxies already in) is tried again after a backoff; the rest is final.
	var st meshv1.ConfigService_StreamClient
	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		st, err = open(ctx, conn, hello)
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || attempt == startAttempts {
			close(p.done)
			return fmt.Errorf("%s: open the push stream (attempt %d of %d): %w", id, attempt, startAttempts, err)
		}
		retried.Add(1)
		time.Sleep(backoff)
		backoff *= 2
	}
	p.st = st
	go func() {
		defer close(p.done)
		for {
			m, err := st.Recv()
			if err != nil {
				p.err = err
				return
			}
			if snap := m.GetSnapshot(); snap != nil {
				if err := p.send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Ack{Ack: &meshv1.Ack{Version: snap.GetVersion()}}}); err != nil {
					p.err = err
					return
				}
				p.endpoints.Store(int64(len(snap.GetEndpoints())))
				p.gen.Store(routeGen(snap))
				select {
				case p.acked <- struct{}{}:
				default:
				}
			}
		}
	}()
	return nil
}

// startAttempts bounds the tries to open one proxy's push stream
// (backoff 0.2, 0.4, 0.8, 1.6 s).
const startAttempts = 5

// retried counts stream opens tried again, reported after each set-up.
var retried atomic.Int64

// open opens a push stream and says Hello on it.
func open(ctx context.Context, conn *grpc.ClientConn, hello *meshv1.StreamRequest) (meshv1.ConfigService_StreamClient, error) {
	st, err := meshv1.NewConfigServiceClient(conn).Stream(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Send(hello); err != nil {
		if errors.Is(err, io.EOF) { // the stream's status comes from Recv
			_, err = st.Recv()
		}
		return nil, err
	}
	return st, nil
}

func (p *proxy) send(m *meshv1.StreamRequest) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st.Send(m)
}

// drainAll ends every proxy as mesh-proxy ends on SIGTERM: a Drain, which
// makes meshd drop its endpoint at once and end the stream. Without it
// meshd would keep each one an endpoint for --endpoint-grace, and the next
// size or scope would count them in its snapshots.
func drainAll(proxies []*proxy) {
	for _, p := range proxies {
		if p.st != nil {
			_ = p.send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Drain{Drain: &meshv1.Drain{}}})
		}
	}
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	expired := false
	for _, p := range proxies {
		if p.conn == nil {
			continue
		}
		if !expired {
			select {
			case <-p.done:
			case <-deadline.C:
				expired = true
				fmt.Fprintln(os.Stderr, "fanout: meshd did not end every drained stream in 30s")
			}
		}
		p.cancel()
		p.conn.Close()
	}
}

// waitFor waits until ok holds after an ACK, the stream ends, or d passes.
func (p *proxy) waitFor(ok func() bool, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for !ok() {
		select {
		case <-p.acked:
		case <-p.done:
			if ok() {
				return nil
			}
			return fmt.Errorf("its stream ended: %w", p.err)
		case <-timer.C:
			return fmt.Errorf("not in %s (last ACKed: Apply %d, %d endpoints)", d, p.gen.Load(), p.endpoints.Load())
		}
	}
	return nil
}

// routeGen is the Apply a snapshot holds: N of the bench Route's "/gen-N/"
// prefix (0 if none).
func routeGen(snap *meshv1.Snapshot) int64 {
	for _, r := range snap.GetResources() {
		if r.GetKind() != "Route" || r.GetName() != "bench" {
			continue
		}
		for _, m := range r.GetRoute().GetMatches() {
			var g int64
			if _, err := fmt.Sscanf(m.GetPath().GetPrefix(), "/gen-%d/", &g); err == nil {
				return g
			}
		}
	}
	return 0
}

// applied counts Applies: each one routes a new prefix, so each changes the
// config (an Apply equal to the last one pushes nothing, and no proxy would
// ACK a new version).
var applied atomic.Int64

func apply(admin meshv1.AdminServiceClient, gen int64) (*meshv1.ApplyResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return admin.Apply(ctx, &meshv1.ApplyRequest{Resources: []*meshv1.Resource{
		{ApiVersion: "minimesh.io/v1alpha1", Kind: "Service", Name: "bench", Namespace: "bench", Spec: &meshv1.Resource_Service{Service: &meshv1.ServiceSpec{
			Ports:             []*meshv1.ServicePort{{Name: "http", Port: 8080, Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
			ServingIdentities: []string{"spiffe://minimesh.local/ns/bench/sa/bench"},
		}}},
		{ApiVersion: "minimesh.io/v1alpha1", Kind: "Route", Name: "bench", Namespace: "bench", Spec: &meshv1.Resource_Route{Route: &meshv1.RouteSpec{
			Service:  "bench",
			Matches:  []*meshv1.RouteMatch{{Path: &meshv1.PathMatch{Kind: &meshv1.PathMatch_Prefix{Prefix: fmt.Sprintf("/gen-%d/", gen)}}}},
			Backends: []*meshv1.RouteBackend{{Service: "bench"}},
		}}},
	}})
}

func operator(data, addr string) (meshv1.AdminServiceClient, error) {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if conn, err := meshctl.Dial(addr, filepath.Join(data, "operator")); err == nil {
			c := meshv1.NewAdminServiceClient(conn)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = c.ListProxies(ctx, &meshv1.ListProxiesRequest{})
			cancel()
			if err == nil {
				return c, nil
			}
			conn.Close()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("meshd on %s did not answer", addr)
}

// instanceID is proxy i's instance ID, bound into its SVID at Bootstrap
// and said again in its Hello.
func instanceID(i int) string { return fmt.Sprintf("bench-%05d", i) }

// bootstrapAll gets n SVIDs for spiffe://td/ns/bench/sa/bench, one per
// simulated proxy (replicas of one Deployment share the identity, not the
// certificate), with at most workers Bootstraps at once (proxy i through
// addrs[i % len(addrs)]), and returns each proxy's mTLS client config for
// the push stream.
func bootstrapAll(admin meshv1.AdminServiceClient, addrs []string, td spiffeid.TrustDomain, n, workers int) ([]*tls.Config, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	tok, err := admin.CreateJoinToken(ctx, &meshv1.CreateJoinTokenRequest{
		Namespace: "bench", ServiceAccount: "bench", Uses: uint32(n), Ttl: durationpb.New(time.Hour),
	})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("create a join token of %d uses: %w", n, err)
	}
	pinned, err := certs.PinnedClientConfig(tok.CaPin, certs.MeshdID(td), certs.TLSOptions{})
	if err != nil {
		return nil, err
	}
	svids := make([]*x509svid.SVID, n)
	bundles := make([][]*x509.Certificate, n)
	next := make(chan int)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		stop  = make(chan struct{})
	)
	fail := func(err error) { once.Do(func() { first = err; close(stop) }) }
	for w := 0; w < min(workers, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				svid, roots, err := bootstrapOne(addrs[i%len(addrs)], pinned, tok.Secret, td, instanceID(i))
				if err != nil {
					fail(fmt.Errorf("bootstrap %s: %w", instanceID(i), err))
					return
				}
				svids[i], bundles[i] = svid, roots
			}
		}()
	}
feed:
	for i := 0; i < n; i++ {
		select {
		case next <- i:
		case <-stop:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first != nil {
		return nil, first
	}
	// Every proxy trusts the bundle its own Bootstrap returned; with no CA
	// rotation during set-up they are all the same roots.
	tcs := make([]*tls.Config, n)
	for i, svid := range svids {
		src := certs.NewSVIDSource(nil)
		src.Set(svid)
		bundle := certs.NewBundleSource(x509bundle.FromX509Authorities(td, bundles[i]))
		tcs[i] = certs.MTLSClientConfig(src, bundle, certs.AuthorizeID(certs.MeshdID(td)), certs.TLSOptions{})
	}
	return tcs, nil
}

// bootstrapOne is one proxy's first start: a fresh key and CSR, a pinned
// connection of its own, Bootstrap with the join token and its instance ID.
// It checks that meshd bound that instance ID into the SVID.
func bootstrapOne(addr string, pinned *tls.Config, token string, td spiffeid.TrustDomain, inst string) (*x509svid.SVID, []*x509.Certificate, error) {
	id := spiffeid.RequireFromPath(td, "/ns/bench/sa/bench")
	key, err := certs.GenerateKey()
	if err != nil {
		return nil, nil, err
	}
	csr, err := certs.NewCSR(key, id)
	if err != nil {
		return nil, nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(pinned.Clone())))
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := meshv1.NewIdentityServiceClient(conn).Bootstrap(ctx, &meshv1.BootstrapRequest{Token: token, Csr: csr, InstanceId: inst})
	if err != nil {
		return nil, nil, err
	}
	chain, err := certs.ParseCertsDER(resp.GetSvid().GetCertChain())
	if err != nil {
		return nil, nil, err
	}
	if len(chain) == 0 {
		return nil, nil, fmt.Errorf("meshd returned an empty chain")
	}
	if got := certs.InstanceID(chain[0]); got != inst {
		return nil, nil, fmt.Errorf("meshd bound instance %q into the SVID, asked for %q", got, inst)
	}
	roots, err := certs.ParseCertsDER(resp.GetSvid().GetTrustBundle())
	if err != nil {
		return nil, nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, roots, nil
}

// cpuTime is the process's user+system CPU time from /proc/<pid>/stat.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// scrape reads meshd's heap in use and RSS from its /metrics.
func scrape(addr string) (heap, rss float64) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			heap, _ = strconv.ParseFloat(v, 64)
		}
		if v, ok := strings.CutPrefix(line, "process_resident_memory_bytes "); ok {
			rss, _ = strconv.ParseFloat(v, 64)
		}
	}
	return heap, rss
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}
