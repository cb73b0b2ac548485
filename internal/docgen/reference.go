package main

import (
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/doc/comment"
	"go/parser"
	"go/token"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"minimesh/api"
	"minimesh/internal/protodoc"
	meshv1 "minimesh/proto/mesh/v1"
)

// The reference is built from two descriptors of resources.proto: the one
// compiled into the binaries (meshv1.File_mesh_v1_resources_proto), which
// decides what is listed, and one parsed from the .proto source here, for
// its comments: protoc-gen-go drops SourceCodeInfo from the descriptor it
// embeds, so the generated code has no comments to read. The two must
// agree field for field, else the generated code is stale.

// ProtoPath is resources.proto's path in its buf module (proto/), the name
// the generated descriptor carries.
const ProtoPath = "mesh/v1/resources.proto"

// Inputs is what the reference is made from.
type Inputs struct {
	// Proto is the text of proto/mesh/v1/resources.proto.
	Proto []byte
	// Example is examples/mesh.yaml: each kind's example.
	Example []byte
	// Roles is examples/roles.yaml: the examples of the kinds of the
	// sidecar's other roles (ExternalService, LogAdapter, LogShipping),
	// which refer to the services of examples/mesh.yaml.
	Roles []byte
	// EveryField is examples/every-field.yaml: a value for every field.
	EveryField []byte
	// IdentityDoc is api.IdentityPattern's doc comment, in Markdown.
	IdentityDoc string
}

// TypeDoc returns the doc comment of the type name declared in the Go
// source src, in Markdown.
func TypeDoc(src []byte, name string) (string, error) {
	f, err := parser.ParseFile(token.NewFileSet(), "", src, parser.ParseComments)
	if err != nil {
		return "", err
	}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.TYPE {
			continue
		}
		for _, sp := range gd.Specs {
			ts := sp.(*ast.TypeSpec)
			if ts.Name.Name != name {
				continue
			}
			doc := ts.Doc
			if doc == nil {
				doc = gd.Doc
			}
			if doc == nil {
				return "", fmt.Errorf("type %s has no doc comment", name)
			}
			var p comment.Parser
			pr := comment.Printer{}
			return strings.TrimSpace(string(pr.Markdown(p.Parse(doc.Text())))), nil
		}
	}
	return "", fmt.Errorf("no type %s", name)
}

// comments maps a full name (message, field, enum, enum value) to its
// leading comment in the .proto source; "" for the file's own comment.
type comments = protodoc.Comments

// parseComments compiles the .proto text and returns its comments, after
// checking that it declares exactly what the generated descriptor does.
func parseComments(src []byte) (comments, error) {
	cm, parsed, err := protodoc.Parse(ProtoPath, src)
	if err != nil {
		return nil, err
	}
	if err := sameDeclarations(meshv1.File_mesh_v1_resources_proto, parsed); err != nil {
		return nil, fmt.Errorf("%s and the generated code differ (run make generate): %w", ProtoPath, err)
	}
	return cm, nil
}

// sameDeclarations reports the first difference between the generated and
// the parsed descriptor: a message, field or enum value missing on one side
// or declared differently.
func sameDeclarations(gen, parsed protoreflect.FileDescriptor) error {
	var msgs func(a, b protoreflect.MessageDescriptors) error
	msgs = func(a, b protoreflect.MessageDescriptors) error {
		if a.Len() != b.Len() {
			return fmt.Errorf("%d messages generated, %d in the source", a.Len(), b.Len())
		}
		for i := range a.Len() {
			ma, mb := a.Get(i), b.Get(i)
			if ma.FullName() != mb.FullName() {
				return fmt.Errorf("message %s generated, %s in the source", ma.FullName(), mb.FullName())
			}
			fa, fb := ma.Fields(), mb.Fields()
			if fa.Len() != fb.Len() {
				return fmt.Errorf("%s: %d fields generated, %d in the source", ma.FullName(), fa.Len(), fb.Len())
			}
			for j := range fa.Len() {
				x, y := fa.Get(j), fb.Get(j)
				if x.Name() != y.Name() || x.Number() != y.Number() || x.Kind() != y.Kind() ||
					x.Cardinality() != y.Cardinality() || x.HasPresence() != y.HasPresence() {
					return fmt.Errorf("field %s is declared differently in the source", x.FullName())
				}
			}
			if err := msgs(ma.Messages(), mb.Messages()); err != nil {
				return err
			}
		}
		return nil
	}
	if err := msgs(gen.Messages(), parsed.Messages()); err != nil {
		return err
	}
	ea, eb := gen.Enums(), parsed.Enums()
	if ea.Len() != eb.Len() {
		return fmt.Errorf("%d enums generated, %d in the source", ea.Len(), eb.Len())
	}
	for i := range ea.Len() {
		a, b := ea.Get(i), eb.Get(i)
		if a.FullName() != b.FullName() || a.Values().Len() != b.Values().Len() {
			return fmt.Errorf("enum %s is declared differently in the source", a.FullName())
		}
		for j := range a.Values().Len() {
			if a.Values().Get(j).Name() != b.Values().Get(j).Name() || a.Values().Get(j).Number() != b.Values().Get(j).Number() {
				return fmt.Errorf("enum value %s is declared differently in the source", a.Values().Get(j).FullName())
			}
		}
	}
	return nil
}

