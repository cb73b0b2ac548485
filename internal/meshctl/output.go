package meshctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	yamlv2 "go.yaml.in/yaml/v2"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"k8s.io/client-go/util/jsonpath"

	"minimesh/api"
	"minimesh/internal/termsafe"
)

// Everything meshctl writes to the terminal passes through a
// termsafe.Writer (NewRoot): a workload's strings (its version, a NACK
// reason, names, paths, addresses, command lines) cannot move the cursor,
// erase a line or reorder text. printf is the table and text writer: its
// format is ours, and each string, error or Stringer argument is escaped
// whole (termsafe.String, also its tabs and newlines), so a value cannot
// add a cell or a row either.

// printf writes format with every string-like argument escaped.
func printf(w io.Writer, format string, args ...any) {
	for i, a := range args {
		switch v := a.(type) {
		case string:
			args[i] = termsafe.String(v)
		case error:
			args[i] = termsafe.String(v.Error())
		case fmt.Stringer:
			args[i] = termsafe.String(v.String())
		default:
			if rv := reflect.ValueOf(a); rv.Kind() == reflect.String {
				args[i] = termsafe.String(rv.String()) // api.Kind and other named strings
			}
		}
	}
	_, _ = fmt.Fprintf(w, format, args...)
}

// ErrorText is how cmd/meshctl shows a command's error: a gRPC status as
// "code: message", escaped like any other output (meshd's messages may
// quote what a proxy sent).
func ErrorText(err error) string {
	if st, ok := status.FromError(err); ok {
		return termsafe.Text(st.Code().String() + ": " + st.Message())
	}
	return termsafe.Text(err.Error())
}

// Output formats (-o). Every command says which it prints (outputs); the
// root refuses the others before the command runs, naming those it has.
const (
	formatTable    = "table"    // the default: a table or text for people
	formatWide     = "wide"     // the table with more columns
	formatName     = "name"     // kind/name, one a line
	formatJSON     = "json"     // the command's document
	formatYAML     = "yaml"     // the same document
	formatJSONPath = "jsonpath" // -o jsonpath=TEMPLATE: kubectl's JSONPath over the document
)

// docFormats are what every command with a document prints.
var docFormats = []string{formatTable, formatJSON, formatYAML, formatJSONPath}

const outputsAnnotation = "meshctl.minimesh.io/outputs"

// outputs declares the -o formats cmd prints and returns cmd.
func outputs(cmd *cobra.Command, formats ...string) *cobra.Command {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations[outputsAnnotation] = strings.Join(formats, ",")
	return cmd
}

// supported is the -o formats cmd prints: table alone when it declares
// none.
func supported(cmd *cobra.Command) []string {
	if a := cmd.Annotations[outputsAnnotation]; a != "" {
		return strings.Split(a, ",")
	}
	return []string{formatTable}
}

// output is a parsed -o.
type output struct {
	format   string
	template string // jsonpath
}

// parseOutput reads -o for cmd: a known format that cmd prints.
func parseOutput(cmd *cobra.Command, s string) (output, error) {
	o := output{format: s}
	if s == "" {
		o.format = formatTable
	}
	if t, ok := strings.CutPrefix(s, formatJSONPath+"="); ok {
		o = output{format: formatJSONPath, template: t}
		if strings.TrimSpace(t) == "" {
			return o, errors.New("--output jsonpath=TEMPLATE: the template is empty (for example -o jsonpath='{.metadata.name}')")
		}
	}
	if !slices.Contains([]string{formatTable, formatWide, formatName, formatJSON, formatYAML, formatJSONPath}, o.format) || (o.format == formatJSONPath && o.template == "") {
		return o, fmt.Errorf("--output %q: unknown format; one of table, wide, name, json, yaml, jsonpath=TEMPLATE", s)
	}
	if have := supported(cmd); !slices.Contains(have, o.format) {
		return o, fmt.Errorf("--output %s: %q does not print it; it prints %s", o.format, cmd.CommandPath(), formatList(have))
	}
	return o, nil
}

func formatList(formats []string) string {
	out := make([]string, len(formats))
	for i, f := range formats {
		out[i] = f
		if f == formatJSONPath {
			out[i] = "jsonpath=TEMPLATE"
		}
	}
	return strings.Join(out, ", ")
}

// view is what one command prints: its document (json, yaml, jsonpath),
// its names (-o name) and its table or text (table, wide).
type view struct {
	// doc is a proto.Message (protojson: camelCase keys), an api.Object
	// or objectList (the form apply reads), a json.RawMessage, or any
	// value encoding/json marshals (camelCase tags).
	doc   any
	names []string
	table func(wide bool) error
}

// show prints v as -o says.
func (g *globals) show(v view) error {
	switch g.out.format {
	case formatName:
		for _, n := range v.names {
			printf(g.io.Out, "%s\n", n)
		}
		return nil
	case formatJSON, formatYAML, formatJSONPath:
		tree, err := docTree(v.doc)
		if err != nil {
			return err
		}
		return g.printTree(tree)
	}
	if v.table == nil {
		return fmt.Errorf("--output %s: not printed here", g.out.format) // outputs() promised more than the command prints
	}
	return v.table(g.out.format == formatWide)
}

