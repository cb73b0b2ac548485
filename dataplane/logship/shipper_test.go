package logship

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"

	"minimesh/api"
	"minimesh/certs/certstest"
	"minimesh/dataplane/logship/s3test"
	meshv1 "minimesh/proto/mesh/v1"
)

const bucket = "mesh-logs"

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func shipping(endpoint, creds string, mod func(*meshv1.LogShippingSpec)) *api.LogShipping {
	spec := &meshv1.LogShippingSpec{
		Service: "api", Endpoint: endpoint, Bucket: bucket, PathStyle: true, CredentialsFile: creds,
		BatchBytes: api.MinBatchBytes, BatchAge: durationpb.New(time.Hour),
	}
	if mod != nil {
		mod(spec)
	}
	return &api.LogShipping{Metadata: api.Metadata{Name: "logs", Namespace: "prod"}, Spec: spec}
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type harness struct {
	t      *testing.T
	sh     *Shipper
	reg    *prometheus.Registry
	logs   *syncBuffer
	stop   context.CancelFunc
	done   chan error
	dir    string
	nextID atomic.Int64
}

// newShipper starts a Shipper on dir with o applied; it stops when the
// test ends (or by h.close).
func newShipper(t *testing.T, dir string, o *api.LogShipping, edit ...func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, reg: prometheus.NewRegistry(), logs: &syncBuffer{}, dir: dir, done: make(chan error, 1)}
	cfg := Config{
		SpoolDir: dir, Service: "api", Pod: "api-7d9f", Instance: func() string { return "i-1" },
		BackoffMin: 50 * time.Millisecond, BackoffMax: 400 * time.Millisecond, CallTimeout: 5 * time.Second,
		FlushTimeout: 10 * time.Second, firstOffset: 1,
		Logger:     slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: h.reg,
	}
	for _, e := range edit {
		e(&cfg)
	}
	sh, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.sh = sh
	if o != nil {
		commit, err := sh.Prepare(o)
		if err != nil {
			t.Fatal(err)
		}
		commit()
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	go func() { h.done <- sh.Run(ctx) }()
	t.Cleanup(h.close)
	return h
}

func (h *harness) close() {
	if h.stop == nil {
		return
	}
	h.stop()
	h.stop = nil
	if err := <-h.done; err != nil {
		h.t.Errorf("Run: %v", err)
	}
}

// offer sends n records with the next IDs, each padded to about size
// bytes, failing on a refused one.
func (h *harness) offer(n, size int) {
	h.t.Helper()
	for range n {
		id := h.nextID.Add(1)
		rec := record(id, size)
		if !h.sh.Offer(rec) {
			h.t.Fatalf("record %d refused", id)
		}
	}
}

// record is a record with ID id whose line (newline included) is size
// bytes.
func record(id int64, size int) []byte {
	head := fmt.Sprintf(`{"id":%d,"msg":"`, id)
	pad := max(0, size-1-len(head)-2)
	return fmt.Appendf(nil, `%s%s"}`, head, strings.Repeat(string(rune('a'+id%26)), pad))
}

// ids counts each record ID in the bucket.
func ids(t *testing.T, srv *s3test.Server) (map[int64]int, []s3test.Object, error) {
	objs, err := srv.Objects(context.Background(), bucket, "")
	if err != nil {
		return nil, nil, err
	}
	seen := map[int64]int{}
	for _, o := range objs {
		for _, l := range o.Lines {
			var r struct{ ID int64 }
			if err := json.Unmarshal(l, &r); err != nil {
				return nil, nil, fmt.Errorf("%s: %q: %w", o.Key, l, err)
			}
			seen[r.ID]++
		}
	}
	return seen, objs, nil
}

// exactlyOnce waits until the bucket holds IDs 1..n, each once.
func exactlyOnce(t *testing.T, srv *s3test.Server, n int64, timeout time.Duration) []s3test.Object {
	t.Helper()
	var objs []s3test.Object
	s3test.Eventually(t, timeout, func() error {
		seen, o, err := ids(t, srv)
		if err != nil {
			return err
		}
		objs = o
		for id, c := range seen {
			if c != 1 || id < 1 || id > n {
				return fmt.Errorf("record %d stored %d times (want IDs 1..%d once)", id, c, n)
			}
		}
		if int64(len(seen)) != n {
			return fmt.Errorf("%d of %d records stored: %w", len(seen), n, s3test.ErrNotYet)
		}
		return nil
	})
	return objs
}

var keyRE = regexp.MustCompile(`^api/api-7d9f/i-1/(\d{20})-(\d{20})\.jsonl\.gz$`)

func TestBatchBySize(t *testing.T) {
	srv := s3test.Start(t, bucket)
	dir := t.TempDir()
	h := newShipper(t, filepath.Join(dir, "spool"), shipping(srv.Endpoint(), srv.CredentialsFile(dir), nil))
	// 1 KiB lines: 64 fill a 64 KiB batch; 200 make 3 batches and 8
	// records left open (batchAge is an hour).
	h.offer(200, 1024)
	objs := exactlyOnceUpTo(t, srv, 192)
	if len(objs) != 3 {
		t.Fatalf("%d objects, want 3 batches closed by size", len(objs))
	}
	next := uint64(1)
	for _, o := range objs {
		m := keyRE.FindStringSubmatch(o.Key)
		if m == nil {
			t.Fatalf("key %q is not <service>/<pod>/<instance>/<first>-<last>.jsonl.gz", o.Key)
		}
		if want := fmtOffset(next) + "-" + fmtOffset(next+uint64(len(o.Lines))-1); m[1]+"-"+m[2] != want {
			t.Errorf("key %s, want offsets %s", o.Key, want)
		}
		var size int
		for _, l := range o.Lines {
			size += len(l) + 1
		}
		if size != api.MinBatchBytes {
			t.Errorf("%s holds %d bytes, want batchBytes (%d)", o.Key, size, api.MinBatchBytes)
		}
		next += uint64(len(o.Lines))
	}
	st := h.sh.Stats()
	if st.OpenRecords != 8 || st.ClosedBatches != 0 {
		t.Errorf("spool %+v, want 8 records in the open batch and no closed batch", st)
	}
	if got := testutil.ToFloat64(h.sh.m.sealed.WithLabelValues("size")); got != 3 {
		t.Errorf("batches closed by size: %v", got)
	}
	if got := testutil.ToFloat64(h.sh.m.shipped); got != 192 {
		t.Errorf("records shipped: %v", got)
	}
	// Stopping closes the open batch and uploads it before Run returns.
	h.close()
	if got := testutil.ToFloat64(h.sh.m.sealed.WithLabelValues("stop")); got != 1 {
		t.Errorf("batches closed at stop: %v", got)
	}
	if seen, _, err := ids(t, srv); err != nil || len(seen) != 200 {
		t.Errorf("after stop the store holds %d records (%v), want 200", len(seen), err)
	}
	if st := h.sh.Stats(); st.SpoolBytes != 0 {
		t.Errorf("spool after stop: %+v", st)
	}
}

// exactlyOnceUpTo waits for IDs 1..n once each.
func exactlyOnceUpTo(t *testing.T, srv *s3test.Server, n int64) []s3test.Object {
	return exactlyOnce(t, srv, n, 10*time.Second)
}

func TestBatchByAge(t *testing.T) {
	srv := s3test.Start(t, bucket)
	dir := t.TempDir()
	h := newShipper(t, filepath.Join(dir, "spool"), shipping(srv.Endpoint(), srv.CredentialsFile(dir), func(s *meshv1.LogShippingSpec) {
		s.BatchAge = durationpb.New(time.Second)
	}))
	h.offer(7, 100)
	objs := exactlyOnceUpTo(t, srv, 7)
	if len(objs) != 1 || !strings.HasSuffix(objs[0].Key, fmtOffset(1)+"-"+fmtOffset(7)+".jsonl.gz") {
		t.Fatalf("objects %v, want one batch 1-7", keysOf(objs))
	}
	if got := testutil.ToFloat64(h.sh.m.sealed.WithLabelValues("age")); got != 1 {
		t.Errorf("batches closed by age: %v", got)
	}
	// The next records start a new batch, with the next offsets.
	h.offer(3, 100)
	objs = exactlyOnceUpTo(t, srv, 10)
	if len(objs) != 2 || !strings.HasSuffix(objs[1].Key, fmtOffset(8)+"-"+fmtOffset(10)+".jsonl.gz") {
		t.Fatalf("objects %v, want a second batch 8-10", keysOf(objs))
	}
	if h.sh.Stats().SpoolBytes != 0 {
		t.Errorf("spool holds %d bytes after every batch was uploaded", h.sh.Stats().SpoolBytes)
	}
}

// Virtual-hosted style: the bucket is in the host name; path style: in
// the path.
func TestAddressingStyles(t *testing.T) {
	srv := s3test.StartWith(t, s3test.Options{VirtualDomain: "localhost"}, bucket)
	_, port, _ := net.SplitHostPort(srv.Addr)
	for _, pathStyle := range []bool{false, true} {
		var mu sync.Mutex
		dialled := map[string]bool{}
		dir := t.TempDir()
		h := newShipper(t, filepath.Join(dir, "spool"), shipping("http://localhost:"+port, srv.CredentialsFile(dir), func(s *meshv1.LogShippingSpec) {
			s.PathStyle = pathStyle
		}), func(c *Config) {
			c.Pod = fmt.Sprintf("path-style-%v", pathStyle) // keys of their own
			// <bucket>.localhost does not resolve here: every name is
			// the server.
			c.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				mu.Lock()
				dialled[addr] = true
				mu.Unlock()
				return (&net.Dialer{}).DialContext(ctx, network, srv.Addr)
			}
		})
		if pathStyle {
			h.nextID.Store(3)
		}
		h.offer(3, 100)
		h.close() // the stop closes the batch and uploads it
		want := 3
		if pathStyle {
			want = 6
		}
		exactlyOnce(t, srv, int64(want), 5*time.Second)
		mu.Lock()
		wantHost := bucket + ".localhost:" + port
		if pathStyle {
			wantHost = "localhost:" + port
		}
		if len(dialled) != 1 || !dialled[wantHost] {
			t.Errorf("path style %v: dialled %v, want %s", pathStyle, dialled, wantHost)
		}
		mu.Unlock()
	}
}

