package api_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

var update = flag.Bool("update", false, "rewrite testdata/golden")

// kindFiles holds one full example per kind, every field set.
var kindFiles = map[api.Kind]string{
	api.KindService:             "service.yaml",
	api.KindRoute:               "route.yaml",
	api.KindRateLimit:           "ratelimit.yaml",
	api.KindAccessLog:           "accesslog.yaml",
	api.KindAuthorizationPolicy: "authz.yaml",
	api.KindConfigFile:          "configfile.yaml",
	api.KindExternalService:     "externalservice.yaml",
	api.KindLogAdapter:          "logadapter.yaml",
	api.KindLogShipping:         "logshipping.yaml",
}

func decodeFile(t testing.TB, name string) []api.Document {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	docs, err := api.Decode(name, f)
	if err != nil {
		t.Fatalf("Decode(%s): %v", name, err)
	}
	return docs
}

func decodeString(t testing.TB, in string) []api.Document {
	t.Helper()
	docs, err := api.Decode("test.yaml", strings.NewReader(in))
	if err != nil {
		t.Fatalf("Decode: %v\ninput:\n%s", err, in)
	}
	return docs
}

// wire sends o through the gRPC envelope's binary encoding and back.
func wire(t testing.TB, o api.Object) api.Object {
	t.Helper()
	b, err := proto.Marshal(api.ToProto(o))
	if err != nil {
		t.Fatal(err)
	}
	var r meshv1.Resource
	if err := proto.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	back, err := api.FromProto(&r)
	if err != nil {
		t.Fatalf("FromProto: %v", err)
	}
	return back
}

func sameObject(t testing.TB, got, want api.Object) {
	t.Helper()
	g, w := *got.Meta(), *want.Meta()
	if got.Kind() != want.Kind() || g.Name != w.Name || g.Namespace != w.Namespace || g.Revision != w.Revision || !g.UpdateTime.Equal(w.UpdateTime) {
		t.Fatalf("object %v %+v, want %v %+v", got.Kind(), *got.Meta(), want.Kind(), *want.Meta())
	}
	if !proto.Equal(got.SpecMessage(), want.SpecMessage()) {
		t.Fatalf("spec differs:\n got %v\nwant %v", got.SpecMessage(), want.SpecMessage())
	}
}

// TestRoundTrip: YAML → object → wire proto → object → YAML, for every
// kind. The YAML written is the golden file, and reading it back gives the
// same object.
func TestRoundTrip(t *testing.T) {
	for _, kind := range api.Kinds() {
		name := kindFiles[kind]
		t.Run(string(kind), func(t *testing.T) {
			docs := decodeFile(t, name)
			if len(docs) != 1 || docs[0].Object.Kind() != kind {
				t.Fatalf("got %d documents, want one %s", len(docs), kind)
			}
			orig := docs[0].Object
			// Every field of the spec is set in the example, so the round
			// trip covers them all.
			checkAllFieldsSet(t, orig.SpecMessage())

			back := wire(t, orig)
			sameObject(t, back, orig)

			out, err := api.MarshalYAML(back)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "golden", name)
			if *update {
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if !bytes.Equal(out, want) {
				t.Errorf("MarshalYAML differs from %s:\n%s", golden, out)
			}
			again := decodeString(t, string(out))
			sameObject(t, again[0].Object, orig)

			j, err := api.MarshalJSON(back)
			if err != nil {
				t.Fatal(err)
			}
			fromJSON := decodeString(t, string(j))
			sameObject(t, fromJSON[0].Object, orig)
		})
	}
}

