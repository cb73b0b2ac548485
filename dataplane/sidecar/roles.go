package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"minimesh/dataplane/admin"
	"minimesh/dataplane/agent"
	"minimesh/dataplane/gitsync"
	"minimesh/dataplane/topz"
	"minimesh/internal/redact"
	meshv1 "minimesh/proto/mesh/v1"
)

// Topz access modes for RolesConfig.Topz.
const (
	TopzLoopback = "loopback" // served only to loopback clients (default)
	TopzAny      = "any"      // served to whoever reaches the admin port
	TopzOff      = "off"      // not served
)

// RolesConfig configures the sidecar's roles beside the proxy: git sync
// into the shared directory, and /topz and /procz on the admin port.
// (ConfigFile sync is Config.SharedDir and Config.Reload.)
type RolesConfig struct {
	// GitRepo turns git sync on: GitRef (branch, tag or commit hash;
	// default HEAD) is fetched every GitInterval (default 30s) and checked
	// out under SharedDir/GitDir (default "git"), and the symlink
	// SharedDir/GitDir/GitLink (default "current") is swapped to each new
	// checkout. Needs SharedDir.
	GitRepo     string
	GitRef      string
	GitInterval time.Duration
	GitDir      string
	GitLink     string

	// Topz is TopzLoopback (default), TopzAny or TopzOff.
	Topz string
}

// Roles are the running roles, for status pages and for meshd's requests
// over the proxy's stream (meshctl top and procz): Topz.Snapshot and
// Topz.Inspect return plain JSON-marshalable structs.
type Roles struct {
	Git  *gitsync.Syncer // nil without git sync
	Topz *topz.Collector // always set, even when not served over HTTP
}

// Query answers the operator's requests that meshd relays over the
// proxy's stream (meshctl top, meshctl procz) with JSON of a topz.Table or
// a topz.Process: the agent's Querier. (The stream is authenticated by
// meshd, which relays only for the operator identity, so it is not limited
// like the HTTP handlers.)
func (r *Roles) Query(ctx context.Context, req *meshv1.Request) ([]byte, error) {
	if r.Topz == nil {
		return nil, errors.New("sidecar: topz is not running")
	}
	var v any
	var err error
	switch q := req.GetQuery().(type) {
	case *meshv1.Request_Topz:
		v, err = r.Topz.Snapshot(ctx)
	case *meshv1.Request_Procz:
		v, err = r.Topz.Inspect(ctx, int(q.Procz.GetPid()))
	default:
		return nil, fmt.Errorf("sidecar: unknown query %T", q)
	}
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

var _ agent.Querier = (*Roles)(nil).Query

// addRoles builds the roles, adds their tasks and their admin handlers:
// GET /gitsync (the git sync status, JSON, credentials redacted; loopback
// clients only), GET /topz and GET /procz/{pid}.
func (s *Sidecar) addRoles(adm *admin.Server) error {
	cfg := s.cfg.Roles
	log := s.cfg.Logger
	tz, err := topz.New(topz.Config{Clock: s.cfg.Clock, Logger: log.With("component", "topz")})
	if err != nil {
		return err
	}
	s.Roles.Topz = tz
	switch cfg.Topz {
	case "", TopzLoopback:
		adm.Handle("GET /topz", topz.LoopbackOnly(tz.TopzHandler()))
		adm.Handle("GET /procz/{pid}", topz.LoopbackOnly(tz.ProczHandler()))
	case TopzAny:
		tz.Register(adm)
	case TopzOff:
	default:
		return fmt.Errorf("sidecar: --topz %q: want %s, %s or %s", cfg.Topz, TopzLoopback, TopzAny, TopzOff)
	}

	if cfg.GitRepo == "" {
		return nil
	}
	if s.cfg.SharedDir == "" {
		return fmt.Errorf("sidecar: --git-repo needs --shared-dir")
	}
	dir := cfg.gitDir()
	if !filepath.IsLocal(dir) {
		return fmt.Errorf("sidecar: --git-dir %q must be a relative path inside --shared-dir", dir)
	}
	g, err := gitsync.New(gitsync.Config{
		Repo: cfg.GitRepo, Ref: cfg.GitRef, Interval: cfg.GitInterval,
		Root: filepath.Join(s.cfg.SharedDir, dir), Link: cfg.GitLink,
		Clock: s.cfg.Clock, Logger: log.With("component", "gitsync"), Registerer: s.cfg.Registry,
	})
	if err != nil {
		return err
	}
	s.Roles.Git = g
	s.add("gitsync", g.Run)
	adm.Handle("GET /gitsync", adm.LoopbackOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(gitStatus(g))
	})))
	return nil
}

// detail is /ready's extra lines: a git sync failing while the last good
// checkout serves.
func (s *Sidecar) detail() []string {
	if s.Roles.Git == nil {
		return nil
	}
	st := gitStatus(s.Roles.Git)
	if st.LastError == "" {
		return nil
	}
	serving := st.Commit
	if serving == "" {
		serving = "nothing yet"
	}
	return []string{fmt.Sprintf("gitsync: %d failed syncs in a row, last at %s: %s (serving %s)",
		st.Failures, st.LastAttempt.UTC().Format(time.RFC3339), st.LastError, serving)}
}

// ready is the admin's readiness: the agent's, then a snapshot applied
// (the listeners of app traffic open only then), then git sync's (not ready
// until its first checkout is live; a later failure keeps the last good
// checkout and stays ready, shown on /gitsync and in the metrics).
func (s *Sidecar) ready(agent func() error) func() error {
	return func() error {
		if err := agent(); err != nil {
			return err
		}
		if s.ap != nil {
			if err := s.ap.ready(); err != nil {
				return err
			}
		}
		if s.Roles.Git != nil {
			if err := s.Roles.Git.Ready(); err != nil {
				// git's error quotes the URL: no credentials on /ready.
				return errors.New(redact.Text(err.Error()))
			}
		}
		return nil
	}
}

// gitStatus is git sync's status for display: credentials in the
// repository URL (user:token@, a token query parameter), also where git's
// error quotes it, are redacted.
func gitStatus(g *gitsync.Syncer) gitsync.Status {
	st := g.Status()
	st.Repo = redact.URL(st.Repo)
	st.LastError = redact.Text(st.LastError)
	return st
}

// gitDir is GitDir or its default.
func (c RolesConfig) gitDir() string {
	if c.GitDir == "" {
		return "git"
	}
	return c.GitDir
}
