package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/dataplane/proxy"
	"minimesh/dataplane/sidecar"
	"minimesh/internal/meshctl"
	meshv1 "minimesh/proto/mesh/v1"
)

// xssVersion is the version web's proxy reports: the page must show it as
// text and never run it.
const xssVersion = `<img src=x onerror=window.__pwned=1>`

// chromium finds Debian's chromium; without it the test skips, and fails
// under CI=true (make test installs it: make chromium).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed: the dashboard's browser test needs it (apt-get install -y chromium, or make chromium)")
	}
	t.Skip("chromium is not installed (apt-get install -y chromium, or make chromium); under CI=true this fails")
	return ""
}

// startDashProxy is startTraffic with a hook on the sidecar's config.
func startDashProxy(t *testing.T, m *controlplanetest.Meshd, service, app string, upstreams []string, edit func(*sidecar.Config)) *trafficProxy {
	t.Helper()
	tok := m.Token(t, "default", service, 1)
	inL, adminL := listen(t), listen(t)
	h := &trafficProxy{admin: adminL.Addr().String(), up: map[string]string{}}
	cfg := sidecar.Config{
		ControlPlane: m.Addr, Token: tok.Secret, CAPin: tok.CaPin,
		Service: service, App: app, StateDir: t.TempDir(),
		InboundListener: inL, AdminListener: adminL,
		Logger: logger(), AgentBackoffMax: time.Second, Version: "test",
		Registry: prometheus.NewRegistry(), StatsInterval: 300 * time.Millisecond,
	}
	for _, name := range upstreams {
		l := listen(t)
		u, err := proxy.ParseUpstream(name + "=" + l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		u.Listener = l
		h.up[name] = l.Addr().String()
		cfg.Upstreams = append(cfg.Upstreams, u)
	}
	if edit != nil {
		edit(&cfg)
	}
	h.Sidecar, h.cancel, h.done = runSidecar(t, service, cfg)
	waitAdminReady(t, service, h.admin)
	return h
}

// lockedBuffer is meshctl's output, read while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// browserLog collects what the page reports: console errors, uncaught
// exceptions, log entries (CSP violations among them).
type browserLog struct {
	mu   sync.Mutex
	errs []string
}

func (b *browserLog) add(s string) {
	b.mu.Lock()
	b.errs = append(b.errs, s)
	b.mu.Unlock()
}

func (b *browserLog) all() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errs...)
}

