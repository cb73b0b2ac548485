package sidecar

import (
	"fmt"
	"net"
	"net/http"
	"os"

	"minimesh/dataplane/accesslog"
)

// quitquitquit is POST /quitquitquit on the admin port, for Jobs whose app
// has finished: the proxy shuts down as on SIGTERM (stops accepting,
// drains within Config.Drain, exits). Loopback callers only: the app in
// the pod, not the pod network; and, as every state-changing admin
// request, it needs the header X-Mesh-Admin: 1 (admin's guard), which a
// web page cannot send cross-site:
//
//	curl -X POST -H 'X-Mesh-Admin: 1' http://127.0.0.1:15000/quitquitquit
func (s *Sidecar) quitquitquit(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		http.Error(w, "loopback only", http.StatusForbidden)
		return
	}
	s.cfg.Logger.Info("sidecar: /quitquitquit: shutting down")
	s.quitOnce.Do(func() { close(s.quit) })
	_, _ = fmt.Fprintln(w, "shutting down")
}

// accessLog builds the inbound's access-log writer: off until an
// AccessLog resource enables it, to Config.AccessLogFile (opened 0600,
// closed when the sidecar stops) or Config.AccessLog (default stdout).
func (s *Sidecar) accessLog() (*accesslog.Logger, error) {
	out := s.cfg.AccessLog
	if s.cfg.AccessLogFile != "" && s.cfg.AccessLogFile != "-" {
		f, err := accesslog.OpenFile(s.cfg.AccessLogFile)
		if err != nil {
			return nil, fmt.Errorf("sidecar: access log: %w", err)
		}
		s.closers = append(s.closers, f.Close)
		out = f
	}
	if out == nil {
		out = os.Stdout
	}
	return accesslog.New(accesslog.Config{Output: out, Clock: s.cfg.Clock, Logger: s.cfg.Logger.With("component", "accesslog"), Tee: s.LogSink()}), nil
}
