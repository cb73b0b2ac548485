// Package dashboard serves meshctl dashboard: a web UI on 127.0.0.1 whose
// API calls it forwards to meshd with the operator's credential, as
// kubectl proxy does, so that meshd gets no new way in and no browser
// needs a client certificate.
//
// Any page in the operator's browser could reach the port, so:
//   - only a fixed read-only allowlist of AdminService methods (Allowed)
//     and views computed from them are reachable; the connection to meshd
//     itself refuses every other method (guarded), whoever asks;
//   - only requests whose Host is 127.0.0.1:PORT or localhost:PORT are
//     served (no DNS rebinding);
//   - every request needs the per-run session cookie, which the URL the
//     command opens sets once (its token in the query) and then drops
//     from the address bar by a redirect;
//   - pages carry Content-Security-Policy: default-src 'self' and no CORS
//     headers; the front-end renders every string as text.
package dashboard

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	meshv1 "minimesh/proto/mesh/v1"
)

//go:embed assets
var assets embed.FS

// Allowed are the AdminService methods the dashboard forwards: lists,
// gets, status and stats. Nothing that writes, rotates, revokes, creates
// tokens, queries a proxy or backs up.
var Allowed = map[string]bool{
	"ListProxies":      true,
	"ProxyStatus":      true,
	"GetResources":     true,
	"ListCertificates": true,
	"CAStatus":         true,
	"Stats":            true,
	"Version":          true,
}

const (
	service = "mesh.v1.AdminService"
	// maxBody bounds a request's body (the explain form is the largest).
	maxBody = 64 << 10
	// CSP is every response's Content-Security-Policy.
	CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

// View computes a read-only document from allowlisted calls (explain, edges):
// c refuses every method not in Allowed. body is the request's JSON.
type View func(ctx context.Context, c meshv1.AdminServiceClient, body []byte) (any, error)

// Config configures a Server.
type Config struct {
	// Conn reaches meshd with the operator credential.
	Conn grpc.ClientConnInterface
	// Port on 127.0.0.1; 0 picks a free one.
	Port int
	// Views are computed documents by name (none may be an AdminService
	// method's name).
	Views map[string]View
	// Timeout bounds each API request's calls to meshd (default 10 s).
	Timeout time.Duration
	Logger  *slog.Logger
}

// Server is a running dashboard.
type Server struct {
	cfg    Config
	l      net.Listener
	port   string
	token  string
	cookie string
	client meshv1.AdminServiceClient
	conn   grpc.ClientConnInterface
	static http.Handler
	srv    *http.Server
}

// New listens on 127.0.0.1:cfg.Port and makes the session token.
func New(cfg Config) (*Server, error) {
	if cfg.Conn == nil {
		return nil, errors.New("dashboard: no connection to meshd")
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("--port %d: must be 0 to 65535", cfg.Port)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	sd := serviceDescriptor()
	for name := range cfg.Views {
		if sd.Methods().ByName(protoreflect.Name(name)) != nil {
			return nil, fmt.Errorf("dashboard: view %q has an AdminService method's name", name)
		}
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port)))
	if err != nil {
		return nil, fmt.Errorf("--port %d: %w", cfg.Port, err)
	}
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		l.Close()
		return nil, err
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	conn := Guard(cfg.Conn)
	s := &Server{cfg: cfg, l: l, port: port, token: base64.RawURLEncoding.EncodeToString(b[:]),
		cookie: "minimesh_dashboard_" + port, conn: conn, client: meshv1.NewAdminServiceClient(conn),
		static: http.FileServerFS(sub)}
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      cfg.Timeout + 20*time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	return s, nil
}

// URL is the address to open: it carries the session token once.
func (s *Server) URL() string { return "http://127.0.0.1:" + s.port + "/?token=" + s.token }

// Addr is host:port the server listens on.
func (s *Server) Addr() string { return s.l.Addr().String() }

// Serve serves until ctx ends, then shuts down within 5 s.
func (s *Server) Serve(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- s.srv.Serve(s.l) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	<-done
	return err
}

func serviceDescriptor() protoreflect.ServiceDescriptor {
	return meshv1.File_mesh_v1_admin_proto.Services().ByName("AdminService")
}

// guarded is a connection to meshd that refuses every method but Allowed
// ones, and every stream.
type guarded struct{ inner grpc.ClientConnInterface }

// Guard wraps conn so that only Allowed AdminService methods pass.
func Guard(conn grpc.ClientConnInterface) grpc.ClientConnInterface { return guarded{conn} }