// Generate writes the reference in Markdown.
func Generate(w io.Writer, in Inputs) error {
	cm, err := parseComments(in.Proto)
	if err != nil {
		return err
	}
	if _, err := decodeAll("examples/mesh.yaml and examples/roles.yaml", joinYAML(in.Example, in.Roles)); err != nil {
		return err
	}
	kindExamples := exampleBlocks(in.Example, "mesh.yaml")
	for k, ex := range exampleBlocks(in.Roles, "roles.yaml") {
		if _, ok := kindExamples[k]; !ok {
			kindExamples[k] = ex
		}
	}
	objs, err := decodeAll("examples/every-field.yaml", in.EveryField)
	if err != nil {
		return fmt.Errorf("examples/every-field.yaml: %w", err)
	}
	g := &gen{cm: cm, values: fieldExamples(objs), required: requiredFields(objs), seen: map[protoreflect.FullName]bool{}}

	fd := meshv1.File_mesh_v1_resources_proto
	res := fd.Messages().ByName("Resource")
	b := &g.b
	b.WriteString("<!-- Generated by `make docs` (internal/docgen) from proto/mesh/v1/resources.proto,\n")
	b.WriteString("     examples/mesh.yaml, examples/roles.yaml and examples/every-field.yaml. Do not edit: change those and run make docs. -->\n\n")
	b.WriteString("# Resource reference\n\n")
	b.WriteString(markdownText(cm[""]) + "\n\n")
	b.WriteString("Apply resources with `meshctl apply -f FILE` (`--dry-run` validates only); ")
	b.WriteString("`meshctl get KIND [NAME] -o yaml` prints them back. Every example below is validated by ")
	b.WriteString("`go test ./internal/docgen`. Columns: the field as written in YAML (protojson names), its type, ")
	b.WriteString("its default (what an omitted field means), its meaning and limits as `api.Validate` enforces ")
	b.WriteString("them, and an example value from examples/every-field.yaml.\n\n")

	b.WriteString("Kinds:")
	oneof := res.Oneofs().ByName("spec")
	for i := range oneof.Fields().Len() {
		f := oneof.Fields().Get(i)
		sep := ","
		if i == 0 {
			sep = ""
		}
		fmt.Fprintf(b, "%s [%s](#%s)", sep, kindOf(f), strings.ToLower(kindOf(f)))
	}
	b.WriteString(". Enums:")
	for i := range fd.Enums().Len() {
		sep := ","
		if i == 0 {
			sep = ""
		}
		n := fd.Enums().Get(i).Name()
		fmt.Fprintf(b, "%s [%s](#%s)", sep, n, strings.ToLower(string(n)))
	}
	b.WriteString(".\n\n")

	g.envelope(res)

	for i := range oneof.Fields().Len() {
		f := oneof.Fields().Get(i)
		kind := kindOf(f)
		fmt.Fprintf(b, "## %s\n\n", kind)
		fmt.Fprintf(b, "`kind: %s`, `spec`: %s.\n\n", kind, f.Message().Name())
		ex, ok := kindExamples[kind]
		if !ok {
			return fmt.Errorf("neither examples/mesh.yaml nor examples/roles.yaml has a %s", kind)
		}
		g.message(f.Message(), 2)
		fmt.Fprintf(b, "### Example\n\nFrom [examples/%s](../examples/%s):\n\n```yaml\n%s```\n\n", ex.file, ex.file, ex.text)
	}

	if in.IdentityDoc != "" {
		b.WriteString("## Identity patterns\n\nFields that take SPIFFE ID patterns (a Service's `servingIdentities`, a subset's `identities`, a rule's `from`, an override's `identity`). From the documentation of `api.IdentityPattern`:\n\n")
		b.WriteString(in.IdentityDoc + "\n\n")
	}

	b.WriteString("## Enums\n\nWrite a value by its short name (as shown) or its full name.\n\n")
	for i := range fd.Enums().Len() {
		e := fd.Enums().Get(i)
		fmt.Fprintf(b, "### %s\n\n%s\n\n| value | full name | meaning |\n| --- | --- | --- |\n", e.Name(), markdownText(cm[string(e.FullName())]))
		for j := range e.Values().Len() {
			v := e.Values().Get(j)
			if v.Number() == 0 {
				continue // UNSPECIFIED: never valid in a resource
			}
			fmt.Fprintf(b, "| `%s` | `%s` | %s |\n", shortEnum(e, v.Number()), v.Name(), cell(cm[string(v.FullName())]))
		}
		b.WriteString("\n")
	}
	if len(g.unset) > 0 {
		return fmt.Errorf("examples/every-field.yaml sets no value for %s", strings.Join(g.unset, ", "))
	}
	if len(g.errs) > 0 {
		return errors.Join(g.errs...)
	}
	_, err = w.Write(bytes.TrimRight(b.Bytes(), "\n"))
	if err == nil {
		_, err = io.WriteString(w, "\n")
	}
	return err
}

