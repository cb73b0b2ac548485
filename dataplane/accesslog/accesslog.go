package accesslog

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"minimesh/api"
	"minimesh/certs"
	"minimesh/dataplane/logrecord"
	"minimesh/internal/fsguard"
)

// Entry is one request, as the proxy saw it.
type Entry struct {
	// Time the request started; zero: when Log is called.
	Time           time.Time
	SourceIdentity string // the caller's SPIFFE ID
	SourceAddress  string
	Method         string
	Authority      string
	Path           string
	Protocol       string // "HTTP/1.1", "HTTP/2.0"
	Route          string // the Route matched, "" for none
	Status         int
	BytesReceived  int64 // request body
	BytesSent      int64 // response body
	Duration       time.Duration
	Upstream       string // where the request went
	Retries        int
	UserAgent      string
	RequestID      string
	AuthzDecision  string // "allow", "deny", "dry-run-deny", ...
	// ResponseFlags says how a response ended when not normally, as
	// Envoy's: "UC" the app's answer broke off (the app closed or failed
	// mid-body), "DC" the client went away; the response was aborted after
	// Status was sent. Empty: none, and the field is left out of the line.
	ResponseFlags string
}

type fieldID uint8

const (
	fTime fieldID = iota
	fSourceIdentity
	fSourceAddress
	fMethod
	fAuthority
	fPath
	fProtocol
	fRoute
	fStatus
	fBytesReceived
	fBytesSent
	fDurationMS
	fUpstream
	fRetries
	fUserAgent
	fRequestID
	fAuthzDecision
	fResponseFlags
)

// fieldIDs maps api.AccessLogFields to their ids.
var fieldIDs = map[string]fieldID{
	"time": fTime, "source_identity": fSourceIdentity, "source_address": fSourceAddress,
	"method": fMethod, "authority": fAuthority, "path": fPath, "protocol": fProtocol,
	"route": fRoute, "status": fStatus, "bytes_received": fBytesReceived, "bytes_sent": fBytesSent,
	"duration_ms": fDurationMS, "upstream": fUpstream, "retries": fRetries,
	"user_agent": fUserAgent, "request_id": fRequestID, "authz_decision": fAuthzDecision,
	"response_flags": fResponseFlags,
}

type field struct {
	id  fieldID
	key string // `"name":`
}

// policy is one compiled AccessLog: immutable.
type policy struct {
	name      string // namespace/name
	fields    []field
	all       bool   // sample every request
	threshold uint64 // else log when a random uint64 < threshold
	expires   time.Time
}

// Config holds a Logger's output and helpers.
type Config struct {
	// Output receives the lines, one Write per line. Default os.Stdout;
	// for a file use OpenFile.
	Output io.Writer
	// Clock tells the time of entries without one and when a TTL ends.
	// Default certs.SystemClock.
	Clock certs.Clock
	// Logger reports write failures (at most once a minute) and TTL ends.
	// Default slog.Default().
	Logger *slog.Logger
	// Tee, when set, is offered each line too, without its newline (the
	// log shipper, which takes lines only while a LogShipping applies).
	// Its Offer must not block; what it does not take is its own to count.
	Tee logrecord.Sink
}

// Logger writes the access log of one service. It starts off; Apply
// switches it on, off or changes it, live: the next request sees the
// change. Safe for concurrent use.
type Logger struct {
	cfg      Config
	cur      atomic.Pointer[policy]
	mu       sync.Mutex // one line at a time
	dropped  atomic.Uint64
	lastWarn atomic.Int64 // UnixNano of the last warning
}

// New returns a Logger that is off. Every Config is valid.
func New(cfg Config) *Logger {
	if cfg.Output == nil {
		cfg.Output = os.Stdout
	}
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Logger{cfg: cfg}
}