func (g guarded) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	name, ok := strings.CutPrefix(method, "/"+service+"/")
	if !ok || !Allowed[name] {
		return status.Errorf(codes.PermissionDenied, "the dashboard does not call %s", method)
	}
	return g.inner.Invoke(ctx, method, args, reply, opts...)
}

func (g guarded) NewStream(_ context.Context, _ *grpc.StreamDesc, method string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Errorf(codes.PermissionDenied, "the dashboard opens no stream (%s)", method)
}

// ServeHTTP checks Host and session, then serves the API or the assets.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	if r.Host != "127.0.0.1:"+s.port && r.Host != "localhost:"+s.port {
		http.Error(w, "forbidden: Host must be 127.0.0.1:"+s.port+" or localhost:"+s.port, http.StatusForbidden)
		return
	}
	if tok := r.URL.Query().Get("token"); tok != "" && r.URL.Path == "/" {
		if !s.valid(tok) {
			http.Error(w, "forbidden: wrong token; open the URL meshctl dashboard printed", http.StatusForbidden)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: s.cookie, Value: s.token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		h.Set("Cache-Control", "no-store")
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	c, err := r.Cookie(s.cookie)
	if err != nil || !s.valid(c.Value) {
		http.Error(w, "forbidden: no dashboard session; open the URL meshctl dashboard printed", http.StatusForbidden)
		return
	}
	if name, ok := strings.CutPrefix(r.URL.Path, "/api/"); ok {
		s.api(w, r, name)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h.Set("Cache-Control", "no-cache")
	s.static.ServeHTTP(w, r)
}

func (s *Server) valid(tok string) bool {
	return subtle.ConstantTimeCompare([]byte(tok), []byte(s.token)) == 1
}

// api forwards an allowlisted method or computes a view. Calls are POSTs
// of JSON from this origin: a form on another site can send neither.
func (s *Server) api(w http.ResponseWriter, r *http.Request, name string) {
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		apiError(w, http.StatusMethodNotAllowed, "method not allowed: POST")
		return
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		apiError(w, http.StatusForbidden, "forbidden: cross-site request")
		return
	}
	if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host {
		apiError(w, http.StatusForbidden, "forbidden: Origin "+o)
		return
	}
	if ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";"); strings.TrimSpace(ct) != "application/json" {
		apiError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		apiError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body: %v (at most %d bytes)", err, maxBody))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
	defer cancel()
	if Allowed[name] {
		s.forward(ctx, w, name, body)
		return
	}
	v := s.cfg.Views[name]
	if v == nil {
		apiError(w, http.StatusNotFound, "no such API: "+name)
		return
	}
	doc, err := v(ctx, s.client, body)
	if err != nil {
		s.callError(w, name, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(doc)
}

func (s *Server) forward(ctx context.Context, w http.ResponseWriter, name string, body []byte) {
	md := serviceDescriptor().Methods().ByName(protoreflect.Name(name))
	in, err1 := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
	out, err2 := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err := errors.Join(err1, err2); err != nil {
		apiError(w, http.StatusInternalServerError, err.Error())
		return
	}
	req, resp := in.New().Interface(), out.New().Interface()
	if len(body) > 0 {
		if err := (protojson.UnmarshalOptions{}).Unmarshal(body, req); err != nil {
			apiError(w, http.StatusBadRequest, fmt.Sprintf("%s request: %v", name, err))
			return
		}
	}
	if err := s.conn.Invoke(ctx, "/"+service+"/"+name, req, resp); err != nil {
		s.callError(w, name, err)
		return
	}
	b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(resp)
	if err != nil {
		apiError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func (s *Server) callError(w http.ResponseWriter, name string, err error) {
	s.cfg.Logger.Warn("dashboard call failed", "call", name, "error", err)
	code := http.StatusBadGateway
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.InvalidArgument:
			code = http.StatusBadRequest
		case codes.PermissionDenied:
			code = http.StatusForbidden
		case codes.NotFound:
			code = http.StatusNotFound
		case codes.DeadlineExceeded:
			code = http.StatusGatewayTimeout
		}
		err = errors.New(st.Message())
	}
	apiError(w, code, name+": "+err.Error())
}

func apiError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// Methods lists every AdminService method by name, from the descriptor.
func Methods() []string {
	ms := serviceDescriptor().Methods()
	out := make([]string, ms.Len())
	for i := range ms.Len() {
		out[i] = string(ms.Get(i).Name())
	}
	return out
}