// checkAllFieldsSet fails when a field of m or of a message inside it is
// unset, so that the examples keep covering the protos as they grow.
// Members of a oneof count as set when any member of the oneof is set
// somewhere in the example.
func checkAllFieldsSet(t *testing.T, m proto.Message) {
	t.Helper()
	seen := map[string]bool{}
	var walk func(m proto.Message)
	walk = func(m proto.Message) {
		r := m.ProtoReflect()
		r.Range(func(fd protoreflectFieldDescriptor, v protoreflectValue) bool {
			seen[string(fd.FullName())] = true
			switch {
			case fd.IsList() && fd.Message() != nil:
				for i := range v.List().Len() {
					walk(v.List().Get(i).Message().Interface())
				}
			case fd.Message() != nil && !fd.IsMap() && !strings.HasPrefix(string(fd.Message().FullName()), "google.protobuf."):
				walk(v.Message().Interface())
			}
			return true
		})
	}
	walk(m)
	var check func(md protoreflectMessageDescriptor)
	visited := map[string]bool{}
	check = func(md protoreflectMessageDescriptor) {
		if visited[string(md.FullName())] || strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
			return
		}
		visited[string(md.FullName())] = true
		fields := md.Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			if !seen[string(fd.FullName())] {
				t.Errorf("the example never sets %s", fd.FullName())
			}
			if fd.Message() != nil {
				check(fd.Message())
			}
		}
	}
	check(m.ProtoReflect().Descriptor())
}

func TestDecodeMultiDocument(t *testing.T) {
	docs := decodeFile(t, "multi.yaml")
	if len(docs) != 2 {
		t.Fatalf("got %d documents, want 2", len(docs))
	}
	svc, ok := docs[0].Object.(*api.Service)
	if !ok || svc.Name != "echo" || svc.Namespace != api.DefaultNamespace {
		t.Fatalf("document 1 = %#v, want Service default/echo", docs[0].Object)
	}
	if got := svc.Spec.GetPorts()[0].GetProtocol(); got != meshv1.Protocol_PROTOCOL_HTTP {
		t.Errorf("protocol by full enum name = %v", got)
	}
	r, ok := docs[1].Object.(*api.Route)
	if !ok || r.Name != "echo" || r.Spec.GetTimeout().AsDuration() != time.Second {
		t.Fatalf("document 2 = %#v, want the JSON Route", docs[1].Object)
	}
	if docs[0].Index != 1 || docs[0].Line != 3 || docs[1].Index != 2 || docs[1].Line != 13 {
		t.Errorf("positions (index, line) = (%d, %d), (%d, %d); want (1, 3), (2, 13)",
			docs[0].Index, docs[0].Line, docs[1].Index, docs[1].Line)
	}

	var buf bytes.Buffer
	if err := api.Encode(&buf, docs[0].Object, docs[1].Object); err != nil {
		t.Fatal(err)
	}
	again := decodeString(t, buf.String())
	if len(again) != 2 {
		t.Fatalf("Encode wrote %d documents, want 2:\n%s", len(again), buf.String())
	}
	sameObject(t, again[0].Object, docs[0].Object)
	sameObject(t, again[1].Object, docs[1].Object)
}

const validRoute = `apiVersion: minimesh.io/v1alpha1
kind: Route
metadata:
  name: r1
  namespace: prod
spec:
  service: web
  backends: [{service: web}]
`

