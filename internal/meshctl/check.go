package meshctl

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"minimesh/certs"
	"minimesh/internal/version"
	meshv1 "minimesh/proto/mesh/v1"
)

// meshctl check: like `linkerd check`, one line per check with ✔ (ok),
// ‼ (warning) or ✖ (error) and a hint, a non-zero exit when any check
// fails, -o json. The checks are a list (checks): each reads what one
// round of calls to meshd gathered (checkEnv) and says what it found, so a
// check is added by appending one function, and the checks are tested on
// the data alone.

// Check results.
const (
	checkOK      = "ok"
	checkWarn    = "warning"
	checkFail    = "error"
	checkSkipped = "skipped"
)

// CheckResult is one line of meshctl check.
type CheckResult struct {
	Category string `json:"category"`
	Name     string `json:"name"`
	Status   string `json:"status"`
	Message  string `json:"message,omitempty"`
	Hint     string `json:"hint,omitempty"`
}

// checkEnv is what the checks read: gathered once, before any check runs.
type checkEnv struct {
	now    time.Time
	server string
	// The operator credential on this machine (nil when unreadable), and
	// why not.
	cred    []*x509.Certificate
	credErr error
	bundle  []*x509.Certificate

	// What meshd answered; an error per call.
	version    *meshv1.VersionResponse
	versionErr error
	ca         *meshv1.CAStatusResponse
	caErr      error
	proxies    []*meshv1.ProxySync
	proxiesErr error
	// health is grpc.health.v1's answer for the whole server ("").
	health    healthpb.HealthCheckResponse_ServingStatus
	healthErr error
	tokens    []*meshv1.JoinToken
	tokensErr error

	// proxy, when set (--proxy), limits the proxy checks to one instance.
	proxy string
}

type check struct {
	category string
	run      func(e *checkEnv) []CheckResult
}

// checks is the list meshctl check runs, in order. A replicated store
// (etcd) adds its replica checks here; they skip with bbolt.
var checks = []check{
	{"meshd", checkReachable},
	{"meshd", checkVersion},
	{"meshd", checkServing},
	{"replicas", checkReplicas},
	{"operator credential", checkCredential},
	{"certificate authority", checkCAExpiry},
	{"certificate authority", checkRotation},
	{"certificate authority", checkRefusedByClients},
	{"proxies", checkProxyStates},
	{"proxies", checkSVIDRenewal},
	{"proxies", checkProxyVersions},
	{"join tokens", checkTokens},
}

func ok(name, msg string) CheckResult { return CheckResult{Name: name, Status: checkOK, Message: msg} }
func warn(name, msg, hint string) CheckResult {
	return CheckResult{Name: name, Status: checkWarn, Message: msg, Hint: hint}
}
func fail(name, msg, hint string) CheckResult {
	return CheckResult{Name: name, Status: checkFail, Message: msg, Hint: hint}
}
func skipped(name, msg string) CheckResult {
	return CheckResult{Name: name, Status: checkSkipped, Message: msg}
}

func checkReachable(e *checkEnv) []CheckResult {
	if e.versionErr != nil {
		return []CheckResult{fail("meshd is reachable", fmt.Sprintf("%s: %s", e.server, ErrorText(e.versionErr)),
			"is meshd running there (--server, MESHCTL_SERVER)? Is --credentials the operator credential of this meshd?")}
	}
	return []CheckResult{ok("meshd is reachable", e.server)}
}

func checkVersion(e *checkEnv) []CheckResult {
	const name = "meshd's version matches meshctl's"
	if e.version == nil {
		return []CheckResult{skipped(name, "meshd did not answer")}
	}
	if v := e.version.GetVersion(); v != version.Version {
		return []CheckResult{warn(name, fmt.Sprintf("meshd %s, meshctl %s", v, version.Version), "use the meshctl of meshd's release")}
	}
	return []CheckResult{ok(name, version.Version)}
}

// checkServing asks meshd's grpc.health.v1 service, as a probe would: a
// replica that is shutting down answers NOT_SERVING before it stops.
func checkServing(e *checkEnv) []CheckResult {
	const name = "meshd is serving (grpc.health.v1)"
	switch {
	case e.version == nil:
		return []CheckResult{skipped(name, "meshd did not answer")}
	case e.healthErr != nil:
		return []CheckResult{fail(name, ErrorText(e.healthErr), "a meshd older than its health service answers Unimplemented: upgrade it")}
	case e.health != healthpb.HealthCheckResponse_SERVING:
		return []CheckResult{fail(name, e.health.String(), "meshd is starting or shutting down; try again, or point --server at another replica")}
	}
	return []CheckResult{ok(name, e.health.String())}
}

