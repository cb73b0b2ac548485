package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"minimesh/api"
)

const root = "../.."

func generated(t *testing.T) map[string][]byte {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(root, ProtoFile))
	if err != nil {
		t.Fatal(err)
	}
	files, err := Generate(src)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// The committed deploy/k8s/crds is what crdgen writes; a changed file,
// and a CRD of a kind that is gone, make -check fail.
func TestCheckFailsWhenStale(t *testing.T) {
	if err := run(root, true); err != nil {
		t.Fatalf("committed CRDs: %v", err)
	}
	tmp := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tmp, filepath.Dir(ProtoFile)), 0o755); err != nil {
		t.Fatal(err)
	}
	src, _ := os.ReadFile(filepath.Join(root, ProtoFile))
	if err := os.WriteFile(filepath.Join(tmp, ProtoFile), src, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(tmp, true); err == nil {
		t.Fatal("check passed with no CRDs written")
	}
	if err := run(tmp, false); err != nil {
		t.Fatal(err)
	}
	if err := run(tmp, true); err != nil {
		t.Fatalf("check after write: %v", err)
	}
	// A comment changed in the proto: the descriptions are stale.
	changed := strings.Replace(string(src), "// 1 to 65535.", "// 1 to 65535, the app's port.", 1)
	if changed == string(src) {
		t.Fatal("the comment to change is gone from resources.proto")
	}
	_ = os.WriteFile(filepath.Join(tmp, ProtoFile), []byte(changed), 0o644)
	if err := run(tmp, true); err == nil || !strings.Contains(err.Error(), "services.minimesh.io.yaml") {
		t.Fatalf("check after a comment changed: %v", err)
	}
	_ = os.WriteFile(filepath.Join(tmp, ProtoFile), src, 0o644)
	_ = os.WriteFile(filepath.Join(tmp, OutDir, "gones.minimesh.io.yaml"), []byte("x"), 0o644)
	if err := run(tmp, true); err == nil || !strings.Contains(err.Error(), "no such kind") {
		t.Fatalf("check with a CRD of no kind: %v", err)
	}
}