// TestDecodeForms: the spellings people use for enums, durations and
// markers all decode.
func TestDecodeForms(t *testing.T) {
	tests := []struct {
		name, in string
		check    func(t *testing.T, o api.Object)
	}{
		{"enum short name in upper case", validRoute + "  retries: {retryOn: [GATEWAY-ERROR]}\n", func(t *testing.T, o api.Object) {
			if got := o.(*api.Route).Spec.GetRetries().GetRetryOn(); len(got) != 1 || got[0] != meshv1.RetryOn_RETRY_ON_GATEWAY_ERROR {
				t.Errorf("retryOn = %v", got)
			}
		}},
		{"enum full name", validRoute + "  retries: {retryOn: [RETRY_ON_5XX]}\n", func(t *testing.T, o api.Object) {
			if got := o.(*api.Route).Spec.GetRetries().GetRetryOn(); len(got) != 1 || got[0] != meshv1.RetryOn_RETRY_ON_5XX {
				t.Errorf("retryOn = %v", got)
			}
		}},
		{"go duration", validRoute + "  timeout: 1m30s\n", func(t *testing.T, o api.Object) {
			if got := o.(*api.Route).Spec.GetTimeout().AsDuration(); got != 90*time.Second {
				t.Errorf("timeout = %v", got)
			}
		}},
		{"protojson duration", validRoute + "  timeout: 0.000000001s\n", func(t *testing.T, o api.Object) {
			if got := o.(*api.Route).Spec.GetTimeout().AsDuration(); got != time.Nanosecond {
				t.Errorf("timeout = %v", got)
			}
		}},
		{"proto field names", validRoute + "  retries: {per_try_timeout: 1s}\n", func(t *testing.T, o api.Object) {
			if got := o.(*api.Route).Spec.GetRetries().GetPerTryTimeout().AsDuration(); got != time.Second {
				t.Errorf("perTryTimeout = %v", got)
			}
		}},
		{"marker with content and a BOM", "\ufeff--- {apiVersion: minimesh.io/v1alpha1, kind: Route, metadata: {name: r1}, spec: {service: web, backends: [{service: web}]}}\n", func(t *testing.T, o api.Object) {
			if o.Meta().Name != "r1" {
				t.Errorf("name = %q", o.Meta().Name)
			}
		}},
		{"server-set metadata", strings.Replace(validRoute, "  namespace: prod\n", "  namespace: prod\n  revision: 42\n  updateTime: \"2026-01-02T03:04:05.5Z\"\n", 1), func(t *testing.T, o api.Object) {
			m := o.Meta()
			if m.Revision != 42 || !m.UpdateTime.Equal(time.Date(2026, 1, 2, 3, 4, 5, 5e8, time.UTC)) {
				t.Errorf("metadata = %+v", *m)
			}
		}},
		{"octal mode", "apiVersion: minimesh.io/v1alpha1\nkind: ConfigFile\nmetadata: {name: f}\nspec: {service: web, path: a, mode: 0600}\n", func(t *testing.T, o api.Object) {
			if got := o.(*api.ConfigFile).Spec.GetMode(); got != 0o600 {
				t.Errorf("mode = %#o", got)
			}
		}},
		{"weight 0 kept apart from unset", strings.Replace(validRoute, "[{service: web}]", "[{service: web}, {service: web, port: 8080, weight: 0}]", 1), func(t *testing.T, o api.Object) {
			b := o.(*api.Route).Spec.GetBackends()
			if api.BackendWeight(b[0]) != 1 || api.BackendWeight(b[1]) != 0 {
				t.Errorf("weights = %d, %d; want 1 (unset), 0", api.BackendWeight(b[0]), api.BackendWeight(b[1]))
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			docs := decodeString(t, tc.in)
			if len(docs) != 1 {
				t.Fatalf("got %d documents", len(docs))
			}
			tc.check(t, docs[0].Object)
			// Whatever the spelling, the object survives a round trip.
			out, err := api.MarshalYAML(docs[0].Object)
			if err != nil {
				t.Fatal(err)
			}
			sameObject(t, decodeString(t, string(out))[0].Object, docs[0].Object)
		})
	}
}

// TestDecodeErrors: each mistake is reported with the document, its line
// and the field, and nothing is returned.
func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // substrings of the error, each on a line of its own
	}{
		{"unknown top-level field", validRoute + "state: {}\n",
			[]string{`test.yaml: document 1 (line 1): state: unknown field; the document has only apiVersion, kind, metadata, spec, status`}},
		{"unknown metadata field", strings.Replace(validRoute, "  name: r1\n", "  name: r1\n  labels: {a: b}\n", 1),
			[]string{`Route "prod/r1": metadata.labels: unknown field`}},
		{"unknown spec field", validRoute + "  retry: {attempts: 1}\n",
			[]string{`Route "prod/r1": spec.retry: unknown field; spec has only service, matches, backends, timeout, retries`}},
		{"unknown nested field", validRoute + "  retries: {attempts: 1, tries: 2}\n",
			[]string{`spec.retries.tries: unknown field`}},
		{"unknown field in a list", strings.Replace(validRoute, "{service: web}", "{service: web, wieght: 2}", 1),
			[]string{`spec.backends[0].wieght: unknown field`}},
		{"key in the wrong case", strings.Replace(validRoute, "kind: Route", "Kind: Route", 1),
			[]string{`Kind: unknown field`, `kind: required`}},
		{"duplicate key", validRoute + "  service: api\n",
			[]string{`document 1 (line 1): syntax error: `, `line 9`}},
		{"not yaml", "kind: [\n",
			[]string{`syntax error`}},
		{"not a mapping", "- a\n- b\n",
			[]string{`document 1 (line 1): a document must be a mapping`}},
		{"wrong apiVersion", strings.Replace(validRoute, "minimesh.io/v1alpha1", "v1", 1),
			[]string{`apiVersion: must be "minimesh.io/v1alpha1", not "v1"`}},
		{"unknown kind", strings.Replace(validRoute, "kind: Route", "kind: route", 1),
			[]string{`kind: unknown kind "route"`}},
		{"no metadata", "apiVersion: minimesh.io/v1alpha1\nkind: Route\nspec: {}\n",
			[]string{`metadata: required`}},
		{"no name", strings.Replace(validRoute, "  name: r1\n", "", 1),
			[]string{`metadata.name: required`}},
		{"name not a string", strings.Replace(validRoute, "name: r1", "name: yes", 1),
			[]string{`metadata.name: must be a string (quote it)`}},
		{"no spec", "apiVersion: minimesh.io/v1alpha1\nkind: Route\nmetadata: {name: r1}\n",
			[]string{`Route "default/r1": spec: required`}},
		{"spec not a mapping", "apiVersion: minimesh.io/v1alpha1\nkind: Route\nmetadata: {name: r1}\nspec: [1]\n",
			[]string{`spec: must be a mapping`}},
		{"bad duration", validRoute + "  timeout: 5\n",
			[]string{`spec.timeout: must be a duration such as "1.5s"`}},
		{"bad duration string", validRoute + "  timeout: 5 seconds\n",
			[]string{`spec.timeout: "5 seconds" is not a duration`}},
		{"unknown enum value", validRoute + "  retries: {retryOn: [5xx, timeout]}\n",
			[]string{`spec.retries.retryOn[1]: unknown value "timeout"; one of 5xx, gateway-error, reset, connect-failure, retriable-4xx`}},
		{"enum zero by short name", "apiVersion: minimesh.io/v1alpha1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 1, protocol: unspecified}], servingIdentities: ['*']}\n",
			[]string{`spec.ports[0].protocol: unknown value "unspecified"; one of http, http2, grpc, tcp`}},
		{"number too large", validRoute + "  retries: {attempts: 4294967296}\n",
			[]string{`spec.retries.attempts: must be an integer between 0 and 4294967295`}},
		{"negative number", validRoute + "  retries: {attempts: -1}\n",
			[]string{`spec.retries.attempts: must be an integer between 0 and 4294967295`}},
		{"string for a list", validRoute + "  matches: {}\n",
			[]string{`spec.matches: must be a list`}},
		{"number for a string", strings.Replace(validRoute, "service: web\n", "service: 12\n", 1),
			[]string{`spec.service: must be a string`}},
		{"string for a bool", validRoute + "  retries: {retryNonIdempotent: \"sure\"}\n",
			[]string{`spec.retries.retryNonIdempotent: must be true or false`}},
		{"string for a double", "apiVersion: minimesh.io/v1alpha1\nkind: RateLimit\nmetadata: {name: l}\nspec: {service: web, requestsPerSecond: lots}\n",
			[]string{`RateLimit "default/l": spec: `}},
		{"two members of a oneof", validRoute + "  matches: [{path: {exact: /a, prefix: /b}}]\n",
			[]string{`Route "prod/r1": spec.matches[0].path: exact and prefix are both set; set only one of exact, prefix, regex`}},
		{"invalid after decoding", validRoute + "  timeout: -1s\n",
			[]string{`test.yaml: document 1 (line 1): Route "prod/r1": spec.timeout: must be positive, got -1s`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			docs, err := api.Decode("test.yaml", strings.NewReader(tc.in))
			if err == nil {
				t.Fatalf("Decode succeeded, want an error\ninput:\n%s", tc.in)
			}
			if docs != nil {
				t.Errorf("Decode returned %d documents with its error", len(docs))
			}
			if !errors.Is(err, api.ErrInvalid) && !errors.Is(err, api.ErrSyntax) {
				t.Errorf("error %v is neither ErrInvalid nor ErrSyntax", err)
			}
			var de *api.DocumentError
			if !errors.As(err, &de) || de.Index != 1 || de.Source != "test.yaml" {
				t.Errorf("error %v: want a *DocumentError for document 1 of test.yaml", err)
			}
			msg := err.Error()
			for _, want := range tc.want {
				if !strings.Contains(msg, want) {
					t.Errorf("error\n%s\ndoes not contain %q", msg, want)
				}
			}
			for line := range strings.SplitSeq(msg, "\n") {
				if !strings.HasPrefix(line, "api: test.yaml: document 1 (line ") {
					t.Errorf("error line %q does not name the source, document and line", line)
				}
			}
		})
	}
}