// An https store is trusted through spec.caBundle; without it (the
// system roots) the batch stays in the spool.
func TestHTTPSWithCABundle(t *testing.T) {
	dir := t.TempDir()
	cert, pool := certstest.SelfSigned(t, "localhost")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := s3test.StartWith(t, s3test.Options{CertFile: certFile, KeyFile: keyFile, RootCAs: pool}, bucket)
	_, port, _ := net.SplitHostPort(srv.Addr)
	endpoint := "https://localhost:" + port

	untrusted := newShipper(t, filepath.Join(dir, "spool1"), shipping(endpoint, srv.CredentialsFile(dir), nil),
		func(c *Config) { c.FlushTimeout = -1 })
	untrusted.offer(64, 1024) // one batch, closed by size
	s3test.Eventually(t, 10*time.Second, func() error {
		if testutil.ToFloat64(untrusted.sh.m.batchesFailed) < 1 {
			return s3test.ErrNotYet
		}
		return nil
	})
	untrusted.close()
	if st := untrusted.sh.Stats(); st.ClosedBatches != 1 || !strings.Contains(untrusted.logs.String(), "certificate") {
		t.Fatalf("without the caBundle: spool %+v, log:\n%s", st, untrusted.logs.String())
	}

	h := newShipper(t, filepath.Join(dir, "spool2"), shipping(endpoint, srv.CredentialsFile(dir), func(s *meshv1.LogShippingSpec) {
		s.CaBundle = string(certPEM)
	}))
	h.offer(3, 100)
	h.close()
	exactlyOnce(t, srv, 3, 5*time.Second)
}

