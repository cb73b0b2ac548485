package external

import (
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ServiceStatus is one ExternalService in force, as the admin port's
// /external shows it: what the proxy does for it and how its hosts fare.
// Nothing in it is secret: the client certificate's file names and
// expiry, never its key.
type ServiceStatus struct {
	Name       string `json:"name"`
	Namespace  string `json:"namespace"`
	Protocol   string `json:"protocol"`
	Port       uint32 `json:"port"`
	ServerName string `json:"server_name,omitempty"` // verified (tls, https)
	// ClientCertificate is the pair presented, when the spec names one.
	ClientCertificate *CertStatus  `json:"client_certificate,omitempty"`
	Hosts             []HostStatus `json:"hosts"`
	// Resolved is what its DNS hosts resolved to when last looked up: the
	// addresses registry-only lets captured connections reach.
	Resolved []string `json:"resolved,omitempty"`
}

// CertStatus is a client certificate's files and the pair in use.
type CertStatus struct {
	CertFile string    `json:"cert_file"`
	KeyFile  string    `json:"key_file"`
	NotAfter time.Time `json:"not_after,omitzero"`
	// LastError is why the files' current bytes do not make a pair (the
	// last good one stays in use); empty when they do.
	LastError string `json:"last_error,omitempty"`
}

// HostStatus is one host's load and ejection state (passive: connect
// and handshake failures in a row eject it for a while).
type HostStatus struct {
	Address             string    `json:"address"`
	InFlight            int64     `json:"in_flight"`
	ConsecutiveFailures int64     `json:"consecutive_failures"`
	Ejected             bool      `json:"ejected"`
	EjectedUntil        time.Time `json:"ejected_until,omitzero"`
	Ejections           int       `json:"ejections"`
}

// Status is every service in force, by name.
func (s *Set) Status() []ServiceStatus {
	t := s.cur.Load()
	res := s.resolved.Load()
	names := slices.Sorted(maps.Keys(t.byName))
	out := []ServiceStatus{}
	for _, name := range names {
		sv := t.byName[name]
		st := ServiceStatus{Name: sv.Name, Namespace: sv.Namespace, Port: sv.port, Hosts: []HostStatus{},
			Protocol: strings.ToLower(strings.TrimPrefix(sv.proto.String(), "EXTERNAL_PROTOCOL_"))}
		if sv.tls != nil {
			st.ServerName = sv.tls.ServerName
		}
		if p := sv.pair; p != nil {
			s.mu.Lock()
			lastErr := p.lastErr
			s.mu.Unlock()
			st.ClientCertificate = &CertStatus{CertFile: p.certFile, KeyFile: p.keyFile, NotAfter: p.notAfter(), LastError: lastErr}
		}
		for _, h := range sv.Status() {
			st.Hosts = append(st.Hosts, HostStatus{Address: h.Addr, InFlight: h.Outstanding, ConsecutiveFailures: h.ConsecutiveFailures,
				Ejected: h.Ejected, EjectedUntil: h.EjectedUntil, Ejections: h.Ejections})
		}
		if res != nil {
			for _, h := range sv.spec.GetHosts() {
				for _, ap := range res.byHost[net.JoinHostPort(h, strconv.Itoa(int(sv.port)))] {
					st.Resolved = append(st.Resolved, ap.String())
				}
			}
		}
		out = append(out, st)
	}
	return out
}