// TestDecodeErrorPositions: with several documents, each bad one is named
// by its index among the non-empty documents and by its line.
func TestDecodeErrorPositions(t *testing.T) {
	in := "# header\n---\n" + validRoute + "---\n# empty\n---\n" +
		strings.Replace(validRoute, "name: r1", "name: r2", 1) + "  timeout: 2h\n" +
		"---\n\n" + strings.Replace(validRoute, "name: r1", "name: r3", 1) + "  bogus: 1\n"
	_, err := api.Decode("apply.yaml", strings.NewReader(in))
	if err == nil {
		t.Fatal("Decode succeeded")
	}
	want := []string{
		`api: apply.yaml: document 2 (line 14): Route "prod/r2": spec.timeout: must be at most 1h0m0s, got 2h0m0s`,
		`api: apply.yaml: document 3 (line 25): Route "prod/r3": spec.bogus: unknown field; spec has only service, matches, backends, timeout, retries`,
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("error:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	fes := api.FieldErrors(err)
	if len(fes) != 2 || fes[0].Field != "spec.timeout" || fes[1].Field != "spec.bogus" || fes[0].Name != "r2" {
		t.Errorf("FieldErrors = %+v", fes)
	}
}

func TestDecodeLimits(t *testing.T) {
	t.Run("bytes", func(t *testing.T) {
		big := validRoute + "# " + strings.Repeat("x", api.MaxInputBytes) + "\n"
		_, err := api.Decode("big.yaml", strings.NewReader(big))
		if !errors.Is(err, api.ErrTooLarge) {
			t.Fatalf("err = %v, want ErrTooLarge", err)
		}
	})
	t.Run("documents", func(t *testing.T) {
		many := strings.Repeat("---\n"+validRoute, api.MaxDocuments+1)
		_, err := api.Decode("many.yaml", strings.NewReader(many))
		if !errors.Is(err, api.ErrTooLarge) {
			t.Fatalf("err = %v, want ErrTooLarge", err)
		}
	})
	t.Run("errors", func(t *testing.T) {
		many := strings.Repeat("---\n[1]\n", 200)
		_, err := api.Decode("bad.yaml", strings.NewReader(many))
		lines := strings.Split(err.Error(), "\n")
		if len(lines) != 51 || lines[50] != "api: invalid: bad.yaml: too many invalid documents; stopped after document 50" {
			t.Fatalf("got %d lines, the last %q", len(lines), lines[len(lines)-1])
		}
	})
	t.Run("config file content", func(t *testing.T) {
		in := "apiVersion: minimesh.io/v1alpha1\nkind: ConfigFile\nmetadata: {name: f}\nspec:\n  service: web\n  path: a\n  content: " +
			strings.Repeat("x", api.MaxConfigFileBytes+1) + "\n"
		_, err := api.Decode("f.yaml", strings.NewReader(in))
		if fes := api.FieldErrors(err); len(fes) != 1 || fes[0].Field != "spec.content" {
			t.Fatalf("err = %v, want one error on spec.content", err)
		}
	})
}

// TestEncodeDurations: YAML shows Go durations, JSON protojson's.
func TestEncodeDurations(t *testing.T) {
	o := decodeString(t, validRoute+"  timeout: 45m\n")[0].Object
	y, err := api.MarshalYAML(o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(y), "timeout: 45m0s\n") {
		t.Errorf("YAML:\n%s", y)
	}
	j, err := api.MarshalJSON(o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(j), `"timeout":"2700s"`) {
		t.Errorf("JSON: %s", j)
	}
}