// Apply makes o the Logger's configuration: nil or disabled switches it
// off. The fields are o's (api.DefaultAccessLogFields when it lists none),
// in o's order; sample_ratio is the share of requests logged; a TTL ends
// the log by itself that long after o's UpdateTime (or after now when
// UpdateTime is zero), as if o did not exist.
func (l *Logger) Apply(o *api.AccessLog) error {
	if o == nil || o.Spec == nil || !o.Spec.GetEnabled() {
		l.cur.Store(nil)
		return nil
	}
	if err := o.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	s := o.Spec
	p := &policy{name: o.Namespace + "/" + o.Name}
	names := s.GetFields()
	if len(names) == 0 {
		names = api.DefaultAccessLogFields()
	}
	for _, n := range names {
		id, ok := fieldIDs[n]
		if !ok { // Validate knows the same list; a mismatch is a bug
			return fmt.Errorf("%w: unknown field %q", ErrInvalidSpec, n)
		}
		p.fields = append(p.fields, field{id: id, key: `"` + n + `":`})
	}
	ratio := 1.0
	if s.SampleRatio != nil {
		ratio = s.GetSampleRatio()
	}
	switch {
	case ratio >= 1:
		p.all = true
	case ratio > 0:
		p.threshold = uint64(math.Ldexp(ratio, 64))
	}
	if ttl := s.GetTtl(); ttl != nil {
		from := o.UpdateTime
		if from.IsZero() {
			from = l.cfg.Clock.Now()
		}
		p.expires = from.Add(ttl.AsDuration())
	}
	if !p.expires.IsZero() && !l.cfg.Clock.Now().Before(p.expires) {
		p = nil // already over
	}
	l.cur.Store(p)
	return nil
}

// active returns the current policy, or nil when the log is off; a policy
// whose TTL has ended is removed here.
func (l *Logger) active() (*policy, time.Time) {
	p := l.cur.Load()
	if p == nil {
		return nil, time.Time{}
	}
	now := l.cfg.Clock.Now()
	if !p.expires.IsZero() && !now.Before(p.expires) {
		if l.cur.CompareAndSwap(p, nil) {
			l.cfg.Logger.Info("access log switched off: its TTL ended", "accesslog", p.name, "expired", p.expires)
		}
		return nil, now
	}
	return p, now
}

// Enabled reports whether the log is on, so that a caller can skip
// gathering an Entry.
func (l *Logger) Enabled() bool {
	p, _ := l.active()
	return p != nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// Log writes e as one line when the log is on and the request is sampled.
// It does not allocate. A failed write is counted (Dropped) and reported
// through Config.Logger at most once a minute.
func (l *Logger) Log(e *Entry) {
	p, now := l.active()
	if p == nil || !p.all && rand.Uint64() >= p.threshold {
		return
	}
	bp := bufPool.Get().(*[]byte)
	if e.Time.IsZero() {
		t := *e
		t.Time = now
		e = &t
	}
	b := appendLine((*bp)[:0], e, p.fields)
	l.mu.Lock()
	_, err := l.cfg.Output.Write(b)
	l.mu.Unlock()
	if l.cfg.Tee != nil {
		l.cfg.Tee.Offer(b[:len(b)-1])
	}
	if cap(b) <= 64<<10 {
		*bp = b
		bufPool.Put(bp)
	}
	if err != nil {
		n := l.dropped.Add(1)
		last := l.lastWarn.Load()
		if now.UnixNano()-last >= int64(time.Minute) && l.lastWarn.CompareAndSwap(last, now.UnixNano()) {
			l.cfg.Logger.Warn("access log write failed", "accesslog", p.name, "err", err, "dropped_total", n)
		}
	}
}

// Dropped returns the lines lost to write errors so far.
func (l *Logger) Dropped() uint64 { return l.dropped.Load() }

// OpenFile opens (or creates) path for appending access-log lines, with
// mode 0600: lines carry identities and paths. An existing file's mode is
// set to 0600 too. A symbolic link at path is refused (O_NOFOLLOW), and so
// is a file that is not a regular file owned by this process's user:
// another user's file would receive every line.
func OpenFile(path string) (*os.File, error) {
	f, err := fsguard.OpenAppend(path, 0o600)
	if err != nil {
		return nil, fmt.Errorf("accesslog: %w", err)
	}
	return f, nil
}