type crd struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Names    map[string]any `json:"names"`
		Scope    string         `json:"scope"`
		Versions []struct {
			Name         string         `json:"name"`
			Subresources map[string]any `json:"subresources"`
			Schema       struct {
				OpenAPIV3Schema *Schema `json:"openAPIV3Schema"`
			} `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

func crds(t *testing.T) map[api.Kind]crd {
	t.Helper()
	files := generated(t)
	out := map[api.Kind]crd{}
	for _, k := range api.Kinds() {
		var c crd
		if err := yaml.Unmarshal(files[FileName(k)], &c); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		out[k] = c
	}
	var kz struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(files["kustomization.yaml"], &kz); err != nil {
		t.Fatal(err)
	}
	if len(kz.Resources) != len(api.Kinds())+1 || !slices.Contains(kz.Resources, ValidatingWebhookFile) {
		t.Fatalf("kustomization lists %v", kz.Resources)
	}
	return out
}

// One namespaced CRD per kind, Service as services.minimesh.io, no short
// names (kubectl's own, svc, po, ..., would be shadowed), status on.
func TestOneCRDPerKind(t *testing.T) {
	all := crds(t)
	if all[api.KindService].Metadata.Name != "services.minimesh.io" {
		t.Fatalf("Service's CRD is %q", all[api.KindService].Metadata.Name)
	}
	for k, c := range all {
		if _, ok := c.Spec.Names["shortNames"]; ok {
			t.Errorf("%s declares shortNames %v", k, c.Spec.Names["shortNames"])
		}
		if c.Spec.Scope != "Namespaced" || len(c.Spec.Versions) != 1 || c.Spec.Versions[0].Name != "v1alpha1" {
			t.Errorf("%s: scope %s versions %+v", k, c.Spec.Scope, c.Spec.Versions)
		}
		if _, ok := c.Spec.Versions[0].Subresources["status"]; !ok {
			t.Errorf("%s: no status subresource", k)
		}
		if c.Spec.Names["kind"] != string(k) || c.Metadata.Name != Plural(k)+".minimesh.io" {
			t.Errorf("%s: names %v", k, c.Spec.Names)
		}
	}
}

// Every spec the decoder reads from examples/ fits the schema: each key a
// property of the right type, each enum value listed; and a field missing
// from a schema would be caught.
func TestSchemasAcceptTheExamples(t *testing.T) {
	all := crds(t)
	n := 0
	for _, f := range []string{"examples/every-field.yaml", "examples/mesh.yaml"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		docs, err := api.Decode(f, strings.NewReader(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range docs {
			j, err := api.MarshalJSON(d.Object)
			if err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			_ = json.Unmarshal(j, &doc)
			s := all[d.Object.Kind()].Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
			for _, p := range fits(s, doc["spec"], "spec") {
				t.Errorf("%s: %s", api.KeyOf(d.Object), p)
			}
			n++
		}
	}
	if n < 6 {
		t.Fatalf("only %d examples", n)
	}
	// The check itself: a key no schema has is reported.
	s := all[api.KindRoute].Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	if p := fits(s, map[string]any{"service": "a", "timeOut": "1s"}, "spec"); len(p) != 1 {
		t.Fatalf("an unknown key: %v", p)
	}
}

// fits lists where v does not fit s.
func fits(s *Schema, v any, path string) []string {
	var out []string
	switch t := v.(type) {
	case map[string]any:
		if s.Type != "object" {
			return []string{path + ": an object where the schema has " + s.Type}
		}
		for k, e := range t {
			p := s.Properties[k]
			if p == nil {
				p = s.AdditionalProperties
			}
			if p == nil {
				out = append(out, path+"."+k+": not in the schema")
				continue
			}
			out = append(out, fits(p, e, path+"."+k)...)
		}
	case []any:
		if s.Type != "array" {
			return []string{path + ": a list where the schema has " + s.Type}
		}
		for _, e := range t {
			out = append(out, fits(s.Items, e, path+"[]")...)
		}
	case string:
		if s.Type != "string" && !s.IntOrString {
			return []string{path + ": a string where the schema has " + s.Type}
		}
		if len(s.Enum) > 0 && !slices.Contains(s.Enum, t) {
			return []string{path + ": " + t + " not among " + strings.Join(s.Enum, ",")}
		}
	case float64:
		if s.Type != "number" && s.Type != "integer" && !s.IntOrString {
			return []string{path + ": a number where the schema has " + s.Type}
		}
	case bool:
		if s.Type != "boolean" {
			return []string{path + ": a bool where the schema has " + s.Type}
		}
	}
	return out
}

// Every enum value a CRD lists is one the decoder takes.
func TestEnumValuesDecode(t *testing.T) {
	all := crds(t)
	svc := all[api.KindService].Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	protos := svc.Properties["ports"].Items.Properties["protocol"].Enum
	if !slices.Contains(protos, "http") || !slices.Contains(protos, "PROTOCOL_GRPC") || slices.Contains(protos, "PROTOCOL_UNSPECIFIED") {
		t.Fatalf("protocol enum %v", protos)
	}
	for _, p := range protos {
		doc := "apiVersion: minimesh.io/v1alpha1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports: [{port: 80, protocol: " + p + "}]\n  servingIdentities: [spiffe://x/ns/default/sa/a]\n"
		if _, err := api.Decode("t", strings.NewReader(doc)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	route := all[api.KindRoute].Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	if r := route.Properties["retries"].Properties["retryOn"].Items.Enum; !slices.Contains(r, "gateway-error") || !slices.Contains(r, "5xx") {
		t.Fatalf("retryOn enum %v", r)
	}
	if d := route.Properties["timeout"]; d.Type != "string" {
		t.Fatalf("timeout %+v", d)
	}
}
