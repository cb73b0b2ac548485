package dashboard_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/internal/dashboard"
	"minimesh/internal/meshctl"
	meshv1 "minimesh/proto/mesh/v1"
)

// recording passes calls to a real connection and records their methods.
type recording struct {
	inner grpc.ClientConnInterface
	mu    sync.Mutex
	calls []string
}

func (r *recording) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	r.mu.Lock()
	r.calls = append(r.calls, method)
	r.mu.Unlock()
	return r.inner.Invoke(ctx, method, args, reply, opts...)
}

func (r *recording) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	r.mu.Lock()
	r.calls = append(r.calls, method)
	r.mu.Unlock()
	return r.inner.NewStream(ctx, desc, method, opts...)
}

func (r *recording) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

type env struct {
	srv    *dashboard.Server
	rec    *recording
	base   string // http://127.0.0.1:PORT
	cookie *http.Cookie
	client *http.Client
}

// start runs a real meshd and a dashboard on it with the operator
// credential, and logs in with the token URL.
func start(t *testing.T, views map[string]dashboard.View) *env {
	t.Helper()
	m := controlplanetest.Start(t, controlplane.Config{})
	conn, err := meshctl.Dial(m.Addr, m.OperatorCredentialDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rec := &recording{inner: conn}
	s, err := dashboard.New(dashboard.Config{Conn: rec, Views: views, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	e := &env{srv: s, rec: rec, base: "http://" + s.Addr(),
		client: &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	resp, err := e.client.Get(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("token URL: %d to %q, want 303 to / (the token leaves the address bar)", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, c := range resp.Cookies() {
		e.cookie = c
	}
	if e.cookie == nil {
		t.Fatal("the token URL set no cookie")
	}
	return e
}

// do sends a request with the session cookie (when withCookie) and Host.
func (e *env) do(t *testing.T, method, path, host, ctype, body string, withCookie bool, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if withCookie {
		req.AddCookie(e.cookie)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (e *env) api(t *testing.T, name, body string) (*http.Response, string) {
	t.Helper()
	return e.do(t, http.MethodPost, "/api/"+name, "", "application/json", body, true, nil)
}

// TestOnlyReadOnlyMethodsReachMeshd: every AdminService method, from the
// proto descriptor, is asked for through the dashboard's API; only the
// allowlist reaches meshd, and nothing that writes, rotates, revokes,
// creates tokens or backs up is on it.
func TestOnlyReadOnlyMethodsReachMeshd(t *testing.T) {
	e := start(t, nil)
	want := []string{"CAStatus", "GetResources", "ListCertificates", "ListProxies", "ProxyStatus", "Stats", "Version"}
	var allowed []string
	for name := range dashboard.Allowed {
		allowed = append(allowed, name)
	}
	slices.Sort(allowed)
	if !slices.Equal(allowed, want) {
		t.Fatalf("Allowed = %v, want exactly %v", allowed, want)
	}
	methods := dashboard.Methods()
	if len(methods) < 20 || !slices.Contains(methods, "RotateCA") || !slices.Contains(methods, "Backup") {
		t.Fatalf("the descriptor lists %v", methods)
	}
	for _, name := range methods {
		before := len(e.rec.seen())
		resp, body := e.api(t, name, "{}")
		calls := e.rec.seen()[before:]
		if slices.Contains(want, name) {
			if resp.StatusCode != http.StatusOK || !json.Valid([]byte(body)) {
				t.Errorf("%s: %d %s, want 200 and JSON", name, resp.StatusCode, body)
			}
			if !slices.Equal(calls, []string{"/mesh.v1.AdminService/" + name}) {
				t.Errorf("%s reached meshd as %v", name, calls)
			}
			continue
		}
		if resp.StatusCode != http.StatusNotFound || len(calls) != 0 {
			t.Errorf("%s: %d %s, meshd saw %v; want 404 and no call", name, resp.StatusCode, body, calls)
		}
	}
	// A view gets a client that refuses the rest too: the guard is on the
	// connection, not only on the URL.
	g := dashboard.Guard(e.rec)
	c := meshv1.NewAdminServiceClient(g)
	before := len(e.rec.seen())
	if _, err := c.RotateCA(context.Background(), &meshv1.RotateCARequest{Force: true}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("RotateCA through the guard: %v", err)
	}
	if _, err := c.CreateJoinToken(context.Background(), &meshv1.CreateJoinTokenRequest{Namespace: "default", ServiceAccount: "x"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("CreateJoinToken through the guard: %v", err)
	}
	if _, err := c.Backup(context.Background(), &meshv1.BackupRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Backup through the guard: %v", err)
	}
	if n := len(e.rec.seen()) - before; n != 0 {
		t.Errorf("the guard let %d calls through", n)
	}
}

// TestViewsGetAGuardedClient: a view that tries a write is refused.
func TestViewsGetAGuardedClient(t *testing.T) {
	e := start(t, map[string]dashboard.View{
		"Sneaky": func(ctx context.Context, c meshv1.AdminServiceClient, _ []byte) (any, error) {
			_, err := c.RevokeJoinToken(ctx, &meshv1.RevokeJoinTokenRequest{Id: "x"})
			return nil, err
		},
		"Fine": func(ctx context.Context, c meshv1.AdminServiceClient, body []byte) (any, error) {
			v, err := c.Version(ctx, &meshv1.VersionRequest{})
			return map[string]string{"trustDomain": v.GetTrustDomain(), "body": string(body)}, err
		},
	})
	if resp, body := e.api(t, "Sneaky", "{}"); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "does not call") {
		t.Errorf("Sneaky: %d %s", resp.StatusCode, body)
	}
	if resp, body := e.api(t, "Fine", `{"a":1}`); resp.StatusCode != http.StatusOK || !strings.Contains(body, "minimesh.local") {
		t.Errorf("Fine: %d %s", resp.StatusCode, body)
	}
	for _, c := range e.rec.seen() {
		if !strings.HasSuffix(c, "/Version") {
			t.Errorf("meshd saw %s", c)
		}
	}
	if _, err := dashboard.New(dashboard.Config{Conn: e.rec, Views: map[string]dashboard.View{"RotateCA": nil}}); err == nil {
		t.Error("a view named after an AdminService method was accepted")
	}
}

// TestSessionHostAndHeaders: the token URL sets an HttpOnly, SameSite
// Strict cookie; without it, with another token, or with a Host other
// than 127.0.0.1:PORT or localhost:PORT, everything is 403; responses
// carry the CSP and no CORS header.
func TestSessionHostAndHeaders(t *testing.T) {
	e := start(t, nil)
	c := e.cookie
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Value == "" {
		t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/", c)
	}
	_, port, _ := net.SplitHostPort(e.srv.Addr())
	if host, _, _ := net.SplitHostPort(e.srv.Addr()); host != "127.0.0.1" {
		t.Errorf("listens on %s, want 127.0.0.1", e.srv.Addr())
	}
	u, _ := url.Parse(e.srv.URL())
	if u.Host != "127.0.0.1:"+port || len(u.Query().Get("token")) < 40 {
		t.Errorf("URL %s", e.srv.URL())
	}
	good := func(resp *http.Response, what string) {
		t.Helper()
		h := resp.Header
		if h.Get("Content-Security-Policy") != dashboard.CSP || !strings.HasPrefix(dashboard.CSP, "default-src 'self'") || !strings.Contains(dashboard.CSP, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q", what, h.Get("Content-Security-Policy"))
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: headers %v", what, h)
		}
		for k := range h {
			if strings.HasPrefix(strings.ToLower(k), "access-control-") {
				t.Errorf("%s: CORS header %s", what, k)
			}
		}
	}
	// With the session.
	resp, body := e.do(t, http.MethodGet, "/", "", "", "", true, map[string]string{"Origin": "http://evil.example"})
	good(resp, "index")
	if resp.StatusCode != 200 || !strings.Contains(body, `<script defer src="/app.js">`) || strings.Contains(body, "<script>") {
		t.Errorf("index: %d %s", resp.StatusCode, body)
	}
	for _, p := range []string{"/app.js", "/app.css", "/favicon.svg"} {
		if resp, _ := e.do(t, http.MethodGet, p, "localhost:"+port, "", "", true, nil); resp.StatusCode != 200 {
			t.Errorf("%s: %d", p, resp.StatusCode)
		}
	}
	if resp, body := e.api(t, "Version", ""); resp.StatusCode != 200 || !strings.Contains(body, `"trustDomain":"minimesh.local"`) {
		t.Errorf("Version: %d %s", resp.StatusCode, body)
	}
	// Without it, with a forged one, or another Host: 403, page and API.
	forged := &http.Cookie{Name: c.Name, Value: strings.Repeat("A", len(c.Value))}
	for _, tc := range []struct {
		what, method, path, host string
		cookie                   bool
	}{
		{"API without cookie", http.MethodPost, "/api/Version", "", false},
		{"page without cookie", http.MethodGet, "/", "", false},
		{"asset without cookie", http.MethodGet, "/app.js", "", false},
		{"API, Host evil.example", http.MethodPost, "/api/Version", "evil.example", true},
		{"API, Host evil.example:PORT", http.MethodPost, "/api/Version", "evil.example:" + port, true},
		{"API, Host 127.0.0.1 without port", http.MethodPost, "/api/Version", "127.0.0.1", true},
		{"API, Host 127.0.0.1:other", http.MethodPost, "/api/Version", "127.0.0.1:1", true},
		{"page, Host evil.example", http.MethodGet, "/", "evil.example", true},
		{"token URL, Host evil.example", http.MethodGet, strings.TrimPrefix(e.srv.URL(), e.base), "evil.example", false},
	} {
		resp, body := e.do(t, tc.method, tc.path, tc.host, "application/json", "{}", tc.cookie, nil)
		if resp.StatusCode != http.StatusForbidden || strings.Contains(body, "trustDomain") || len(resp.Cookies()) != 0 {
			t.Errorf("%s: %d %s", tc.what, resp.StatusCode, body)
		}
		good(resp, tc.what)
	}
	req, _ := http.NewRequest(http.MethodPost, e.base+"/api/Version", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	req.AddCookie(forged)
	if resp, err := e.client.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("forged cookie: %v %v", resp.StatusCode, err)
	}
	if resp, _ := e.do(t, http.MethodGet, "/?token=wrong", "", "", "", false, nil); resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Errorf("wrong token: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	// API calls are same-origin JSON POSTs, bounded.
	for _, tc := range []struct {
		what, method, ctype, body string
		hdr                       map[string]string
		want                      int
	}{
		{"GET", http.MethodGet, "", "", nil, http.StatusMethodNotAllowed},
		{"form post", http.MethodPost, "application/x-www-form-urlencoded", "a=1", nil, http.StatusUnsupportedMediaType},
		{"text/plain", http.MethodPost, "text/plain", "{}", nil, http.StatusUnsupportedMediaType},
		{"cross-site", http.MethodPost, "application/json", "{}", map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"other Origin", http.MethodPost, "application/json", "{}", map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"too large", http.MethodPost, "application/json", `{"window":"` + strings.Repeat("9", 70<<10) + `"}`, nil, http.StatusRequestEntityTooLarge},
		{"bad field", http.MethodPost, "application/json", `{"windo":"60s"}`, nil, http.StatusBadRequest},
	} {
		resp, body := e.do(t, tc.method, "/api/Stats", "", tc.ctype, tc.body, true, tc.hdr)
		if resp.StatusCode != tc.want || !json.Valid([]byte(body)) {
			t.Errorf("%s: %d %s, want %d", tc.what, resp.StatusCode, body, tc.want)
		}
	}
	if resp, body := e.do(t, http.MethodPost, "/api/Stats", "", "application/json", `{"window":"60s"}`, true, map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:" + port}); resp.StatusCode != 200 {
		t.Errorf("same-origin Stats: %d %s", resp.StatusCode, body)
	}
}

func TestBadConfig(t *testing.T) {
	if _, err := dashboard.New(dashboard.Config{}); err == nil {
		t.Error("no connection accepted")
	}
	if _, err := dashboard.New(dashboard.Config{Conn: &recording{}, Port: 70000}); err == nil || !strings.Contains(err.Error(), "--port") {
		t.Errorf("port 70000: %v", err)
	}
}