// checkReplicas: every replica answering, a known leader and each
// replica's cache lag, with a replicated store only.
func checkReplicas(e *checkEnv) []CheckResult {
	if e.version == nil || e.version.GetStore() == "bbolt" || e.version.GetStore() == "" {
		return []CheckResult{skipped("replicas", "one replica (bbolt store)")}
	}
	var out []CheckResult
	var down []string
	for _, r := range e.version.GetReplicas() {
		if !r.GetAnswering() {
			down = append(down, r.GetName()+" ("+orDash(r.GetError())+")")
		}
	}
	if len(down) > 0 {
		out = append(out, fail("every replica answers", strings.Join(down, ", "), "look at those replicas' logs and their etcd membership"))
	} else {
		out = append(out, ok("every replica answers", fmt.Sprintf("%d replicas", len(e.version.GetReplicas()))))
	}
	if e.version.GetLeader() == "" {
		out = append(out, fail("a leader is known", "no replica holds the leader lease", "rotation phases and credential re-issues wait for a leader; check the etcd cluster's health"))
	} else {
		out = append(out, ok("a leader is known", e.version.GetLeader()))
	}
	var lag []string
	for _, r := range e.version.GetReplicas() {
		if d := r.GetCacheLag().AsDuration(); r.GetAnswering() && d > 5*time.Second {
			lag = append(lag, fmt.Sprintf("%s %s", r.GetName(), d.Round(time.Millisecond)))
		}
	}
	if len(lag) > 0 {
		out = append(out, warn("replica caches are current", "behind the store: "+strings.Join(lag, ", "), "a lagging replica serves old snapshots; look at its watch in its log"))
	} else {
		out = append(out, ok("replica caches are current", "every cache within 5s of the store"))
	}
	return out
}

func checkCredential(e *checkEnv) []CheckResult {
	if e.credErr != nil {
		return []CheckResult{fail("the operator credential is readable", e.credErr.Error(), "pass --credentials DIR (meshd writes one to <data-dir>/operator; `meshd operator issue` makes one)")}
	}
	leaf := e.cred[0]
	var out []CheckResult
	left := leaf.NotAfter.Sub(e.now)
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	switch {
	case left <= 0:
		out = append(out, fail("the operator credential is valid", "expired at "+leaf.NotAfter.UTC().Format(time.RFC3339), "get a fresh one: `meshd operator issue`, or restart meshd, which writes one to <data-dir>/operator"))
	case left < life/10 || left < 24*time.Hour:
		out = append(out, warn("the operator credential is valid", "expires in "+left.Round(time.Minute).String(), "meshd re-issues <data-dir>/operator at start past half its life; `meshd operator issue` makes one"))
	default:
		out = append(out, ok("the operator credential is valid", "expires in "+left.Round(time.Hour).String()))
	}
	root := credentialRoot(e.cred, e.bundle, e.now)
	const name = "the operator credential chains to meshd's active root"
	switch {
	case e.ca == nil:
		out = append(out, skipped(name, "meshd did not answer"))
	case root == "":
		out = append(out, fail(name, "it chains to no root of its own bundle.pem", "the credential's files do not belong together: get a fresh one with `meshd operator issue`"))
	case root == e.ca.GetActive().GetPin():
		out = append(out, ok(name, shortPin(root)))
	case e.ca.GetNext().GetPin() == root || containsRoot(e.ca.GetRetired(), root):
		out = append(out, warn(name, fmt.Sprintf("it chains to root %s, which a rotation is replacing: it stops working when that root leaves the bundle", root),
			"it was issued before a root rotation; get a fresh one with `meshd operator issue` (meshd re-issued <data-dir>/operator at the rotation)"))
	default:
		out = append(out, fail(name, fmt.Sprintf("it chains to root %s, which is not in this meshd's bundle", root),
			"it was issued before a rotation, or by another meshd; get a fresh one with `meshd operator issue`"))
	}
	return out
}

