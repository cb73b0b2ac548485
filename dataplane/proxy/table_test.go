package proxy

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/api"
	"minimesh/dataplane/balancer"
	meshv1 "minimesh/proto/mesh/v1"
)

// snapshot builds a Snapshot from YAML resources and endpoints given as
// "ns/service address spiffe-id".
func snapshot(t testing.TB, yaml string, endpoints ...string) *meshv1.Snapshot {
	t.Helper()
	snap := &meshv1.Snapshot{Version: "test"}
	if yaml != "" {
		docs, err := api.Decode("test.yaml", strings.NewReader(yaml))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range docs {
			snap.Resources = append(snap.Resources, api.ToProto(d.Object))
		}
	}
	for _, e := range endpoints {
		f := strings.Fields(e)
		ns, svc, _ := strings.Cut(f[0], "/")
		snap.Endpoints = append(snap.Endpoints, &meshv1.Endpoint{Namespace: ns, Service: svc, Address: f[1], SpiffeId: f[2], InstanceId: f[1]})
	}
	return snap
}

const tableYAML = `
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: api}
spec:
  ports: [{name: http, port: 8080, protocol: http}, {name: db, port: 5432, protocol: tcp}, {name: rpc, port: 9090, protocol: grpc}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/api-*"]
  subsets:
  - {name: canary, identities: ["spiffe://minimesh.local/ns/default/sa/api-canary"]}
---
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: 8000, protocol: http}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/web"]
---
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: tcponly, namespace: prod}
spec:
  ports: [{name: db, port: 5432, protocol: tcp}]
  servingIdentities: ["*"]
---
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: api}
spec:
  service: api
  matches: [{path: {prefix: /v2/}}]
  backends: [{service: api, subset: canary}]
`

func TestCompileTable(t *testing.T) {
	snap := snapshot(t, tableYAML,
		"default/api 10.0.0.1:15006 spiffe://minimesh.local/ns/default/sa/api-stable",
		"default/api 10.0.0.2:15006 spiffe://minimesh.local/ns/default/sa/api-canary",
		"default/api 10.0.0.2:15006 spiffe://minimesh.local/ns/default/sa/api-canary", // twice: once
		"default/api 10.0.0.3:15006 spiffe://minimesh.local/ns/default/sa/intruder",
		"default/api 10.0.0.4:15006 spiffe://other.domain/ns/default/sa/api-stable",
		"prod/legacy 10.0.1.1:15006 spiffe://minimesh.local/ns/prod/sa/legacy",
		"prod/legacy 10.0.1.2:15006 spiffe://minimesh.local/ns/prod/sa/impostor",
		"prod/legacy 10.0.1.3:15006 spiffe://other.domain/ns/prod/sa/legacy",
		"/noname 10.0.2.1:15006 spiffe://minimesh.local/ns/default/sa/noname",
	)
	tab, err := CompileTable(TableConfig{Namespace: "default", Service: "web", TrustDomain: spiffeid.RequireTrustDomainFromString("minimesh.local")}, snap)
	if err != nil {
		t.Fatal(err)
	}
	target := func(addr, id string) balancer.Target { return balancer.Target{Addr: addr, Identity: id} }
	api := tab.lookup("default", "api")
	if want := []balancer.Target{
		target("10.0.0.1:15006", "spiffe://minimesh.local/ns/default/sa/api-stable"),
		target("10.0.0.2:15006", "spiffe://minimesh.local/ns/default/sa/api-canary"),
	}; !slices.Equal(api.targets, want) {
		t.Errorf("api's endpoints = %v, want %v (servingIdentities decide)", api.targets, want)
	}
	if got := api.subsets["canary"]; len(got) != 1 || got[0].Addr != "10.0.0.2:15006" {
		t.Errorf("subset canary = %v", got)
	}
	// Without a Service resource, the service account must be the service
	// and the trust domain ours.
	if got := tab.lookup("prod", "legacy").targets; len(got) != 1 || got[0].Addr != "10.0.1.1:15006" {
		t.Errorf("legacy's endpoints = %v", got)
	}
	// An endpoint without a namespace is in "default".
	if got := tab.lookup("default", "noname").targets; len(got) != 1 {
		t.Errorf("noname's endpoints = %v", got)
	}
	if got := tab.Rejected(); len(got) != 4 {
		t.Errorf("rejected = %q, want the intruder, the other domain's api, the impostor and the other domain's legacy", got)
	}
	if tab.Endpoints() != 4 {
		t.Errorf("Endpoints() = %d, want 4", tab.Endpoints())
	}
	if api.routes == nil || api.routes.Service() != "api" {
		t.Errorf("api's routes = %v", api.routes)
	}
	// The inbound's ports: those of web, this proxy's service.
	if want := map[uint32]meshv1.Protocol{8000: meshv1.Protocol_PROTOCOL_HTTP}; len(tab.own) != 1 || tab.own[8000] != want[8000] {
		t.Errorf("own ports = %v", tab.own)
	}
	if got := tab.Services(); !slices.Equal(got, []string{"api.default", "legacy.prod", "noname.default", "tcponly.prod", "web.default"}) {
		t.Errorf("Services() = %v", got)
	}
}

