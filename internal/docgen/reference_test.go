package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

const root = "../.."

func inputs(t *testing.T) Inputs {
	t.Helper()
	in, err := readInputs(root)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func generate(t *testing.T, in Inputs) (string, error) {
	t.Helper()
	var b bytes.Buffer
	err := Generate(&b, in)
	return b.String(), err
}

// section returns the text from the heading "## title" or "### title" to
// the next heading of the same or a higher level.
func section(t *testing.T, doc, heading string) string {
	t.Helper()
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("no heading %q", heading)
	}
	rest := doc[i+1+len(heading):]
	level := strings.Count(strings.Fields(heading)[0], "#")
	for _, l := range []int{2, 3} {
		if l > level {
			break
		}
		if j := strings.Index(rest, "\n"+strings.Repeat("#", l)+" "); j >= 0 {
			rest = rest[:j]
		}
	}
	return rest
}

// Every kind has a section with its example, and every field of every
// message a kind uses has a row with a type, a default and an example, in
// the section of that message.
func TestReferenceListsEveryKindAndField(t *testing.T) {
	doc, err := generate(t, inputs(t))
	if err != nil {
		t.Fatal(err)
	}
	res := meshv1.File_mesh_v1_resources_proto.Messages().ByName("Resource")
	oneof := res.Oneofs().ByName("spec")
	if oneof.Fields().Len() != len(api.Kinds()) {
		t.Fatalf("%d specs in Resource, %d kinds in api", oneof.Fields().Len(), len(api.Kinds()))
	}
	done := map[protoreflect.FullName]bool{}
	var check func(heading string, m protoreflect.MessageDescriptor)
	check = func(heading string, m protoreflect.MessageDescriptor) {
		done[m.FullName()] = true
		sec := section(t, doc, heading)
		for i := range m.Fields().Len() {
			f := m.Fields().Get(i)
			row := ""
			for _, line := range strings.Split(sec, "\n") {
				if strings.HasPrefix(line, "| `"+f.JSONName()+"` |") {
					row = line
				}
			}
			if row == "" {
				t.Errorf("%s: no row for %s under %q", m.Name(), f.JSONName(), heading)
				continue
			}
			cells := strings.Split(row, " | ")
			if len(cells) != 5 {
				t.Errorf("%s.%s: row has %d cells: %s", m.Name(), f.JSONName(), len(cells), row)
				continue
			}
			for i, name := range []string{"type", "default", "", "example"} {
				if name != "" && strings.TrimSpace(strings.Trim(cells[i+1], "|")) == "" {
					t.Errorf("%s.%s: empty %s: %s", m.Name(), f.JSONName(), name, row)
				}
			}
			if f.Message() != nil && f.Message().FullName() != "google.protobuf.Duration" && !done[f.Message().FullName()] {
				check("### "+string(f.Message().Name()), f.Message())
			}
		}
	}
	for i := range oneof.Fields().Len() {
		f := oneof.Fields().Get(i)
		kind := kindOf(f)
		if _, err := api.ParseKind(kind); err != nil {
			t.Errorf("spec %s: %v", f.Name(), err)
		}
		check("## "+kind, f.Message())
		sec := section(t, doc, "## "+kind)
		if !strings.Contains(sec, "From [examples/mesh.yaml]") && !strings.Contains(sec, "From [examples/roles.yaml]") || !strings.Contains(sec, "apiVersion: minimesh.io/v1alpha1\nkind: "+kind+"\n") {
			t.Errorf("%s: no example from examples/mesh.yaml or examples/roles.yaml", kind)
		}
	}
	for _, e := range []string{"Protocol", "RetryOn", "AuthorizationAction"} {
		sec := section(t, doc, "### "+e)
		ed := meshv1.File_mesh_v1_resources_proto.Enums().ByName(protoreflect.Name(e))
		for i := 1; i < ed.Values().Len(); i++ {
			if !strings.Contains(sec, "`"+string(ed.Values().Get(i).Name())+"`") {
				t.Errorf("enum %s: no %s", e, ed.Values().Get(i).Name())
			}
		}
	}
	// Spot checks: defaults from api.Validate and from the comments.
	for heading, want := range map[string]string{
		"## Route":          "| `backends` | list of [RouteBackend](#routebackend) | required |",
		"### RouteBackend":  "| `weight` | integer | 1 when unset |",
		"### RetryPolicy":   "| `maxBodyBytes` | integer | 0: 64 KiB |",
		"### ServiceSubset": "| `name` | string | required |", // Validate requires it; the comment does not say
		"## ConfigFile":     "| `mode` | integer | 0: 0644 |",
	} {
		if !strings.Contains(section(t, doc, heading), want) {
			t.Errorf("%s: no row %q", heading, want)
		}
	}
}