type gen struct {
	b        bytes.Buffer
	cm       comments
	values   map[protoreflect.FullName]string
	required map[protoreflect.FullName]bool
	seen     map[protoreflect.FullName]bool
	// unset lists the fields with no example value.
	unset []string
	// errs are comments that disagree with api.Validate.
	errs []error
}

// envelope documents apiVersion, kind and metadata from the Resource
// message.
func (g *gen) envelope(res protoreflect.MessageDescriptor) {
	b := &g.b
	fmt.Fprintf(b, "## Every resource\n\n%s\n\n", markdownText(g.cm[string(res.FullName())]))
	b.WriteString("In YAML every resource is one document:\n\n```yaml\napiVersion: minimesh.io/v1alpha1\nkind: Route\nmetadata:\n  name: api\n  namespace: default\nspec: {...}\n```\n\n")
	b.WriteString("| field | type | default | meaning and limits |\n| --- | --- | --- | --- |\n")
	yamlName := map[string]string{
		"api_version": "apiVersion", "kind": "kind", "name": "metadata.name",
		"namespace": "metadata.namespace", "revision": "metadata.revision", "update_time": "metadata.updateTime",
	}
	for i := range res.Fields().Len() {
		f := res.Fields().Get(i)
		if f.ContainingOneof() != nil {
			continue
		}
		name, ok := yamlName[string(f.Name())]
		if !ok {
			name = f.JSONName()
		}
		def, rules, _ := splitDefault(g.cm[string(f.FullName())], f, false)
		switch f.Name() {
		case "api_version", "kind", "name":
			def = "required"
		case "revision", "update_time":
			def = "set by meshd"
		}
		fmt.Fprintf(b, "| `%s` | %s | %s | %s |\n", name, typeOf(f), def, cell(rules))
	}
	b.WriteString("| `spec` | the kind's spec | required | One of the specs below, as `kind` says. |\n\n")
	b.WriteString("`metadata.revision` and `metadata.updateTime` are set by meshd; `get` prints them.\n\n")
}

// message documents m and then, once each, the messages its fields use.
func (g *gen) message(m protoreflect.MessageDescriptor, level int) {
	b := &g.b
	g.seen[m.FullName()] = true
	if level > 2 {
		fmt.Fprintf(b, "%s %s\n\n", strings.Repeat("#", level), m.Name())
	}
	if c := g.cm[string(m.FullName())]; c != "" {
		b.WriteString(markdownText(c) + "\n\n")
	}
	b.WriteString("| field | type | default | meaning and limits | example |\n| --- | --- | --- | --- | --- |\n")
	var nested []protoreflect.MessageDescriptor
	for i := range m.Fields().Len() {
		f := m.Fields().Get(i)
		def, rules, err := splitDefault(g.cm[string(f.FullName())], f, g.required[f.FullName()])
		if err != nil {
			g.errs = append(g.errs, err)
		}
		if o := f.ContainingOneof(); o != nil && !o.IsSynthetic() {
			rules = strings.TrimSpace("One of " + oneofNames(o) + ". " + rules)
		}
		ex, ok := g.values[f.FullName()]
		if !ok {
			g.unset = append(g.unset, string(f.FullName()))
		}
		if f.Message() != nil && !isWellKnown(f.Message()) {
			ex = "see below"
			if !g.seen[f.Message().FullName()] && !slices.Contains(nested, f.Message()) {
				nested = append(nested, f.Message())
			}
		}
		fmt.Fprintf(b, "| `%s` | %s | %s | %s | %s |\n", f.JSONName(), typeOf(f), def, cell(rules), ex)
	}
	b.WriteString("\n")
	for _, n := range nested {
		if !g.seen[n.FullName()] {
			g.message(n, 3)
		}
	}
}