// credentialRoot is the pin of the root of bundle that the credential
// chains to, "" when none.
func credentialRoot(chain, bundle []*x509.Certificate, now time.Time) string {
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range bundle {
		roots.AddCert(r)
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	chains, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil || len(chains) == 0 {
		return ""
	}
	c := chains[0]
	return certs.SPKIPin(c[len(c)-1])
}

func containsRoot(roots []*meshv1.CARoot, pin string) bool {
	for _, r := range roots {
		if r.GetPin() == pin {
			return true
		}
	}
	return false
}

func checkCAExpiry(e *checkEnv) []CheckResult {
	if e.ca == nil {
		return []CheckResult{skipped("the root and intermediate are valid", "meshd did not answer")}
	}
	expiry := func(name string, at time.Time, warnWithin time.Duration, hint string) CheckResult {
		left := at.Sub(e.now)
		switch {
		case left <= 0:
			return fail(name, "expired at "+at.UTC().Format(time.RFC3339), hint)
		case left < warnWithin:
			return warn(name, "expires in "+left.Round(time.Hour).String(), hint)
		}
		return ok(name, "expires "+at.UTC().Format("2006-01-02"))
	}
	return []CheckResult{
		expiry("the root is valid", e.ca.GetActive().GetNotAfter().AsTime(), 365*24*time.Hour, "rotate the root: `meshctl ca rotate --wait`"),
		expiry("the intermediate is valid", e.ca.GetIntermediateNotAfter().AsTime(), 30*24*time.Hour,
			"meshd re-issues it past half its life when no rotation is under way; finish the rotation (`meshctl ca status`)"),
	}
}

func checkRotation(e *checkEnv) []CheckResult {
	if e.ca == nil {
		return []CheckResult{skipped("no root rotation is blocked", "meshd did not answer")}
	}
	var out []CheckResult
	const name = "no root rotation is blocked"
	switch ph := e.ca.GetPhase(); {
	case ph == "idle":
		out = append(out, ok(name, "no rotation under way"))
	case len(e.ca.GetWaitingDisconnected()) > 0:
		out = append(out, warn(name, fmt.Sprintf("phase %s, waiting for %s; disconnected: %s", ph, e.ca.GetWaitingFor(), strings.Join(e.ca.GetWaitingDisconnected(), ", ")),
			"a disconnected proxy holds the rotation until it returns: `meshctl proxy forget INSTANCE` if it is gone for good"))
	default:
		out = append(out, warn(name, fmt.Sprintf("phase %s, waiting for %s", ph, e.ca.GetWaitingFor()), "it moves on by itself; `meshctl ca rotate --wait` follows it"))
	}
	const trusted = "every proxy's SVID chains to a root it trusts"
	if u := e.ca.GetUntrusted(); len(u) > 0 {
		out = append(out, fail(trusted, fmt.Sprintf("%d proxies hold SVIDs from a root not in their bundle or meshd's: %s", len(u), strings.Join(u, ", ")),
			"their peers and meshd refuse them (a rotation was forced past them, or meshd was restored from a backup older than a rotation): restart them with a new join token (`meshctl token create`)"))
	} else {
		out = append(out, ok(trusted, fmt.Sprintf("%d proxies", len(e.ca.GetProxies()))))
	}
	return out
}

func checkRefusedByClients(e *checkEnv) []CheckResult {
	const name = "clients trust meshd's certificate"
	if e.ca == nil {
		return []CheckResult{skipped(name, "meshd did not answer")}
	}
	if n := e.ca.GetRefusedByClients(); n > 0 {
		return []CheckResult{fail(name, fmt.Sprintf("%d TLS handshakes in the last 10 minutes were refused by the client for meshd's certificate, from %s", n, strings.Join(e.ca.GetRefusedByClientAddrs(), ", ")),
			fmt.Sprintf("those clients do not trust meshd's root %s: a meshctl with an operator credential from before a root rotation (get a fresh one), or, if proxies, meshd's data restored from a backup taken before a root rotation: its CA is the old one and proxies holding SVIDs of the newer root cannot reach it; restore a newer backup, or bootstrap the proxies again with new join tokens", shortPin(e.ca.GetActive().GetPin())))}
	}
	return []CheckResult{ok(name, "no client refused it in the last 10 minutes")}
}

func (e *checkEnv) selected() []*meshv1.ProxySync {
	if e.proxy == "" {
		return e.proxies
	}
	var out []*meshv1.ProxySync
	for _, p := range e.proxies {
		if p.GetProxy().GetInstanceId() == e.proxy {
			out = append(out, p)
		}
	}
	return out
}

func checkProxyStates(e *checkEnv) []CheckResult {
	if e.proxiesErr != nil {
		return []CheckResult{skipped("proxies", ErrorText(e.proxiesErr))}
	}
	by := map[meshv1.SyncState][]string{}
	for _, ps := range e.selected() {
		s := ps.GetState()
		desc := ps.GetProxy().GetInstanceId()
		switch s {
		case meshv1.SyncState_SYNC_STATE_NACKED:
			desc += " (" + ps.GetNackReason() + ")"
		case meshv1.SyncState_SYNC_STATE_UNTRUSTED:
			desc += " (svid root " + shortPin(ps.GetSvidRoot()) + " not in bundle)"
		case meshv1.SyncState_SYNC_STATE_UNTRUSTED_PEERS:
			desc += fmt.Sprintf(" (%d: %s)", len(ps.GetUntrustedPeers()), strings.Join(ps.GetUntrustedPeers(), ", "))
		}
		by[s] = append(by[s], desc)
	}
	type row struct {
		state      meshv1.SyncState
		name, hint string
		fails      bool
	}
	rows := []row{
		{meshv1.SyncState_SYNC_STATE_DISCONNECTED, "proxies are connected", "a proxy without a stream gets no config; `meshctl proxy forget INSTANCE` drops one that is gone", false},
		{meshv1.SyncState_SYNC_STATE_NACKED, "proxies accept their config", "fix the resource the reason names and apply again", true},
		{meshv1.SyncState_SYNC_STATE_STALE, "proxies ACKed their current config", "a push is under way, or the proxy is stuck: `meshctl proxy-config INSTANCE`", false},
		{meshv1.SyncState_SYNC_STATE_UNTRUSTED, "proxies' SVIDs chain to their bundle", "their peers and meshd refuse them: restart them with a new join token (`meshctl ca status` shows the roots)", true},
		{meshv1.SyncState_SYNC_STATE_UNTRUSTED_PEERS, "proxies can verify their endpoints", "calls to those endpoints fail: `meshctl ca status` shows which roots the proxies hold", true},
		{meshv1.SyncState_SYNC_STATE_REVOKED, "no proxy is revoked", "revoked on purpose? It gets no certificates and no stream; its record stays", false},
	}
	if e.proxy != "" && len(e.selected()) == 0 {
		return []CheckResult{fail("the proxy is registered", "no proxy instance "+e.proxy, "`meshctl proxies` lists them")}
	}
	var out []CheckResult
	for _, r := range rows {
		names := by[r.state]
		switch {
		case len(names) == 0:
			out = append(out, ok(r.name, fmt.Sprintf("%d proxies, none %s", len(e.selected()), stateName(r.state))))
		case r.fails:
			out = append(out, fail(r.name, fmt.Sprintf("%d %s: %s", len(names), stateName(r.state), strings.Join(names, ", ")), r.hint))
		default:
			out = append(out, warn(r.name, fmt.Sprintf("%d %s: %s", len(names), stateName(r.state), strings.Join(names, ", ")), r.hint))
		}
	}
	return out
}

// stateName is a state as proxy-status shows it: "UNTRUSTED PEERS".
func stateName(s meshv1.SyncState) string {
	return strings.ReplaceAll(strings.TrimPrefix(s.String(), "SYNC_STATE_"), "_", " ")
}

// renewalMargin is how long before expiry a renewal must have happened:
// the agent's longest backoff (30s) twice, for one failed try and one more.
const renewalMargin = time.Minute

// checkSVIDRenewal flags connected proxies whose newest SVID expires
// before a renewal could happen: past 60 % of its life (the agent renews at
// half, ±10 %), or within renewalMargin of expiry, or expired.
func checkSVIDRenewal(e *checkEnv) []CheckResult {
	const name = "SVIDs renew before they expire"
	if e.ca == nil {
		return []CheckResult{skipped(name, "meshd did not answer")}
	}
	var late, overdue []string
	for _, p := range e.ca.GetProxies() {
		if (e.proxy != "" && p.GetInstanceId() != e.proxy) || !p.GetConnected() || p.GetRevoked() || p.GetSvidExpiresAt() == nil {
			continue
		}
		nb, na := p.GetSvidNotBefore().AsTime(), p.GetSvidExpiresAt().AsTime()
		left := na.Sub(e.now)
		switch {
		case left < renewalMargin:
			late = append(late, fmt.Sprintf("%s (expires in %s)", p.GetInstanceId(), left.Round(time.Second)))
		case p.GetSvidNotBefore() != nil && e.now.After(nb.Add(na.Sub(nb)*6/10)):
			overdue = append(overdue, fmt.Sprintf("%s (expires in %s)", p.GetInstanceId(), left.Round(time.Second)))
		}
	}
	sort.Strings(late)
	sort.Strings(overdue)
	switch {
	case len(late) > 0:
		return []CheckResult{fail(name, "would expire before their next renewal could happen: "+strings.Join(late, ", "),
			"the proxy cannot renew: its log says why (refused at Renew, rate-limited, meshd unreachable)")}
	case len(overdue) > 0:
		return []CheckResult{warn(name, "past their renewal time: "+strings.Join(overdue, ", "), "the proxy's renewals fail: its log and /ready say why")}
	}
	return []CheckResult{ok(name, "every connected proxy's SVID is within its renewal window")}
}

func checkProxyVersions(e *checkEnv) []CheckResult {
	const name = "proxies run meshd's version"
	if e.version == nil || e.proxiesErr != nil {
		return []CheckResult{skipped(name, "meshd did not answer")}
	}
	var skew []string
	for _, ps := range e.selected() {
		p := ps.GetProxy()
		if p.GetRevoked() || !p.GetConnected() {
			continue
		}
		if p.GetVersion() != e.version.GetVersion() {
			skew = append(skew, fmt.Sprintf("%s (%s)", p.GetInstanceId(), orDash(p.GetVersion())))
		}
	}
	if len(skew) > 0 {
		return []CheckResult{warn(name, fmt.Sprintf("meshd runs %s; %s", e.version.GetVersion(), strings.Join(skew, ", ")), "upgrade the proxies (restart their pods with meshd's mesh-proxy image)")}
	}
	return []CheckResult{ok(name, e.version.GetVersion())}
}

func checkTokens(e *checkEnv) []CheckResult {
	const name = "join tokens carry the active root's pin"
	if e.tokensErr != nil {
		return []CheckResult{skipped(name, ErrorText(e.tokensErr))}
	}
	var stale []string
	for _, t := range e.tokens {
		usable := !t.GetRevoked() && t.GetUsesLeft() > 0 && e.now.Before(t.GetExpiresAt().AsTime())
		if usable && t.GetStalePin() {
			stale = append(stale, t.GetId())
		}
	}
	if len(stale) > 0 {
		return []CheckResult{warn(name, fmt.Sprintf("%d usable tokens carry a retired root's pin: %s", len(stale), strings.Join(stale, ", ")),
			"their pods cannot bootstrap: make new ones (`meshctl token create`) and revoke these")}
	}
	return []CheckResult{ok(name, "no usable token carries an old pin")}
}

// gather makes the calls the checks read, each bounded by --timeout.
func (g *globals) gather(proxy string) *checkEnv {
	e := &checkEnv{now: time.Now(), server: g.server, proxy: proxy}
	if g.credentials == "" {
		e.credErr = errors.New("no operator credential: pass --credentials DIR or set MESHCTL_CREDENTIALS")
	} else if td, err := trustDomainOf(g.credentials); err != nil {
		e.credErr = err
	} else if svid, bundle, err := certs.LoadMountedSVID(g.credentials, td); err != nil {
		e.credErr = err
	} else {
		e.cred, e.bundle = svid.Certificates, bundle.X509Authorities()
	}
	if e.credErr != nil {
		e.versionErr = e.credErr
		return e
	}
	conn, err := g.dial()
	if err != nil {
		e.versionErr = err
		return e
	}
	defer conn.Close()
	c := meshv1.NewAdminServiceClient(conn)
	call := func(fn func(ctx context.Context) error) error {
		ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
		defer cancel()
		return fn(ctx)
	}
	e.versionErr = call(func(ctx context.Context) (err error) {
		e.version, err = c.Version(ctx, &meshv1.VersionRequest{})
		return
	})
	if e.versionErr != nil {
		e.versionErr = g.explain(e.versionErr)
		e.caErr, e.proxiesErr, e.tokensErr = e.versionErr, e.versionErr, e.versionErr
		return e
	}
	e.healthErr = call(func(ctx context.Context) error {
		r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		e.health = r.GetStatus()
		return err
	})
	e.caErr = call(func(ctx context.Context) (err error) { e.ca, err = c.CAStatus(ctx, &meshv1.CAStatusRequest{}); return })
	e.proxiesErr = call(func(ctx context.Context) error {
		r, err := c.ProxyStatus(ctx, &meshv1.ProxyStatusRequest{})
		e.proxies = r.GetProxies()
		return err
	})
	e.tokensErr = call(func(ctx context.Context) error {
		r, err := c.ListJoinTokens(ctx, &meshv1.ListJoinTokensRequest{})
		e.tokens = r.GetTokens()
		return err
	})
	return e
}

// runChecks runs every check on e; with a proxy, only those about meshd
// and that proxy.
func runChecks(e *checkEnv) []CheckResult {
	var out []CheckResult
	for _, c := range checks {
		if e.proxy != "" && c.category != "meshd" && c.category != "proxies" {
			continue
		}
		for _, r := range c.run(e) {
			r.Category = c.category
			out = append(out, r)
		}
	}
	return out
}

// errChecksFailed makes meshctl check exit non-zero.
var errChecksFailed = errors.New("some checks failed")

func newCheckCmd(g *globals) *cobra.Command {
	var proxy string
	cmd := &cobra.Command{
		Use:   "check [--proxy INSTANCE] [-o json|yaml]",
		Short: "Check the mesh: meshd, the operator credential, the CA and rotation, proxies, join tokens",
		Long: `Check the mesh, one line per check: ✔ ok, ‼ warning, ✖ error, with a hint.
Exits non-zero when a check fails (warnings do not). With --proxy, checks
meshd and that one proxy (through meshd).`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			results := runChecks(g.gather(proxy))
			failed := 0
			for _, r := range results {
				if r.Status == checkFail {
					failed++
				}
			}
			if err := g.show(view{doc: struct {
				Success bool          `json:"success"`
				Checks  []CheckResult `json:"checks"`
			}{failed == 0, results}, table: func(bool) error {
				printChecks(g, results)
				return nil
			}}); err != nil {
				return err
			}
			if failed > 0 {
				return fmt.Errorf("%w: %d", errChecksFailed, failed)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&proxy, "proxy", "", "check meshd and this proxy instance only")
	return outputs(cmd, docFormats...)
}

func printChecks(g *globals, results []CheckResult) {
	cat := ""
	warnings, errs := 0, 0
	for _, r := range results {
		if r.Status == checkSkipped {
			continue
		}
		if r.Category != cat {
			if cat != "" {
				printf(g.io.Out, "\n")
			}
			cat = r.Category
			printf(g.io.Out, "%s\n%s\n", cat, strings.Repeat("-", len(cat)))
		}
		mark := "√"
		switch r.Status {
		case checkOK:
			mark = "✔"
		case checkWarn:
			mark, warnings = "‼", warnings+1
		case checkFail:
			mark, errs = "✖", errs+1
		}
		printf(g.io.Out, "%s %s: %s\n", mark, r.Name, r.Message)
		if r.Hint != "" {
			printf(g.io.Out, "    hint: %s\n", r.Hint)
		}
	}
	switch {
	case errs > 0:
		printf(g.io.Out, "\nStatus check results are ✖ (%d errors, %d warnings)\n", errs, warnings)
	case warnings > 0:
		printf(g.io.Out, "\nStatus check results are ✔ with %d warnings\n", warnings)
	default:
		printf(g.io.Out, "\nStatus check results are ✔\n")
	}
}

// isHandshakeFailure reports whether err is a TLS handshake refused on
// our side (meshd's certificate did not verify).
func isHandshakeFailure(err error) bool {
	st, okSt := status.FromError(err)
	return okSt && st.Code() == codes.Unavailable && strings.Contains(st.Message(), "authentication handshake failed")
}