// The examples validate, references included, and examples/mesh.yaml has
// one of every kind.
func TestExamplesValidate(t *testing.T) {
	in := inputs(t)
	objs, err := decodeAll("examples", joinYAML(in.Example, in.Roles))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[api.Kind]bool{}
	for _, o := range objs {
		kinds[o.Kind()] = true
	}
	for _, k := range api.Kinds() {
		if !kinds[k] {
			t.Errorf("neither examples/mesh.yaml nor examples/roles.yaml has a %s", k)
		}
	}
	if _, err := decodeAll("examples/every-field.yaml", in.EveryField); err != nil {
		t.Fatal(err)
	}
}

// A .proto that no longer matches the generated code is refused, naming
// make generate.
func TestStaleGeneratedCodeIsRefused(t *testing.T) {
	in := inputs(t)
	in.Proto = bytes.Replace(in.Proto, []byte("  uint32 max_body_bytes = 6;\n"),
		[]byte("  uint32 max_body_bytes = 6;\n  // New.\n  bool hedge = 7;\n"), 1)
	_, err := generate(t, in)
	if err == nil || !strings.Contains(err.Error(), "run make generate") || !strings.Contains(err.Error(), "RetryPolicy") {
		t.Fatalf("got %v", err)
	}
}

// A comment must not contradict api.Validate about whether a field is
// required, and every field needs an example value.
func TestCommentsAndExamplesAreChecked(t *testing.T) {
	in := inputs(t)
	in.Proto = bytes.Replace(in.Proto, []byte("  // Unset: no retries.\n"), []byte("  // Required.\n"), 1)
	_, err := generate(t, in)
	if err == nil || !strings.Contains(err.Error(), "mesh.v1.RouteSpec.retries: its comment says Required, but api.Validate accepts it unset") {
		t.Fatalf("comment saying Required: got %v", err)
	}

	in = inputs(t)
	in.Proto = bytes.Replace(in.Proto, []byte("  // Greater than 0, at most 100.\n  double percent"), []byte("  // Unset: 20.\n  double percent"), 1)
	_, err = generate(t, in)
	if err == nil || !strings.Contains(err.Error(), "mesh.v1.RetryBudget.percent: its comment states a default (Unset: 20), but api.Validate refuses it unset") {
		t.Fatalf("comment stating a default: got %v", err)
	}

	in = inputs(t)
	in.EveryField = bytes.Replace(in.EveryField, []byte("    retryNonIdempotent: true\n"), nil, 1)
	_, err = generate(t, in)
	if err == nil || !strings.Contains(err.Error(), "sets no value for mesh.v1.RetryPolicy.retry_non_idempotent") {
		t.Fatalf("field without example: got %v", err)
	}

	in = inputs(t)
	in.Example = append(in.Example, []byte("---\napiVersion: minimesh.io/v1alpha1\nkind: Route\nmetadata: {name: x}\nspec: {service: nope, backends: [{service: nope}]}\n")...)
	_, err = generate(t, in)
	if err == nil || !strings.Contains(err.Error(), `spec.service: Service "default/nope" not found`) {
		t.Fatalf("invalid example: got %v", err)
	}
}

// make docs-check: -check fails on a stale file and passes on a fresh one.
func TestCheckFindsAStaleReference(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"proto/mesh/v1/resources.proto", "examples/mesh.yaml", "examples/roles.yaml", "examples/every-field.yaml", "api/identity.go"} {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "docs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := run(dir, "docs/reference.md", true); err == nil || !strings.Contains(err.Error(), "run make docs") {
		t.Fatalf("missing file: got %v", err)
	}
	if err := run(dir, "docs/reference.md", false); err != nil {
		t.Fatal(err)
	}
	if err := run(dir, "docs/reference.md", true); err != nil {
		t.Fatalf("fresh file: %v", err)
	}
	ex := filepath.Join(dir, "examples/mesh.yaml")
	b, _ := os.ReadFile(ex)
	if err := os.WriteFile(ex, bytes.Replace(b, []byte("timeout: 2s"), []byte("timeout: 3s"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(dir, "docs/reference.md", true); err == nil || !strings.Contains(err.Error(), "docs/reference.md is stale: run make docs") {
		t.Fatalf("stale file: got %v", err)
	}
}