func oneofNames(o protoreflect.OneofDescriptor) string {
	var names []string
	for i := range o.Fields().Len() {
		names = append(names, "`"+o.Fields().Get(i).JSONName()+"`")
	}
	return strings.Join(names, ", ")
}

// kindOf is the kind a Resource spec field holds: rate_limit → RateLimit.
func kindOf(f protoreflect.FieldDescriptor) string {
	return strings.TrimSuffix(string(f.Message().Name()), "Spec")
}

func isWellKnown(m protoreflect.MessageDescriptor) bool {
	return m.FullName() == "google.protobuf.Duration" || m.FullName() == "google.protobuf.Timestamp"
}

// typeOf describes a field's type as written in YAML.
func typeOf(f protoreflect.FieldDescriptor) string {
	var t string
	switch f.Kind() {
	case protoreflect.StringKind:
		t = "string"
	case protoreflect.BoolKind:
		t = "boolean"
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Int32Kind, protoreflect.Int64Kind:
		t = "integer"
	case protoreflect.DoubleKind, protoreflect.FloatKind:
		t = "number"
	case protoreflect.EnumKind:
		t = fmt.Sprintf("[%s](#%s)", f.Enum().Name(), strings.ToLower(string(f.Enum().Name())))
	case protoreflect.MessageKind:
		switch f.Message().FullName() {
		case "google.protobuf.Duration":
			t = "duration (`1.5s`, `500ms`, `2m`)"
		case "google.protobuf.Timestamp":
			t = "time (RFC 3339)"
		default:
			t = fmt.Sprintf("[%s](#%s)", f.Message().Name(), strings.ToLower(string(f.Message().Name())))
		}
	default:
		t = f.Kind().String()
	}
	if f.IsList() {
		return "list of " + t
	}
	return t
}

// Clauses of a field comment that say what an omitted field means.
var defaultClause = regexp.MustCompile(`^(Unset|Empty|0|No matches):|when (unset|omitted)|[Oo]ff by default`)

// optionalClause starts a clause that says a field may be left out.
var optionalClause = regexp.MustCompile(`^Optional[,:]?\s*`)

// splitDefault separates the clauses of a comment that state the field's
// default from its other rules. required is what api.Validate says (see
// requiredFields): such a field has no default. A comment that states
// none gets the default of its type.
func splitDefault(comment string, f protoreflect.FieldDescriptor, required bool) (def, rules string, err error) {
	var defs, rest []string
	saysRequired := false
	for _, sentence := range sentences(comment) {
		var keep []string
		for _, clause := range strings.Split(sentence, "; ") {
			c := strings.TrimSuffix(strings.TrimSpace(clause), ".")
			switch {
			case c == "Required":
				saysRequired = true
			case defaultClause.MatchString(c):
				defs = append(defs, c)
			case optionalClause.MatchString(c):
				c = optionalClause.ReplaceAllString(strings.TrimSpace(clause), "")
				if c != "" {
					keep = append(keep, strings.ToUpper(c[:1])+c[1:])
				}
			default:
				keep = append(keep, strings.TrimSpace(clause))
			}
		}
		if len(keep) > 0 {
			s := strings.Join(keep, "; ")
			if !strings.HasSuffix(s, ".") && !strings.HasSuffix(s, ")") {
				s += "."
			}
			rest = append(rest, s)
		}
	}
	rules = strings.Join(rest, " ")
	inOneof := f.ContainingOneof() != nil && !f.ContainingOneof().IsSynthetic()
	switch {
	case saysRequired && !required:
		return "", "", fmt.Errorf("%s: its comment says Required, but api.Validate accepts it unset", f.FullName())
	case required && len(defs) > 0 && !inOneof:
		return "", "", fmt.Errorf("%s: its comment states a default (%s), but api.Validate refuses it unset", f.FullName(), defs[0])
	case inOneof:
		return "—", rules, nil
	case required:
		return "required", rules, nil
	case len(defs) > 0:
		return cell(strings.Join(defs, "; ")), rules, nil
	case f.IsList():
		return "empty", rules, nil
	case f.Kind() == protoreflect.BoolKind:
		return "`false`", rules, nil
	case f.Kind() == protoreflect.MessageKind:
		return "unset", rules, nil
	case f.Kind() == protoreflect.StringKind:
		return "none", rules, nil
	default:
		return "`0`", rules, nil
	}
}