// TestDashboardInChromium runs meshctl dashboard against a real mesh
// (meshd; web → api → db, each a real app behind a real proxy, traffic
// flowing) and checks it in Debian's chromium: the topology's nodes are
// text, inside 1280×800 and apart; web → api's RPS is within 20 % of
// meshctl edges; a NACKed proxy shows NACKED with its reason; a deny shows
// its source identity and rule; no console error or CSP violation; a
// version that is HTML stays text; the API refuses a call without the
// cookie or with another Host.
func TestDashboardInChromium(t *testing.T) {
	chrome := chromium(t)
	artifacts := os.Getenv("DASHBOARD_ARTIFACTS")
	if artifacts == "" {
		artifacts = t.TempDir()
	} else if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}

	// The mesh: web → api → db; api denies /admin; db's shared dir makes
	// the ConfigFile below fail (its path goes through a symlink).
	m := controlplanetest.Start(t, controlplane.Config{})
	dbApp, apiApp, webApp := startEcho(t, "db"), startEcho(t, "api"), startEcho(t, "web")
	applyDocs(t, m, serviceYAML("db", httpPortYAML(dbApp.port), idOf("db").String())+serviceYAML("api", httpPortYAML(apiApp.port), idOf("api").String())+
		serviceYAML("web", httpPortYAML(webApp.port), idOf("web").String())+denyAdminPolicy)
	dbShared := t.TempDir()
	if err := os.Symlink(t.TempDir(), filepath.Join(dbShared, "conf")); err != nil {
		t.Fatal(err)
	}
	startDashProxy(t, m, "db", dbApp.addr, nil, func(c *sidecar.Config) { c.SharedDir = dbShared })
	api := startDashProxy(t, m, "api", apiApp.addr, []string{"db"}, nil)
	web := startDashProxy(t, m, "web", webApp.addr, []string{"api"}, func(c *sidecar.Config) { c.Version = xssVersion })
	web.waitSnapshot(t, "api's endpoint", endpointsOf("api", 1))
	api.waitSnapshot(t, "db's endpoint", endpointsOf("db", 1))
	applyDocs(t, m, `
apiVersion: minimesh.io/v1alpha1
kind: ConfigFile
metadata: {name: db-settings}
spec: {service: db, path: conf/settings.ini, mode: 0644, content: "a=1\n"}
`)
	nacked := waitStates(t, m, map[string]meshv1.SyncState{"db": meshv1.SyncState_SYNC_STATE_NACKED})["db"]

	client := plainHTTP(t)
	send := func(addr, path string, want int) {
		t.Helper()
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			t.Error(err)
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s%s: %d, want %d", addr, path, resp.StatusCode, want)
		}
	}
	const burst, denied = 150, 6
	for i := range burst {
		send(web.up["api"], fmt.Sprintf("/orders/%d", i), http.StatusOK)
		if i%3 == 0 {
			send(api.up["db"], "/rows", http.StatusOK)
		}
	}
	for i := range denied {
		send(web.up["api"], fmt.Sprintf("/admin/users/%d", i), http.StatusForbidden)
	}
	// Traffic keeps flowing while the browser looks: 2 requests a second.
	tctx, stopTraffic := context.WithCancel(context.Background())
	trafficDone := make(chan struct{})
	go func() {
		defer close(trafficDone)
		for tctx.Err() == nil {
			send(web.up["api"], "/orders/more", http.StatusOK)
			send(api.up["db"], "/rows", http.StatusOK)
			select {
			case <-tctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { stopTraffic(); <-trafficDone })

	type edgeRow struct {
		Source, Destination string
		RPS                 float64
		Requests            float64
	}
	edgesNow := func() map[string]edgeRow {
		var doc struct{ Edges []edgeRow }
		if err := json.Unmarshal([]byte(meshctlRun(t, m, "edges", "-o", "json")), &doc); err != nil {
			t.Fatal(err)
		}
		out := map[string]edgeRow{}
		for _, e := range doc.Edges {
			out[e.Source+"->"+e.Destination] = e
		}
		return out
	}
	eventually(t, 15*time.Second, "meshctl edges shows the burst", func() error {
		e := edgesNow()
		if e["web.default->api.default"].Requests < burst+denied || e["api.default->db.default"].Requests < burst/3 {
			return fmt.Errorf("edges %+v", e)
		}
		return nil
	})

	// meshctl dashboard, as the operator runs it.
	var out lockedBuffer
	root := meshctl.NewRoot(meshctl.IO{Out: &out, Err: &out})
	root.SetArgs([]string{"--server", m.Addr, "--credentials", m.OperatorCredentialDir(), "dashboard", "--no-open"})
	dctx, stopDashboard := context.WithCancel(context.Background())
	dashDone := make(chan error, 1)
	go func() { dashDone <- root.ExecuteContext(dctx) }()
	t.Cleanup(func() {
		stopDashboard()
		if err := <-dashDone; err != nil {
			t.Errorf("meshctl dashboard: %v", err)
		}
	})
	openRE := regexp.MustCompile(`open: (http://127\.0\.0\.1:(\d+)/\?token=[A-Za-z0-9_-]+)`)
	var openURL, port string
	eventually(t, 10*time.Second, "meshctl dashboard prints its URL", func() error {
		mm := openRE.FindStringSubmatch(out.String())
		if mm == nil {
			return fmt.Errorf("output %q", out.String())
		}
		openURL, port = mm[1], mm[2]
		return nil
	})
	base := "http://127.0.0.1:" + port

	// Chromium, headless, with a fresh profile.
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chrome),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	)
	defer cancelAlloc()
	var blog browserLog
	listener := func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning || ev.Type == runtime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				blog.add(fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
			}
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			desc := ""
			if d.Exception != nil {
				desc = d.Exception.Description
			}
			blog.add(fmt.Sprintf("exception: %s %s at %s:%d", d.Text, desc, d.URL, d.LineNumber))
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError || ev.Entry.Level == cdplog.EntryLevelWarning {
				blog.add(fmt.Sprintf("log %s/%s: %s %s", ev.Entry.Source, ev.Entry.Level, ev.Entry.Text, ev.Entry.URL))
			}
		}
	}
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf), chromedp.WithListener(listener))
	defer cancelBrowser()
	// The whole browser part is bounded: the first Run's context is the
	// browser's.
	bctx, cancelTimeout := context.WithTimeout(bctx, 60*time.Second)
	defer cancelTimeout()
	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// waitJS polls a JavaScript condition that returns "" when it holds
	// and why not otherwise.
	waitJS := func(what, js string) {
		t.Helper()
		var why string
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			why = evalJS[string](t, bctx, js)
			if why == "" {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s: %s", what, why)
	}
	shot := func(name string) []byte {
		t.Helper()
		do("settle", chromedp.Sleep(300*time.Millisecond))
		png, err := chromedp.Run(bctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(artifacts, "dashboard-"+name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
		return png
	}
	// Record CSP violations as the page sees them, from before its first
	// script (a script added over CDP is not subject to the CSP).
	do("viewport", chromedp.EmulateViewport(1280, 800))
	if _, err := chromedp.Call(bctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.__csp = []; document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + e.sourceFile + ':' + e.lineNumber));`,
	}); err != nil {
		t.Fatal(err)
	}
	do("open the token URL", chromedp.Navigate(openURL))
	if loc, err := chromedp.Run(bctx, chromedp.Location()); err != nil || loc != base+"/" {
		t.Errorf("after the token URL the address bar shows %q (%v), want %q (no token)", loc, err, base+"/")
	}

	// 1. Every service is a node whose label is text in the page, inside
	// 1280×800, overlapping no other node.
	waitJS("three nodes", `(() => { const n = [...document.querySelectorAll('g[data-node]')].map(g => g.dataset.node).sort().join(',');
		return n === 'api.default,db.default,web.default' ? '' : 'nodes: ' + n; })()`)
	type box struct {
		Name, Label             string
		X, Y, W, H              float64
		InnerWidth, InnerHeight float64
	}
	nodes := evalJS[[]box](t, bctx, `[...document.querySelectorAll('g[data-node]')].map(g => { const r = g.getBoundingClientRect();
		const t = g.querySelector('text.node-name');
		return {name: g.dataset.node, label: t && t.childNodes.length === 1 && t.firstChild.nodeType === Node.TEXT_NODE ? t.firstChild.data : '',
			x: r.left, y: r.top, w: r.width, h: r.height, innerWidth: window.innerWidth, innerHeight: window.innerHeight}; })`)
	if len(nodes) != 3 {
		t.Fatalf("nodes %+v", nodes)
	}
	for i, a := range nodes {
		// Nodes are "name.namespace"; the label is the name, the line
		// under it the namespace.
		if want, _, _ := strings.Cut(a.Name, "."); a.Label != want {
			t.Errorf("node %s: label %q is not its name (%q) as one text node", a.Name, a.Label, want)
		}
		if a.InnerWidth != 1280 || a.InnerHeight != 800 {
			t.Errorf("viewport %vx%v, want 1280x800", a.InnerWidth, a.InnerHeight)
		}
		if a.W <= 0 || a.H <= 0 || a.X < 0 || a.Y < 0 || a.X+a.W > 1280 || a.Y+a.H > 800 {
			t.Errorf("node %s at %+v: not inside 1280x800", a.Name, a)
		}
		for _, b := range nodes[i+1:] {
			if a.X < b.X+b.W && b.X < a.X+a.W && a.Y < b.Y+b.H && b.Y < a.Y+a.H {
				t.Errorf("nodes %s %+v and %s %+v overlap", a.Name, a, b.Name, b)
			}
		}
	}

	// 2. web → api shows RPS > 0, within 20 % of meshctl edges for the
	// same window (1 m), read just before and after.
	rpsRE := regexp.MustCompile(`^([0-9.]+) rps · ([0-9.]+)% · p99 [0-9.]+ms$`)
	waitJS("web → api's label", `(() => { const e = document.querySelector('g[data-edge="web.default->api.default"] text.edge-label');
		return e && / rps/.test(e.textContent) && !e.textContent.startsWith('0.00') ? '' : 'label: ' + (e && e.textContent); })()`)
	before := edgesNow()["web.default->api.default"].RPS
	time.Sleep(5500 * time.Millisecond) // one refresh of the page
	label := evalJS[string](t, bctx, `document.querySelector('g[data-edge="web.default->api.default"] text.edge-label').textContent`)
	after := edgesNow()["web.default->api.default"].RPS
	mm := rpsRE.FindStringSubmatch(label)
	if mm == nil {
		t.Fatalf("web → api's label %q: not RPS · success · p99", label)
	}
	pageRPS, _ := strconv.ParseFloat(mm[1], 64)
	if pageRPS <= 0 || within20(pageRPS, before) != nil && within20(pageRPS, after) != nil {
		t.Errorf("the page shows %v rps for web → api; meshctl edges %v before, %v after", pageRPS, before, after)
	}
	t.Logf("web → api: page %q, meshctl edges %.3f / %.3f rps", label, before, after)
	edge := evalJS[[]string](t, bctx, `(() => { const g = document.querySelector('g[data-edge="web.default->api.default"]'); const l = g.querySelector('.lock title');
		return [l ? l.textContent : '', g.getAttribute('class')]; })()`)
	if edge[0] != "mTLS" || !strings.Contains(edge[1], "ok") {
		t.Errorf("web → api: lock %q, class %q; want the mTLS lock and ok (green)", edge[0], edge[1])
	}
	// Click for the edge over time.
	do("click web → api", chromedp.Click(chromedp.CSS(`g[data-edge="web.default->api.default"] text.edge-label`)))
	waitJS("the edge's chart", `document.querySelector('[data-edge-chart="web.default->api.default"] canvas') ? '' : 'no chart'`)
	evalJS[any](t, bctx, `window.scrollTo(0, 0)`)
	png := shot("topology")
	if os.Getenv("UPDATE_SCREENSHOT") != "" {
		if err := os.WriteFile(filepath.Join("..", "docs", "dashboard-topology.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Dark mode follows prefers-color-scheme.
	colorScheme := func(v string) {
		t.Helper()
		if _, err := chromedp.Call(bctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: v}}}); err != nil {
			t.Fatal(err)
		}
	}
	bg := `getComputedStyle(document.body).backgroundColor`
	light := evalJS[string](t, bctx, bg)
	colorScheme("dark")
	if dark := evalJS[string](t, bctx, bg); dark == light {
		t.Errorf("the background is %s in dark mode as in light", dark)
	}
	shot("topology-dark")
	colorScheme("light")

	// 3 and 6. Proxies: db NACKED with its reason; web's version as text.
	do("proxies", chromedp.Click(chromedp.CSS(`nav a[href="#/proxies"]`)))
	waitJS("three proxies", `document.querySelectorAll('tr[data-proxy]').length === 3 ? '' : 'rows: ' + document.querySelectorAll('tr[data-proxy]').length`)
	type proxyRow struct{ Service, State, Reason, Version string }
	rows := evalJS[[]proxyRow](t, bctx, `[...document.querySelectorAll('tr[data-proxy]')].map(r => ({service: r.children[1].textContent,
		state: r.querySelector('.badge').textContent, reason: r.querySelector('.reason') ? r.querySelector('.reason').textContent : '',
		version: r.querySelector('[data-version]').textContent}))`)
	seen := map[string]bool{}
	for _, r := range rows {
		seen[r.Service] = true
		switch r.Service {
		case "db":
			if r.State != "NACKED" || r.Reason != nacked.NackReason || !strings.Contains(r.Reason, "conf") {
				t.Errorf("db: %+v, want NACKED with %q", r, nacked.NackReason)
			}
		case "web":
			if r.Version != xssVersion {
				t.Errorf("web's version shows as %q, want the text %q", r.Version, xssVersion)
			}
		}
	}
	if !seen["db"] || !seen["web"] || !seen["api"] {
		t.Errorf("proxy rows %+v", rows)
	}
	if pwned := evalJS[string](t, bctx, `typeof window.__pwned + ' ' + document.querySelectorAll('main img').length`); pwned != "undefined 0" {
		t.Errorf("window.__pwned, img elements: %s (the version ran as HTML)", pwned)
	}
	// The rows are sorted by service; a click on its header reverses them,
	// another sorts them back.
	services := `[...document.querySelectorAll('tr[data-proxy]')].map(r => r.children[1].textContent).join(',')`
	for _, want := range []string{"api,db,web", "web,db,api", "api,db,web"} {
		if got := evalJS[string](t, bctx, services); got != want {
			t.Errorf("proxies by service: %s, want %s", got, want)
		}
		do("sort by service", chromedp.Click(chromedp.CSS(`thead th:nth-child(2) button.sort`)))
	}
	do("sort by service", chromedp.Click(chromedp.CSS(`thead th:nth-child(2) button.sort`)))
	// Filter narrows the table.
	do("filter", chromedp.SendKeys(chromedp.CSS(`input[type=search]`), "nack"))
	waitJS("filtered", `(() => { const r = [...document.querySelectorAll('tr[data-proxy]')]; return r.length === 1 && r[0].children[1].textContent === 'db' ? '' : r.length + ' rows'; })()`)
	shot("proxies")

	// 4. Policy: the denies the test caused, with source identity and rule.
	do("policy", chromedp.Click(chromedp.CSS(`nav a[href="#/policy"]`)))
	waitJS("denies", `document.querySelectorAll('tr[data-deny]').length >= 1 ? '' : 'no deny rows'`)
	type denyCells struct{ Source, Policy, Rule, Path string }
	deny := evalJS[denyCells](t, bctx, `(() => { const r = document.querySelector('tr[data-deny]');
		return {source: r.querySelector('[data-source]').textContent, policy: r.querySelector('[data-policy]').textContent,
			rule: r.querySelector('[data-rule]').textContent, path: r.children[4].textContent}; })()`)
	if deny.Source != idOf("web").String() || deny.Policy != "default/no-admin" || deny.Rule != "0" || deny.Path != fmt.Sprintf("/admin/users/%d", denied-1) {
		t.Errorf("newest deny %+v, want web's identity, default/no-admin rule 0, /admin/users/%d", deny, denied-1)
	}
	do("explain",
		chromedp.SendKeys(chromedp.CSS(`input[name=from]`), idOf("web").String()),
		chromedp.SendKeys(chromedp.CSS(`input[name=to]`), "api"),
		chromedp.SendKeys(chromedp.CSS(`input[name=path]`), "admin/x"),
		chromedp.Click(chromedp.CSS(`form.explain button[type=submit]`)))
	waitJS("explain's answer", `(() => { const d = document.querySelector('[data-explain] [data-decision]'); return d && d.textContent === 'DENIED' ? '' : 'decision: ' + (d && d.textContent); })()`)
	shot("policy")

	// Certificates and Resources.
	do("certificates", chromedp.Click(chromedp.CSS(`nav a[href="#/certificates"]`)))
	waitJS("CA phase", `(() => { const p = document.querySelector('[data-ca-phase]'); return p && p.textContent === 'idle' ? '' : 'phase: ' + (p && p.textContent); })()`)
	shot("certificates")
	do("resources", chromedp.Click(chromedp.CSS(`nav a[href="#/resources"]`)))
	waitJS("resources YAML", `(() => { const p = document.querySelector('details[data-kind="AuthorizationPolicy"] pre'); return p && p.textContent.includes('name: no-admin') ? '' : 'no policy YAML'; })()`)
	shot("resources")

	// No CDN: everything the page loaded came from the dashboard.
	if other := evalJS[[]string](t, bctx, `performance.getEntriesByType('resource').map(e => e.name).filter(u => !u.startsWith(location.origin + '/'))`); len(other) > 0 {
		t.Errorf("the page loaded from elsewhere: %v", other)
	}
	if n := evalJS[int](t, bctx, `performance.getEntriesByType('resource').length`); n < 3 {
		t.Errorf("%d resources loaded: the check above saw nothing", n)
	}

	// 5. No console error, no exception, no CSP violation on any page.
	if csp := evalJS[[]string](t, bctx, `window.__csp`); len(csp) > 0 {
		t.Errorf("CSP violations: %v", csp)
	}
	if errs := blog.all(); len(errs) > 0 {
		t.Errorf("the browser reported:\n%s", strings.Join(errs, "\n"))
	}
	// The recorder does catch a violation: an inline style attribute.
	evalJS[any](t, bctx, `document.body.setAttribute('style', 'color: red')`)
	waitJS("the violation is seen", `window.__csp.length > 0 ? '' : 'not seen'`)

	// 7. The API refuses a call without the session cookie, or with Host
	// evil.example (the browser's own cookie, read over CDP).
	res, err := chromedp.Call(bctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/"}})
	if err != nil {
		t.Fatal(err)
	}
	var session *http.Cookie
	for _, c := range res.Cookies {
		if strings.HasPrefix(c.Name, "minimesh_dashboard_") {
			session = &http.Cookie{Name: c.Name, Value: c.Value}
			if !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || c.Path != "/" {
				t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/", c)
			}
		}
	}
	if session == nil {
		t.Fatalf("no session cookie in the browser: %+v", res.Cookies)
	}
	apiCall := func(host string, cookie *http.Cookie) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+"/api/Version", strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		if host != "" {
			req.Host = host
		}
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("a CORS header: %v", resp.Header)
		}
		return resp.StatusCode
	}
	if got := apiCall("", session); got != http.StatusOK {
		t.Errorf("with the session cookie: %d, want 200", got)
	}
	if got := apiCall("", nil); got != http.StatusForbidden {
		t.Errorf("without the session cookie: %d, want 403", got)
	}
	if got := apiCall("evil.example", session); got != http.StatusForbidden {
		t.Errorf("with Host evil.example: %d, want 403", got)
	}
	// A failed call is answered with its error and logged on meshctl's
	// stderr (a view refuses a field it does not know).
	bad, _ := http.NewRequest(http.MethodPost, base+"/api/Explain", strings.NewReader(`{"noSuchField":1}`))
	bad.Header.Set("Content-Type", "application/json")
	bad.AddCookie(session)
	if resp, err := client.Do(bad); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("a malformed Explain: %d, want an error", resp.StatusCode)
		}
	}
	eventually(t, 5*time.Second, "meshctl dashboard logs the failed call", func() error {
		if o := out.String(); !strings.Contains(o, `msg="dashboard call failed" call=Explain`) {
			return fmt.Errorf("output %q", o)
		}
		return nil
	})
	if csph := evalJS[string](t, bctx, `fetch('/', {credentials: 'same-origin'}).then(r => r.headers.get('content-security-policy'))`, chromedp.EvalAwaitPromise); !strings.HasPrefix(csph, "default-src 'self'") {
		t.Errorf("Content-Security-Policy %q", csph)
	}

	// 8. A folded edge says how many edges it holds. A proxy of sink
	// reports 512 callers with 8 KiB identities, more than meshd's answer
	// may carry: meshd names the busiest and folds the rest into one edge
	// from "other", whose label and title give its count, the same number
	// as the page's note.
	fctx, stopFold := context.WithTimeout(context.Background(), 30*time.Second)
	defer stopFold()
	controlplanetest.SendOversizeStats(t, m.Register(t, fctx, "default", "sink"))
	do("topology again", chromedp.Click(chromedp.CSS(`nav a[href="#/topology"]`)))
	waitJS("the folded edge", `document.querySelector('g[data-edge="other->sink.default"]') && document.querySelector('[data-folded]') ? '' : 'not drawn'`)
	type foldedView struct{ Label, Title, Note, Node string }
	fv := evalJS[foldedView](t, bctx, `(() => { const g = document.querySelector('g[data-edge="other->sink.default"]');
		return {label: g.querySelector('text.edge-label').textContent, title: g.querySelector('title').textContent,
			note: document.querySelector('[data-folded]').textContent,
			node: document.querySelector('g[data-node="other"] text.node-sub').textContent}; })()`)
	nm := regexp.MustCompile(`^(\d+) quieter edges`).FindStringSubmatch(fv.Note)
	if nm == nil || nm[1] == "0" {
		t.Fatalf("the note %q does not count the folded edges", fv.Note)
	}
	if !strings.HasPrefix(fv.Label, nm[1]+" edges · ") || fv.Title != "other ("+nm[1]+" edges) → sink.default" || fv.Node != "quieter callers" {
		t.Errorf("folded edge: label %q, title %q, node %q; want %s edges in the label and the title", fv.Label, fv.Title, fv.Node, nm[1])
	}
	if busiest := evalJS[bool](t, bctx, `!!document.querySelector('g[data-edge="caller-511.default->sink.default"]')`); !busiest {
		t.Errorf("the busiest caller is not drawn as its own edge")
	}
	// "other" heads its column; hundreds of callers scroll at the
	// drawing's own scale rather than shrink out of sight.
	if above := evalJS[[]string](t, bctx, `(() => { const o = document.querySelector('g[data-node="other"]').getBoundingClientRect();
		return [...document.querySelectorAll('g[data-node]')].filter(g => { const r = g.getBoundingClientRect(); return r.left === o.left && r.top < o.top; }).map(g => g.dataset.node); })()`); len(above) > 0 {
		t.Errorf("%d nodes above other in its column, first %q", len(above), above[0])
	}
	if h := evalJS[float64](t, bctx, `(() => { const g = document.querySelector('g[data-node="other"]'); g.scrollIntoView({block: 'center'});
		const t = document.querySelector('.topo'); return t.scrollHeight > t.clientHeight ? g.getBoundingClientRect().height : -1; })()`); h < 40 {
		t.Errorf("with %s folded edges the node other is %vpx high (-1: the topology does not scroll); want it drawn at scale", nm[1], h)
	}
	shot("topology-folded")
	t.Logf("screenshots in %s", artifacts)
}

// evalJS evaluates js in the page and decodes its value.
func evalJS[T any](t *testing.T, ctx context.Context, js string, opts ...chromedp.EvaluateOption) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, opts...))
	if err != nil {
		t.Fatalf("evaluate %.80q: %v", js, err)
	}
	return v
}
