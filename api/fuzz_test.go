package api_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"minimesh/api"
)

// FuzzDecode: Decode never panics, its errors carry the package prefix, and
// whatever it accepts is written back by Encode and MarshalJSON into input
// that decodes to the same objects.
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(validRoute + "  timeout: -1s\n"))
	f.Add([]byte(validRoute + "---\n" + validRoute))
	f.Add([]byte("--- {a: 1}\n...\n--- [1]\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		docs, err := api.Decode("fuzz.yaml", bytes.NewReader(in))
		if err != nil {
			if docs != nil {
				t.Fatal("documents returned with an error")
			}
			for line := range strings.SplitSeq(err.Error(), "\n") {
				if !strings.HasPrefix(line, "api: ") {
					t.Fatalf("error line without prefix: %q", line)
				}
			}
			return
		}
		objs := make([]api.Object, len(docs))
		for i, d := range docs {
			if d.Index != i+1 {
				t.Fatalf("document %d has index %d", i+1, d.Index)
			}
			if err := d.Object.Validate(); err != nil {
				t.Fatalf("Decode returned an invalid object: %v", err)
			}
			objs[i] = d.Object
		}
		var buf bytes.Buffer
		if err := api.Encode(&buf, objs...); err != nil {
			t.Fatalf("Encode: %v", err)
		}
		again, err := api.Decode("again.yaml", &buf)
		if err != nil {
			t.Fatalf("Decode(Encode(x)): %v\n%s", err, buf.String())
		}
		if len(again) != len(objs) {
			t.Fatalf("Encode wrote %d documents for %d objects", len(again), len(objs))
		}
		for i := range objs {
			sameObject(t, again[i].Object, objs[i])
			j, err := api.MarshalJSON(objs[i])
			if err != nil {
				t.Fatalf("MarshalJSON: %v", err)
			}
			fromJSON, err := api.Decode("again.json", bytes.NewReader(j))
			if err != nil || len(fromJSON) != 1 {
				t.Fatalf("Decode(MarshalJSON(x)): %v\n%s", err, j)
			}
			sameObject(t, fromJSON[0].Object, objs[i])
		}
	})
}

// fuzzValidate: Validate never panics and is deterministic on any spec the
// wire can carry, and everything it accepts survives YAML and the wire.
func fuzzValidate(f *testing.F, kind api.Kind) {
	b, err := proto.Marshal(base(f, kind).SpecMessage())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b, "name", "prod")
	f.Add([]byte{}, "", "")
	f.Fuzz(func(t *testing.T, spec []byte, name, namespace string) {
		o, err := api.New(kind)
		if err != nil {
			t.Fatal(err)
		}
		if err := proto.Unmarshal(spec, o.SpecMessage()); err != nil {
			return
		}
		o.Meta().Name, o.Meta().Namespace = name, namespace
		err1 := o.Validate()
		err2 := o.Validate()
		if (err1 == nil) != (err2 == nil) || err1 != nil && err1.Error() != err2.Error() {
			t.Fatalf("Validate is not deterministic: %v / %v", err1, err2)
		}
		for _, fe := range api.FieldErrors(err1) {
			if fe.Kind != kind || fe.Reason == "" {
				t.Fatalf("malformed FieldError %+v", fe)
			}
		}
		if err1 != nil {
			return
		}
		sameObject(t, wire(t, o), o)
		y, err := api.MarshalYAML(o)
		if err != nil {
			t.Fatalf("MarshalYAML: %v", err)
		}
		docs, err := api.Decode("valid.yaml", bytes.NewReader(y))
		if err != nil || len(docs) != 1 {
			t.Fatalf("a valid object does not decode from its YAML: %v\n%s", err, y)
		}
		sameObject(t, docs[0].Object, o)
	})
}

func FuzzValidateService(f *testing.F)             { fuzzValidate(f, api.KindService) }
func FuzzValidateRoute(f *testing.F)               { fuzzValidate(f, api.KindRoute) }
func FuzzValidateRateLimit(f *testing.F)           { fuzzValidate(f, api.KindRateLimit) }
func FuzzValidateAccessLog(f *testing.F)           { fuzzValidate(f, api.KindAccessLog) }
func FuzzValidateAuthorizationPolicy(f *testing.F) { fuzzValidate(f, api.KindAuthorizationPolicy) }
func FuzzValidateConfigFile(f *testing.F)          { fuzzValidate(f, api.KindConfigFile) }