// sentences splits a comment at ". " before an upper-case letter, a digit,
// a quote or a parenthesis.
func sentences(s string) []string {
	s = strings.Join(strings.Fields(s), " ")
	var out []string
	start := 0
	for i := 0; i+2 < len(s); i++ {
		if s[i] == '.' && s[i+1] == ' ' && strings.ContainsRune(`ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"'(`, rune(s[i+2])) {
			out = append(out, s[start:i+1])
			start = i + 2
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// snakeRef matches a field written in a comment by its proto name
// (serving_identities), which YAML writes in its JSON name.
var snakeRef = regexp.MustCompile(`\b[a-z]+(_[a-z0-9]+)+\b`)

// markdownText renders comment prose: proto field names become their YAML
// names, and Markdown's special characters in the prose are escaped.
func markdownText(s string) string {
	s = snakeRef.ReplaceAllStringFunc(s, func(w string) string {
		parts := strings.Split(w, "_")
		for i := 1; i < len(parts); i++ {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
		return strings.Join(parts, "")
	})
	r := strings.NewReplacer("*", `\*`, "_", `\_`, "<", "&lt;", ">", "&gt;", "|", `\|`)
	return r.Replace(s)
}

// cell renders comment prose for a table cell: one line.
func cell(s string) string {
	return strings.ReplaceAll(markdownText(s), "\n\n", "<br><br>")
}

// shortEnum is the short name api accepts for an enum value:
// RETRY_ON_GATEWAY_ERROR → gateway-error.
func shortEnum(e protoreflect.EnumDescriptor, n protoreflect.EnumNumber) string {
	prefix := strings.TrimSuffix(string(e.Values().ByNumber(0).Name()), "UNSPECIFIED")
	s := strings.TrimPrefix(string(e.Values().ByNumber(n).Name()), prefix)
	return strings.ToLower(strings.ReplaceAll(s, "_", "-"))
}

// example is one kind's example: a document of file (comments kept).
type example struct{ file, text string }

// joinYAML joins YAML streams into one.
func joinYAML(streams ...[]byte) []byte {
	var b bytes.Buffer
	for _, s := range streams {
		if b.Len() > 0 {
			b.WriteString("\n---\n")
		}
		b.Write(s)
	}
	return b.Bytes()
}

// exampleBlocks splits an examples file into its documents (comments
// kept) and returns the first of each kind. Generate has checked that it
// decodes and validates.
func exampleBlocks(src []byte, file string) map[string]example {
	out := map[string]example{}
	kindLine := regexp.MustCompile(`(?m)^kind:\s*(\w+)\s*$`)
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(src), -1) {
		m := kindLine.FindStringSubmatch(doc)
		if m == nil {
			continue
		}
		if i == 0 { // the file's own header comment stays out
			doc = doc[strings.Index(doc, "apiVersion:"):]
		}
		doc = strings.TrimLeft(doc, "\n")
		if !strings.HasSuffix(doc, "\n") {
			doc += "\n"
		}
		if _, ok := out[m[1]]; !ok {
			out[m[1]] = example{file, doc}
		}
	}
	return out
}

// decodeAll decodes and validates a file of resources, references too.
func decodeAll(name string, src []byte) ([]api.Object, error) {
	docs, err := api.Decode(name, bytes.NewReader(src))
	if err != nil {
		return nil, err
	}
	objs := make([]api.Object, len(docs))
	for i, d := range docs {
		objs[i] = d.Object
	}
	if err := api.ValidateReferences(objs, api.NewIndex()); err != nil {
		return nil, err
	}
	return objs, nil
}

// fieldExamples returns, for each field of the specs, the first value objs
// set, formatted as YAML would show it.
func fieldExamples(objs []api.Object) map[protoreflect.FullName]string {
	out := map[protoreflect.FullName]string{}
	var walk func(m protoreflect.Message)
	walk = func(m protoreflect.Message) {
		m.Range(func(f protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if _, ok := out[f.FullName()]; !ok {
				out[f.FullName()] = "`" + yamlValue(f, v) + "`"
			}
			switch {
			case f.IsList() && f.Message() != nil:
				for i := range v.List().Len() {
					walk(v.List().Get(i).Message())
				}
			case f.Message() != nil && !isWellKnown(f.Message()):
				walk(v.Message())
			}
			return true
		})
	}
	for _, o := range objs {
		r := api.ToProto(o)
		r.Revision, r.UpdateTime = 1, nil // shown in the envelope's table, not here
		walk(proto.Clone(r).ProtoReflect())
	}
	return out
}

// step is one field on the way from a Resource to a value; index is the
// list element, or -1.
type step struct {
	f     protoreflect.FieldDescriptor
	index int
}

// requiredFields finds out which fields api.Validate requires: each field
// of a spec that objs set is cleared where it first appears, in a copy,
// and the copy validated. A field whose absence is refused is required.
// Only spec fields are tried (the envelope's are documented by hand).
func requiredFields(objs []api.Object) map[protoreflect.FullName]bool {
	required := map[protoreflect.FullName]bool{}
	tried := map[protoreflect.FullName]bool{}
	for _, o := range objs {
		r := api.ToProto(o)
		var walk func(m protoreflect.Message, path []step)
		walk = func(m protoreflect.Message, path []step) {
			m.Range(func(f protoreflect.FieldDescriptor, v protoreflect.Value) bool {
				if !tried[f.FullName()] {
					tried[f.FullName()] = true
					required[f.FullName()] = !validWithout(r, path, f)
				}
				switch {
				case f.IsList() && f.Message() != nil:
					for i := range v.List().Len() {
						walk(v.List().Get(i).Message(), append(slices.Clone(path), step{f, i}))
					}
				case f.Message() != nil && !isWellKnown(f.Message()):
					walk(v.Message(), append(slices.Clone(path), step{f, -1}))
				}
				return true
			})
		}
		spec := r.ProtoReflect().WhichOneof(r.ProtoReflect().Descriptor().Oneofs().ByName("spec"))
		walk(r.ProtoReflect().Get(spec).Message(), []step{{spec, -1}})
	}
	return required
}

// validWithout reports whether r still validates with f cleared in the
// message at path.
func validWithout(r *meshv1.Resource, path []step, f protoreflect.FieldDescriptor) bool {
	c := proto.Clone(r).(*meshv1.Resource)
	m := c.ProtoReflect()
	for _, s := range path {
		v := m.Get(s.f)
		if s.index >= 0 {
			m = v.List().Get(s.index).Message()
		} else {
			m = v.Message()
		}
	}
	m.Clear(f)
	o, err := api.FromProto(c)
	return err == nil && o.Validate() == nil
}

// yamlValue formats a field's value in YAML flow style.
func yamlValue(f protoreflect.FieldDescriptor, v protoreflect.Value) string {
	if f.IsList() {
		l := v.List()
		var items []string
		for i := range l.Len() {
			items = append(items, scalar(f, l.Get(i)))
		}
		return "[" + strings.Join(items, ", ") + "]"
	}
	return scalar(f, v)
}

func scalar(f protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch f.Kind() {
	case protoreflect.EnumKind:
		return shortEnum(f.Enum(), v.Enum())
	case protoreflect.StringKind:
		s := v.String()
		if strings.Contains(s, "\n") || strings.ContainsAny(s, ":{}[],#*&!|>'\"%@`") || s == "" {
			return strconv.Quote(s)
		}
		return s
	case protoreflect.MessageKind:
		m := v.Message()
		switch f.Message().FullName() {
		case "google.protobuf.Duration":
			secs := m.Get(f.Message().Fields().ByName("seconds")).Int()
			nanos := m.Get(f.Message().Fields().ByName("nanos")).Int()
			return durationString(secs, nanos)
		}
		var parts []string
		m.Range(func(fd protoreflect.FieldDescriptor, fv protoreflect.Value) bool {
			parts = append(parts, fd.JSONName()+": "+yamlValue(fd, fv))
			return true
		})
		return "{" + strings.Join(parts, ", ") + "}"
	case protoreflect.Uint32Kind:
		if f.Name() == "mode" {
			return fmt.Sprintf("0%o", v.Uint())
		}
		return v.String()
	default:
		return v.String()
	}
}

// durationString writes a duration as Go does, without zero units:
// 24h0m0s → 24h, 1m30s stays.
func durationString(secs, nanos int64) string {
	s := time.Duration(secs*int64(time.Second) + nanos).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