func TestTableLookupHost(t *testing.T) {
	tab, err := CompileTable(TableConfig{Namespace: "default"}, snapshot(t, tableYAML,
		"prod/legacy 10.0.1.1:15006 spiffe://minimesh.local/ns/prod/sa/legacy"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host    string
		service string // "" for none
		port    uint32
	}{
		{"api", "api.default", 0},
		{"api:8080", "api.default", 8080},
		{"api.default", "api.default", 0},
		{"api.default.svc", "api.default", 0},
		{"api.default.svc.cluster.local", "api.default", 0},
		{"API.Default.SVC:9090", "api.default", 9090},
		{"api.default.svc.", "api.default", 0},
		{"api:", "api.default", 0},
		{"legacy", "", 0}, // another namespace: the short name is not enough
		{"legacy.prod", "legacy.prod", 0},
		{"legacy.prod.svc:80", "legacy.prod", 80},
		{"tcponly.prod", "tcponly.prod", 0},
		{"api.prod", "", 0},
		{"example.com", "", 0},
		{"127.0.0.1:8080", "", 8080},
		{"[::1]:8080", "", 8080},
		{"[::1]", "", 0},
		{"api:99999", "", 0},
		{"api:x", "", 0},
		{"", "", 0},
	} {
		s, port := tab.lookupHost(tc.host)
		got := ""
		if s != nil {
			got = s.label
		}
		if got != tc.service || port != tc.port {
			t.Errorf("lookupHost(%q) = %q, %d; want %q, %d", tc.host, got, port, tc.service, tc.port)
		}
	}
}

func TestServicePort(t *testing.T) {
	tab, err := CompileTable(TableConfig{}, snapshot(t, tableYAML))
	if err != nil {
		t.Fatal(err)
	}
	api, tcp := tab.lookup("default", "api"), tab.lookup("prod", "tcponly")
	for _, tc := range []struct {
		s    *service
		port uint32
		http bool
		want string // header value, "" for nil
	}{
		{api, 0, true, "http/8080"},
		{api, 0, false, "http/8080"},
		{api, 9090, true, "grpc/9090"},
		{api, 5432, true, "tcp/5432"}, // asked for by number: the caller refuses it
		{api, 1234, true, "http/8080"},
		{tcp, 0, true, "tcp/5432"}, // no HTTP port at all
		{tab.lookup("default", "web"), 0, true, "http/8000"},
	} {
		p := tc.s.port(tc.port, tc.http)
		got := ""
		if p != nil {
			got = p.header[0]
		}
		if got != tc.want {
			t.Errorf("%s.port(%d, %v) = %q, want %q", tc.s.label, tc.port, tc.http, got, tc.want)
		}
	}
	undeclared := &service{label: "x.default"}
	if undeclared.port(80, true) != nil {
		t.Error("a service without a Service resource has no port")
	}
}

func TestCompileTableRefuses(t *testing.T) {
	bad := &meshv1.Resource{ApiVersion: "minimesh.io/v1alpha1", Kind: "Service", Name: "Bad_Name", Namespace: "default",
		Spec: &meshv1.Resource_Service{Service: &meshv1.ServiceSpec{}}}
	for _, tc := range []struct {
		name string
		snap *meshv1.Snapshot
		want string
	}{
		{"invalid resource", &meshv1.Snapshot{Resources: []*meshv1.Resource{bad}}, "resources[0]"},
		{"endpoint without SPIFFE ID", snapshot(t, "", "default/api 10.0.0.1:15006 not-an-id"), "spiffe_id"},
		{"endpoint without port", snapshot(t, "", "default/api 10.0.0.1 spiffe://minimesh.local/ns/default/sa/api"), "address"},
		{"route path no request can have", snapshot(t, tableYAML+`
---
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: z-bad}
spec:
  service: api
  matches: [{path: {exact: /a%2Fb}}]
  backends: [{service: api}]
`), "routes of api.default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CompileTable(TableConfig{}, tc.snap)
			if !errors.Is(err, ErrInvalidSnapshot) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalidSnapshot mentioning %q", err, tc.want)
			}
		})
	}
}

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Target
		err  bool
	}{
		{in: "http/8080", want: Target{meshv1.Protocol_PROTOCOL_HTTP, 8080}},
		{in: "http2/1", want: Target{meshv1.Protocol_PROTOCOL_HTTP2, 1}},
		{in: "grpc/65535", want: Target{meshv1.Protocol_PROTOCOL_GRPC, 65535}},
		{in: "tcp/5432", want: Target{meshv1.Protocol_PROTOCOL_TCP, 5432}},
		{in: "tcp/0", err: true},
		{in: "tcp/65536", err: true},
		{in: "tcp/08080", err: true},
		{in: "tcp/+80", err: true},
		{in: "tcp/ 80", err: true},
		{in: "TCP/80", err: true},
		{in: "udp/53", err: true},
		{in: "8080", err: true},
		{in: "http/", err: true},
		{in: "/80", err: true},
		{in: "", err: true},
	} {
		got, err := ParseTarget(tc.in)
		if tc.err {
			if !errors.Is(err, ErrInvalidTarget) {
				t.Errorf("ParseTarget(%q) = %v, %v; want ErrInvalidTarget", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want || got.String() != tc.in {
			t.Errorf("ParseTarget(%q) = %v (%s), %v; want %v", tc.in, got, got, err, tc.want)
		}
	}
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"http/8080", "tcp/1", "grpc/65535", "x/1", "tcp/0", "tcp//1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := ParseTarget(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidTarget) {
				t.Fatalf("error %v does not wrap ErrInvalidTarget", err)
			}
			return
		}
		if tg.Port == 0 || tg.String() != s {
			t.Fatalf("%q parsed to %v, which prints %q", s, tg, tg)
		}
	})
}