func keysOf(objs []s3test.Object) []string {
	var k []string
	for _, o := range objs {
		k = append(k, o.Key)
	}
	return k
}

// etagProxy is a reverse proxy before the store that, while wrong is set,
// answers PUTs with a wrong ETag and a wrong x-amz-checksum-sha256, or
// none while noSum is set too (the store itself keeps the object).
type etagProxy struct {
	addr  string
	wrong atomic.Bool
	noSum atomic.Bool
	// etagOnly: only the ETag is wrong (as under SSE-KMS, where it is
	// not an MD5); the store's checksum goes through.
	etagOnly atomic.Bool
	puts     atomic.Int64
	keys     sync.Map // object path -> PUT count
}

func startETagProxy(t *testing.T, target string) *etagProxy {
	p := &etagProxy{}
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(r *http.Response) error {
		if r.Request.Method == http.MethodPut {
			p.puts.Add(1)
			n, _ := p.keys.LoadOrStore(r.Request.URL.Path, new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
			if p.wrong.Load() {
				r.Header.Set("ETag", `"00000000000000000000000000000000"`)
				switch {
				case p.etagOnly.Load():
				case p.noSum.Load():
					r.Header.Del("X-Amz-Checksum-Sha256")
				default:
					r.Header.Set("X-Amz-Checksum-Sha256", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
				}
			}
		}
		return nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	p.addr = l.Addr().String()
	return p
}

func TestChecksumMismatchKeepsBatchAndRetryOverwrites(t *testing.T) {
	srv := s3test.Start(t, bucket)
	px := startETagProxy(t, srv.Endpoint())
	px.wrong.Store(true)
	dir := t.TempDir()
	h := newShipper(t, filepath.Join(dir, "spool"), shipping("http://"+px.addr, srv.CredentialsFile(dir), func(s *meshv1.LogShippingSpec) {
		s.BatchAge = durationpb.New(time.Second)
	}))
	h.offer(5, 100)
	// The store has the object, but its answer does not carry the batch's
	// MD5: the batch stays in the spool and is PUT again.
	s3test.Eventually(t, 10*time.Second, func() error {
		if px.puts.Load() < 3 {
			return fmt.Errorf("%d PUTs: %w", px.puts.Load(), s3test.ErrNotYet)
		}
		return nil
	})
	if st := h.sh.Stats(); st.ClosedBatches != 1 {
		t.Fatalf("spool %+v: the batch left the spool without a matching checksum", st)
	}
	if got := testutil.ToFloat64(h.sh.m.batchesUploaded); got != 0 {
		t.Fatalf("batches uploaded: %v", got)
	}
	if got := testutil.ToFloat64(h.sh.m.batchesFailed); got < 3 {
		t.Errorf("failed uploads: %v", got)
	}
	if !strings.Contains(h.logs.String(), "x-amz-checksum-sha256") {
		t.Errorf("the failure's reason is not logged:\n%s", h.logs.String())
	}
	// A store that sends no checksum: its ETag must be the MD5.
	px.noSum.Store(true)
	before := px.puts.Load()
	s3test.Eventually(t, 10*time.Second, func() error {
		if px.puts.Load() < before+2 {
			return fmt.Errorf("%d PUTs: %w", px.puts.Load(), s3test.ErrNotYet)
		}
		return nil
	})
	if st := h.sh.Stats(); st.ClosedBatches != 1 || testutil.ToFloat64(h.sh.m.batchesUploaded) != 0 {
		t.Fatalf("spool %+v: the batch left the spool on an ETag that is not its MD5", st)
	}
	if !strings.Contains(h.logs.String(), "ETag") {
		t.Errorf("the ETag failure is not logged:\n%s", h.logs.String())
	}
	// The store's SHA-256 is the batch's: the ETag need not be an MD5.
	px.etagOnly.Store(true)
	objs := exactlyOnceUpTo(t, srv, 5)
	s3test.Eventually(t, 5*time.Second, func() error {
		if h.sh.Stats().ClosedBatches != 0 {
			return s3test.ErrNotYet
		}
		return nil
	})
	// Every PUT went to the same key: the store holds one object.
	if len(objs) != 1 {
		t.Fatalf("objects %v, want the retried batch once", keysOf(objs))
	}
	n := 0
	px.keys.Range(func(k, v any) bool {
		n++
		if !strings.HasSuffix(k.(string), "/"+objs[0].Key) {
			t.Errorf("a PUT went to %s, not %s", k, objs[0].Key)
		}
		return true
	})
	if n != 1 || px.puts.Load() < 6 {
		t.Errorf("%d keys PUT, %d PUTs; want 1 key PUT several times", n, px.puts.Load())
	}
}

func TestSpoolBoundDropsOldest(t *testing.T) {
	dir := t.TempDir()
	// No store listens: every batch waits in the spool.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + l.Addr().String()
	_ = l.Close()
	creds := filepath.Join(dir, "creds")
	if err := os.WriteFile(creds, []byte("access_key_id=a\nsecret_access_key=b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const limit = 4 * api.MinBatchBytes
	h := newShipper(t, filepath.Join(dir, "spool"), shipping(dead, creds, func(s *meshv1.LogShippingSpec) {
		s.SpoolBytes = limit
	}), func(c *Config) { c.FlushTimeout = -1 })
	// Incompressible records (random hex): a closed batch keeps about
	// half its size; 40 batches are far over the bound.
	for i := range 40 * 66 {
		id := int64(i + 1)
		rec := fmt.Appendf(nil, `{"id":%d,"msg":"%s"}`, id, randomHex(t, 480))
		if !h.sh.Offer(rec) {
			t.Fatalf("record %d refused", id)
		}
		if i%500 == 0 {
			waitQueueEmpty(t, h.sh)
		}
	}
	waitQueueEmpty(t, h.sh)
	st := h.sh.Stats()
	if st.SpoolBytes > limit {
		t.Fatalf("spool holds %d bytes, over its bound %d", st.SpoolBytes, limit)
	}
	dropped := testutil.ToFloat64(h.sh.m.batchesDropped)
	if dropped == 0 || testutil.ToFloat64(h.sh.m.dropped.WithLabelValues("spool_full")) == 0 {
		t.Fatalf("nothing dropped (%v batches)", dropped)
	}
	if !strings.Contains(h.logs.String(), "spool full, oldest batches dropped") {
		t.Errorf("no log line for the drop:\n%s", h.logs.String())
	}
	// What is left are the newest batches, contiguous up to the open one.
	h.sh.spool.mu.Lock()
	sealed := append([]batch(nil), h.sh.spool.sealed...)
	openFrom := h.sh.spool.openFrom
	h.sh.spool.mu.Unlock()
	if len(sealed) == 0 {
		t.Fatal("no batch left")
	}
	// The one in flight at a drop may survive out of order; the rest are
	// the newest run.
	for i := 1; i < len(sealed); i++ {
		if sealed[i].first != sealed[i-1].last+1 && i != 1 {
			t.Errorf("batches left are not the newest run: %v", sealed)
		}
	}
	if last := sealed[len(sealed)-1]; last.last+1 != openFrom && st.OpenRecords > 0 {
		t.Errorf("newest closed batch %v does not end where the open batch (%d) starts", last, openFrom)
	}
	if sealed[len(sealed)-1].first < 30*66 {
		t.Errorf("newest batch left starts at %d: the newest were dropped", sealed[len(sealed)-1].first)
	}
}

func waitQueueEmpty(t *testing.T, s *Shipper) {
	t.Helper()
	s3test.Eventually(t, 10*time.Second, func() error {
		if n := s.Stats().QueuedRecords; n > 0 {
			return fmt.Errorf("%d records queued: %w", n, s3test.ErrNotYet)
		}
		return nil
	})
	time.Sleep(20 * time.Millisecond) // the last one taken is written
}

func TestCredentialsNeverLoggedAndReread(t *testing.T) {
	srv := s3test.Start(t, bucket)
	dir := t.TempDir()
	creds := filepath.Join(dir, "creds")
	wrongSecret := "WRONG" + srv.SecretAccessKey[5:]
	write := func(secret string) {
		tmp := creds + ".tmp"
		if err := os.WriteFile(tmp, []byte("access_key_id="+srv.AccessKeyID+"\nsecret_access_key="+secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, creds); err != nil { // as a Secret's update does
			t.Fatal(err)
		}
	}
	write(wrongSecret)
	h := newShipper(t, filepath.Join(dir, "spool"), shipping(srv.Endpoint(), creds, func(s *meshv1.LogShippingSpec) {
		s.BatchAge = durationpb.New(time.Second)
	}))
	h.offer(3, 100)
	s3test.Eventually(t, 10*time.Second, func() error {
		if testutil.ToFloat64(h.sh.m.batchesFailed) < 2 {
			return s3test.ErrNotYet
		}
		return nil
	})
	// The rotated file is read again: the batch goes through.
	write(srv.SecretAccessKey)
	exactlyOnceUpTo(t, srv, 3)
	logs := h.logs.String()
	if !strings.Contains(logs, "upload failed") {
		t.Fatalf("the refused uploads were not logged:\n%s", logs)
	}
	for _, secret := range []string{wrongSecret, srv.SecretAccessKey} {
		if strings.Contains(logs, secret) {
			t.Fatalf("a secret key is in the log:\n%s", logs)
		}
	}
	// A malformed file's error names the line, not the value.
	if err := os.WriteFile(creds, []byte("access_key_id="+srv.AccessKeyID+"\n"+srv.SecretAccessKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := readCredentials(creds)
	if err == nil || strings.Contains(err.Error(), srv.SecretAccessKey) || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("error %v: want line 2 named and no secret", err)
	}
}

func TestOutageExactlyOnce(t *testing.T) {
	srv := s3test.Start(t, bucket)
	dir := t.TempDir()
	h := newShipper(t, filepath.Join(dir, "spool"), shipping(srv.Endpoint(), srv.CredentialsFile(dir), func(s *meshv1.LogShippingSpec) {
		s.BatchAge = durationpb.New(time.Second)
	}))
	// Records flow while the store goes away for 2 s and comes back.
	for i := range 30 {
		h.offer(20, 300)
		if i == 8 {
			srv.Stop()
		}
		if i == 22 {
			srv.StartAgain()
		}
		time.Sleep(100 * time.Millisecond)
	}
	exactlyOnce(t, srv, 600, 15*time.Second)
	if testutil.ToFloat64(h.sh.m.batchesFailed) == 0 {
		t.Error("no upload failed: the outage was not seen")
	}
}

func TestRestartResumesSpool(t *testing.T) {
	srv := s3test.Start(t, bucket)
	srv.Stop()
	dir := t.TempDir()
	spool := filepath.Join(dir, "spool")
	o := shipping(srv.Endpoint(), srv.CredentialsFile(dir), nil)
	// First run: the store is down; 150 records make 2 batches by size,
	// and the stop closes a third (22 records): none can be uploaded.
	h := newShipper(t, spool, o, func(c *Config) { c.FlushTimeout = 300 * time.Millisecond })
	h.offer(150, 1024)
	waitQueueEmpty(t, h.sh)
	h.close()
	if st := h.sh.Stats(); st.ClosedBatches != 3 || st.NextOffset != 151 {
		t.Fatalf("spool after the first run: %+v", st)
	}
	if !strings.Contains(h.logs.String(), "stopped with batches not uploaded") {
		t.Errorf("the stop does not say what it left:\n%s", h.logs.String())
	}
	// An open batch as a SIGKILL leaves it: two records and a torn line,
	// which is cut off.
	torn := append(append(record(151, 1024), '\n'), append(record(152, 1024), '\n')...)
	torn = append(torn, `{"id":99999,"msg":"torn`...)
	if err := os.WriteFile(filepath.Join(spool, openPrefix+fmtOffset(151)+openSuffix), torn, 0o600); err != nil {
		t.Fatal(err)
	}

	srv.StartAgain()
	h2 := newShipper(t, spool, o)
	h2.nextID.Store(152)
	if st := h2.sh.Stats(); st.ClosedBatches > 3 || st.OpenRecords != 2 || st.NextOffset != 153 {
		t.Fatalf("resumed spool %+v, want the 3 closed batches, 2 open records, next offset 153", st)
	}
	h2.offer(62, 1024) // closes the open batch by size: 64 records
	objs := exactlyOnceUpTo(t, srv, 214)
	want := []string{"1-64", "65-128", "129-150", "151-214"}
	if len(objs) != len(want) {
		t.Fatalf("objects %v, want batches %v", keysOf(objs), want)
	}
	for i, w := range want {
		a, b, _ := strings.Cut(w, "-")
		if !strings.HasSuffix(objs[i].Key, "/"+fmtOffset(mustU(a))+"-"+fmtOffset(mustU(b))+".jsonl.gz") {
			t.Errorf("object %d: %s, want offsets %s", i, objs[i].Key, w)
		}
	}
}

// A closed batch that is not gzip (a disk error, a hand edit) is dropped
// and counted rather than blocking the ones after it.
func TestCorruptBatchDropped(t *testing.T) {
	srv := s3test.Start(t, bucket)
	dir := t.TempDir()
	spool := filepath.Join(dir, "spool")
	if err := os.MkdirAll(spool, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(spool, batch{first: 1, last: 5}.name()), []byte("not gzip"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newShipper(t, spool, shipping(srv.Endpoint(), srv.CredentialsFile(dir), nil))
	h.nextID.Store(5)
	h.offer(64, 1024) // offsets 6..69, closed by size
	h.nextID.Store(0)
	s3test.Eventually(t, 10*time.Second, func() error {
		seen, objs, err := ids(t, srv)
		if err != nil {
			return err
		}
		if len(seen) != 64 || len(objs) != 1 || !strings.HasSuffix(objs[0].Key, fmtOffset(6)+"-"+fmtOffset(69)+".jsonl.gz") {
			return fmt.Errorf("objects %v: %w", keysOf(objs), s3test.ErrNotYet)
		}
		return nil
	})
	if got := testutil.ToFloat64(h.sh.m.dropped.WithLabelValues("corrupt")); got != 5 {
		t.Errorf("records dropped as corrupt: %v", got)
	}
	if !strings.Contains(h.logs.String(), "cannot be read; dropped") {
		t.Errorf("no log line:\n%s", h.logs.String())
	}
}

func mustU(s string) uint64 {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		panic(err)
	}
	return n
}

func TestSpoolDirRules(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{SpoolDir: link}); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("a symlinked spool dir: %v", err)
	}
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(open, 0o777)
	if _, err := New(Config{SpoolDir: open}); err == nil || !strings.Contains(err.Error(), "other users can write") {
		t.Fatalf("a world-writable spool dir: %v", err)
	}
	// Made 0700, files 0600; a new spool's offsets start at the time in
	// microseconds, past those of any spool this pod had before.
	sp := filepath.Join(dir, "new", "spool")
	before := uint64(time.Now().UnixMicro())
	s, err := New(Config{SpoolDir: sp})
	if err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.NextOffset < before || st.NextOffset > uint64(time.Now().UnixMicro()) {
		t.Errorf("a new spool's first offset %d, want the time in microseconds (%d)", st.NextOffset, before)
	}
	if err := s.spool.append([]byte(`{"id":1}`), time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.spool.seal(s.key); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(sp)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("spool dir mode %v", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(sp)
	for _, e := range ents {
		fi, _ := e.Info()
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", e.Name(), fi.Mode().Perm())
		}
	}
	if len(ents) != 2 { // the batch and "next"
		t.Errorf("spool holds %d files", len(ents))
	}
}

func TestOfferRefusals(t *testing.T) {
	s, err := New(Config{SpoolDir: filepath.Join(t.TempDir(), "s"), QueueRecords: 2})
	if err != nil {
		t.Fatal(err)
	}
	if s.Offer([]byte(`{"a":1}`)) {
		t.Fatal("taken without a LogShipping")
	}
	commit, err := s.Prepare(shipping("http://127.0.0.1:1", "/nonexistent", nil))
	if err != nil {
		t.Fatal(err)
	}
	commit()
	for _, bad := range [][]byte{nil, []byte("{\"a\":1}\n{\"forged\":1}"), bytes.Repeat([]byte("x"), MaxRecordBytes+1)} {
		if s.Offer(bad) {
			t.Errorf("took %.40q", bad)
		}
	}
	if got := testutil.ToFloat64(s.m.dropped.WithLabelValues("invalid")); got != 3 {
		t.Errorf("invalid drops %v", got)
	}
	// Nobody writes: the third record finds the queue full.
	rec := []byte(`{"a":1}`)
	for i, want := range []bool{true, true, false} {
		if got := s.Offer(rec); got != want {
			t.Fatalf("offer %d: %v, want %v (a queue of 2 records)", i+1, got, want)
		}
	}
	if got := testutil.ToFloat64(s.m.dropped.WithLabelValues("queue_full")); got != 1 {
		t.Errorf("queue_full drops %v", got)
	}
	// The record is copied: the caller's buffer is its own again.
	rec[2] = 'X'
	if got := <-s.queue; string(got) != `{"a":1}` {
		t.Errorf("queued %q", got)
	}
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// Progress says how many records the spool's file holds, never more: the
// log adapter persists its read offsets past them, so a record Progress
// counts as written must be on disk (a killed proxy keeps it).
func TestProgressCountsOnlyWhatTheSpoolHolds(t *testing.T) {
	srv := s3test.Start(t, bucket)
	srv.Stop() // nothing leaves the spool
	dir := t.TempDir()
	spool := filepath.Join(dir, "spool")
	h := newShipper(t, spool, shipping(srv.Endpoint(), srv.CredentialsFile(dir), nil),
		func(c *Config) { c.FlushTimeout = 100 * time.Millisecond })
	onDisk := func() uint64 {
		ents, err := os.ReadDir(spool)
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), openPrefix) && strings.HasSuffix(e.Name(), openSuffix) {
				b, err := os.ReadFile(filepath.Join(spool, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				n += uint64(bytes.Count(b, []byte("\n")))
			}
		}
		return n
	}
	const n = 300 // about 30 KiB: one open batch
	for i := range n {
		h.offer(1, 100)
		if i%10 == 0 {
			if _, w := h.sh.Progress(); w > onDisk() {
				t.Fatalf("after %d records Progress says %d written, the spool holds %d", i+1, w, onDisk())
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		acc, w := h.sh.Progress()
		if acc == n && w == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Progress = %d, %d; want %d, %d", acc, w, n, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := onDisk(); got != n {
		t.Fatalf("the spool holds %d records, want %d", got, n)
	}
}