// printTree writes an ordered document as -o json, yaml or jsonpath says.
func (g *globals) printTree(tree any) error {
	switch g.out.format {
	case formatYAML:
		b, err := yamlv2.Marshal(tree)
		if err != nil {
			return err
		}
		_, err = g.io.Out.Write(b)
		return err
	case formatJSONPath:
		var buf bytes.Buffer
		if err := writeJSON(&buf, tree); err != nil {
			return err
		}
		var data any
		if err := json.Unmarshal(buf.Bytes(), &data); err != nil {
			return err
		}
		jp := jsonpath.New("output")
		jp.AllowMissingKeys(true)
		if err := jp.Parse(g.out.template); err != nil {
			return fmt.Errorf("--output jsonpath: %w", err)
		}
		if err := jp.Execute(g.io.Out, data); err != nil {
			return fmt.Errorf("--output jsonpath: %w", err)
		}
		return nil
	}
	var buf bytes.Buffer
	if err := writeJSON(&buf, tree); err != nil {
		return err
	}
	var ind bytes.Buffer
	if err := json.Indent(&ind, buf.Bytes(), "", "  "); err != nil {
		return err
	}
	ind.WriteByte('\n')
	_, err := g.io.Out.Write(ind.Bytes())
	return err
}

// objectList is several resources, printed as a List that apply reads
// back (api.ListKind).
type objectList struct {
	revision uint64
	items    []api.Object
}

// docTree turns a document into an ordered tree (yamlv2.MapSlice for
// mappings) that json and yaml print alike: the same keys, in the same
// order, with the same values.
func docTree(doc any) (any, error) {
	switch d := doc.(type) {
	case yamlv2.MapSlice:
		return d, nil
	case api.Object:
		return objectTree(d)
	case objectList:
		items := make([]any, 0, len(d.items))
		for _, o := range d.items {
			t, err := objectTree(o)
			if err != nil {
				return nil, err
			}
			items = append(items, t)
		}
		meta := yamlv2.MapSlice{}
		if d.revision != 0 {
			meta = append(meta, yamlv2.MapItem{Key: "revision", Value: d.revision})
		}
		return yamlv2.MapSlice{{Key: "apiVersion", Value: api.APIVersion}, {Key: "kind", Value: api.ListKind}, {Key: "metadata", Value: meta}, {Key: "items", Value: items}}, nil
	case proto.Message:
		b, err := protojson.Marshal(d)
		if err != nil {
			return nil, err
		}
		return orderedJSON(b)
	case json.RawMessage:
		return orderedJSON(d)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return orderedJSON(b)
}

// objectTree is o as api.MarshalYAML writes it (apiVersion, kind,
// metadata, spec; enum short names; Go durations), as a tree.
func objectTree(o api.Object) (any, error) {
	b, err := api.MarshalYAML(o)
	if err != nil {
		return nil, err
	}
	var tree yamlv2.MapSlice
	if err := yamlv2.Unmarshal(b, &tree); err != nil {
		return nil, fmt.Errorf("%s: %w", api.KeyOf(o), err)
	}
	return tree, nil
}

// orderedJSON decodes JSON keeping the order of keys.
func orderedJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	v, err := orderedValue(dec)
	if err != nil {
		return nil, fmt.Errorf("decode output: %w", err)
	}
	return v, nil
}

func orderedValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			m := yamlv2.MapSlice{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v, err := orderedValue(dec)
				if err != nil {
					return nil, err
				}
				m = append(m, yamlv2.MapItem{Key: k.(string), Value: v})
			}
			_, err := dec.Token() // }
			return m, err
		case '[':
			l := []any{}
			for dec.More() {
				v, err := orderedValue(dec)
				if err != nil {
					return nil, err
				}
				l = append(l, v)
			}
			_, err := dec.Token() // ]
			return l, err
		}
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i, nil
		}
		if u, err := strconv.ParseUint(string(t), 10, 64); err == nil {
			return u, nil
		}
		return t.Float64()
	}
	return tok, nil // string, bool, nil
}

// writeJSON writes a tree as compact JSON, keeping the order of keys.
func writeJSON(buf *bytes.Buffer, v any) error {
	switch t := v.(type) {
	case yamlv2.MapSlice:
		buf.WriteByte('{')
		for i, item := range t {
			if i > 0 {
				buf.WriteByte(',')
			}
			k, err := json.Marshal(fmt.Sprint(item.Key))
			if err != nil {
				return err
			}
			buf.Write(k)
			buf.WriteByte(':')
			if err := writeJSON(buf, item.Value); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	case []any:
		buf.WriteByte('[')
		for i, e := range t {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := writeJSON(buf, e); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case []yamlv2.MapSlice:
		l := make([]any, len(t))
		for i := range t {
			l[i] = t[i]
		}
		return writeJSON(buf, l)
	default:
		b, err := json.Marshal(t)
		if err != nil {
			return err
		}
		buf.Write(b)
	}
	return nil
}

// snakeToCamel rewrites the keys of a JSON tree from snake_case (as the
// proxies' topz and procz answers are) to camelCase, as every other
// meshctl document is.
func snakeToCamel(v any) any {
	switch t := v.(type) {
	case yamlv2.MapSlice:
		for i := range t {
			if k, ok := t[i].Key.(string); ok {
				parts := strings.Split(k, "_")
				for j := 1; j < len(parts); j++ {
					if parts[j] != "" {
						parts[j] = strings.ToUpper(parts[j][:1]) + parts[j][1:]
					}
				}
				t[i].Key = strings.Join(parts, "")
			}
			t[i].Value = snakeToCamel(t[i].Value)
		}
	case []any:
		for i := range t {
			t[i] = snakeToCamel(t[i])
		}
	}
	return v
}

// header writes a table's header line unless --no-headers.
func (g *globals) header(w io.Writer, line string) {
	if !g.noHeaders {
		_, _ = fmt.Fprintln(w, line)
	}
}

// newTable is a tabwriter on Out with its header written (unless
// --no-headers).
func (g *globals) newTable(header string) *tabwriter.Writer {
	w := tabwriter.NewWriter(g.io.Out, 0, 4, 2, ' ', 0)
	g.header(w, header)
	return w
}