func FuzzSplitHost(f *testing.F) {
	for _, s := range []string{"api", "api:80", "API.ns.svc.:8080", "[::1]:80", "[::1]", "a:b:c", ":", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		name, port := splitHost(host)
		if strings.ContainsAny(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") {
			t.Fatalf("%q: name %q is not lower case", host, name)
		}
		if port > 65535 || len(name) > len(host) {
			t.Fatalf("%q: %q, %d", host, name, port)
		}
		if port != 0 && !strings.HasSuffix(host, ":"+itoa(port)) {
			t.Fatalf("%q: port %d is not its suffix", host, port)
		}
		// What a Host names does not depend on the case of its letters.
		upper := []byte(host)
		for i, c := range upper {
			if 'a' <= c && c <= 'z' {
				upper[i] = c - 'a' + 'A'
			}
		}
		if n2, p2 := splitHost(string(upper)); n2 != name || p2 != port {
			t.Fatalf("%q: %q, %d; upper case: %q, %d", host, name, port, n2, p2)
		}
	})
}

func itoa(p uint32) string { return Target{Port: p}.String()[1:] }

func TestRequestID(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		keep bool
	}{
		{[]string{"abc-123"}, true},
		{[]string{"4bf92f35-77b3-4da6-a3ce-929d0e0e4736"}, true},
		{[]string{"a.b:c_d+e/f="}, true},
		{[]string{strings.Repeat("x", 128)}, true},
		{[]string{strings.Repeat("x", 129)}, false},
		{[]string{""}, false},
		{[]string{"has space"}, false},
		{[]string{"new\nline"}, false},
		{[]string{"ünïcode"}, false},
		{[]string{"a;b"}, false},
		{[]string{"a,b"}, false},
		{[]string{`a"b`}, false},
		{[]string{"a\x00b"}, false},
		{[]string{"a\x7f"}, false},
		{[]string{"a@b"}, false},
		{[]string{"[a]"}, false},
		{[]string{"one", "two"}, false},
		{nil, false},
	} {
		h := map[string][]string{}
		if tc.in != nil {
			h[HeaderRequestID] = tc.in
		}
		ensureRequestID(h)
		got := h[HeaderRequestID]
		if len(got) != 1 {
			t.Fatalf("%q: %d values", tc.in, len(got))
		}
		if tc.keep && got[0] != tc.in[0] {
			t.Errorf("%q replaced by %q", tc.in, got[0])
		}
		if !tc.keep && (len(got[0]) != 36 || got[0][14] != '4' || !validRequestID(got[0])) {
			t.Errorf("%q: generated %q is not a UUIDv4", tc.in, got[0])
		}
	}
	// A second spelling of the key does not survive a replacement.
	h := map[string][]string{"x-request-id": {"bad id"}}
	ensureRequestID(h)
	if len(h) != 1 || len(h[HeaderRequestID]) != 1 {
		t.Errorf("header after replacement: %v", h)
	}
	// Each new ID is its own (its bytes are not shared with the next one)
	// and costs one allocation.
	a, b := http.Header{}, http.Header{}
	ensureRequestID(a)
	ensureRequestID(b)
	first := a.Get(HeaderRequestID)
	if first == b.Get(HeaderRequestID) || !validRequestID(first) {
		t.Errorf("two new IDs: %q and %q", first, b.Get(HeaderRequestID))
	}
	h = make(http.Header, 4)
	if n := testing.AllocsPerRun(100, func() {
		delete(h, HeaderRequestID)
		ensureRequestID(h)
	}); n != 1 {
		t.Errorf("a new X-Request-Id costs %.0f allocations, want 1", n)
	}
	if a.Get(HeaderRequestID) != first {
		t.Errorf("an ID changed after more were made: %q, then %q", first, a.Get(HeaderRequestID))
	}
}
