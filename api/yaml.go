package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	yamlv2 "go.yaml.in/yaml/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"sigs.k8s.io/yaml"
)

// Limits on what Decode reads.
const (
	// MaxInputBytes caps one input (a file, or stdin).
	MaxInputBytes = 8 << 20
	// MaxDocuments caps the documents in one input.
	MaxDocuments = 1000
)

// Document is one decoded YAML document.
type Document struct {
	// Index is the document's 1-based position among the non-empty
	// documents of its input.
	Index int
	// Line is the 1-based line of the document's first content.
	Line int
	// Item is the object's 1-based position in the items of a List
	// document (as meshctl get prints several objects); 0 for a document
	// that is one object.
	Item int
	// Object is the decoded, validated object.
	Object Object
}

// Decode reads a stream of YAML (or JSON) documents separated by "---"
// lines, each a Kubernetes-style object:
//
//	apiVersion: minimesh.io/v1alpha1
//	kind: Route
//	metadata:
//	  name: r1
//	  namespace: prod    # "default" when omitted
//	spec: ...            # the kind's spec message in protojson form
//
// Decoding is strict: duplicate keys and unknown fields are errors, at the
// top, in metadata and anywhere in spec. In spec, enum values may be
// written by their short names ("http", "gateway-error") and durations as Go
// durations ("1.5s", "250ms", "2m"). Every object is validated (Validate, not
// ValidateReferences). Empty documents are skipped. A document of kind
// List (ListKind) holds several objects in its items; each becomes a
// Document with the List's Index and Line and its own Item. A top-level
// status, and metadata.revision and metadata.updateTime, are the server's:
// status is ignored, the two are read into Metadata (meshd sets its own).
//
// source names the input in errors. On any error Decode returns no
// documents and an error that joins a *DocumentError per failing document,
// each naming source, the document's index and line, and the field.
func Decode(source string, r io.Reader) ([]Document, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxInputBytes+1))
	if err != nil {
		return nil, fmt.Errorf("api: %s: read: %w", source, err)
	}
	if len(data) > MaxInputBytes {
		return nil, fmt.Errorf("%w: %s: more than %d bytes", ErrTooLarge, source, MaxInputBytes)
	}
	chunks := splitDocuments(data)
	var (
		docs []Document
		errs []error
	)
	index, listed := 0, 0
	for _, ch := range chunks {
		if len(errs) == maxErrors {
			errs = append(errs, fmt.Errorf("%w: %s: too many invalid documents; stopped after document %d", ErrInvalid, source, index))
			break
		}
		j, err := yaml.YAMLToJSONStrict(ch.text)
		if err == nil && (len(j) == 0 || string(j) == "null") {
			continue // empty: only comments or whitespace
		}
		index++
		if index+listed > MaxDocuments {
			return nil, fmt.Errorf("%w: %s: more than %d documents", ErrTooLarge, source, MaxDocuments)
		}
		line := ch.line + firstContentLine(ch.text)
		if err != nil {
			errs = append(errs, &DocumentError{Source: source, Index: index, Line: line,
				Err: fmt.Errorf("%w: %s", ErrSyntax, oneLine(relocateLines(err.Error(), ch.line)))})
			continue
		}
		if items, isList, err := listItems(j); isList {
			if err != nil {
				errs = append(errs, &DocumentError{Source: source, Index: index, Line: line, Err: err})
				continue
			}
			listed += len(items)
			if index+listed > MaxDocuments {
				return nil, fmt.Errorf("%w: %s: more than %d documents and List items", ErrTooLarge, source, MaxDocuments)
			}
			for i, it := range items {
				o, err := decodeObject(it)
				if err == nil {
					err = o.Validate()
				}
				if err != nil {
					for _, fe := range FieldErrors(err) {
						fe.Field = strings.TrimSuffix(fmt.Sprintf("items[%d].%s", i, fe.Field), ".")
					}
					errs = append(errs, &DocumentError{Source: source, Index: index, Line: line, Err: err})
					continue
				}
				docs = append(docs, Document{Index: index, Line: line, Item: i + 1, Object: o})
			}
			continue
		}
		o, err := decodeObject(j)
		if err == nil {
			err = o.Validate()
		}
		if err != nil {
			errs = append(errs, &DocumentError{Source: source, Index: index, Line: line, Err: err})
			continue
		}
		docs = append(docs, Document{Index: index, Line: line, Object: o})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return docs, nil
}

type chunk struct {
	text []byte
	line int // 1-based line of text's first byte
}

// splitDocuments splits a YAML stream at "---" and "..." marker lines. A
// marker always starts a line: YAML forbids such lines inside a document,
// even in block scalars (whose content is indented).
func splitDocuments(data []byte) []chunk {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	var out []chunk
	cur := chunk{line: 1}
	start := 0
	lineNo := 1
	for pos := 0; pos < len(data); {
		end := bytes.IndexByte(data[pos:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += pos + 1
		}
		l := data[pos:end]
		if isMarker(l, "---") || isMarker(l, "...") {
			cur.text = data[start:pos]
			out = append(out, cur)
			// Content after "--- " on the marker's line belongs to the
			// next document ("--- {a: 1}").
			cur = chunk{line: lineNo}
			start = pos + 3
			if isMarker(l, "...") {
				start = end
				cur.line = lineNo + 1
			}
		}
		pos = end
		lineNo++
	}
	cur.text = data[start:]
	return append(out, cur)
}

func isMarker(line []byte, m string) bool {
	if !bytes.HasPrefix(line, []byte(m)) {
		return false
	}
	return len(line) == 3 || line[3] == ' ' || line[3] == '\t' || line[3] == '\n' || line[3] == '\r'
}

// firstContentLine returns the 0-based line of text's first line that is
// neither blank nor a comment.
func firstContentLine(text []byte) int {
	n := 0
	for line := range bytes.Lines(text) {
		t := bytes.TrimSpace(line)
		if len(t) > 0 && t[0] != '#' {
			return n
		}
		n++
	}
	return 0
}

// oneLine folds a multi-line message (yaml's "unmarshal errors:\n  line
// 9: ...") into one line.
func oneLine(msg string) string {
	msg = strings.ReplaceAll(msg, ":\n", ": ")
	return strings.Join(strings.Fields(strings.ReplaceAll(msg, "\n", "; ")), " ")
}

var lineRef = regexp.MustCompile(`line (\d+)`)

// relocateLines turns the document-relative line numbers in a YAML error
// into lines of the whole input.
func relocateLines(msg string, first int) string {
	return lineRef.ReplaceAllStringFunc(msg, func(m string) string {
		n, err := strconv.Atoi(m[len("line "):])
		if err != nil {
			return m
		}
		return "line " + strconv.Itoa(n+first-1)
	})
}

// docErrors collects the errors of one document; key fills in as the
// document reveals its kind and name.
type docErrors struct {
	key  Key
	errs []error
}

func (d *docErrors) addf(field, format string, args ...any) {
	if len(d.errs) >= maxErrors {
		return
	}
	d.errs = append(d.errs, &FieldError{Kind: d.key.Kind, Namespace: d.key.Namespace, Name: d.key.Name,
		Field: field, Reason: fmt.Sprintf(format, args...)})
}

func (d *docErrors) err() error { return errors.Join(d.errs...) }

// ListKind is the kind of a document that holds several objects in its
// items, as `meshctl get -o yaml|json` prints them (and kubectl does):
//
//	apiVersion: minimesh.io/v1alpha1   # or v1
//	kind: List
//	metadata: {revision: 7}            # ignored
//	items: [...]                       # objects, each as a document
const ListKind = "List"

// listItems reports whether the document j is a List and returns its
// items.
func listItems(j []byte) ([]json.RawMessage, bool, error) {
	var top map[string]json.RawMessage
	var kind string
	if json.Unmarshal(j, &top) != nil || json.Unmarshal(top["kind"], &kind) != nil || kind != ListKind {
		return nil, false, nil
	}
	d := &docErrors{key: Key{Kind: ListKind}}
	unknownKeys(d, "", "a List", top, "apiVersion", "kind", "metadata", "items")
	var av string
	if stringField(d, "apiVersion", top["apiVersion"], &av, true) && av != APIVersion && av != "v1" {
		d.addf("apiVersion", "a List's must be %q or \"v1\", not %q", APIVersion, av)
	}
	var items []json.RawMessage
	if raw, ok := top["items"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &items); err != nil {
			d.addf("items", "must be a list of objects")
		}
	}
	if len(d.errs) > 0 {
		return nil, true, d.err()
	}
	return items, true, nil
}

// decodeObject decodes one document, already converted to JSON.
func decodeObject(j []byte) (Object, error) {
	d := &docErrors{}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(j, &top); err != nil || top == nil {
		d.addf("", "a document must be a mapping with apiVersion, kind, metadata and spec")
		return nil, d.err()
	}
	// status is the server's, as in Kubernetes: read and ignored.
	unknownKeys(d, "", "the document", top, "apiVersion", "kind", "metadata", "spec", "status")

	var apiVersion, kindName string
	stringField(d, "apiVersion", top["apiVersion"], &apiVersion, true)
	if apiVersion != "" && apiVersion != APIVersion {
		d.addf("apiVersion", "must be %q, not %q", APIVersion, apiVersion)
	}
	if !stringField(d, "kind", top["kind"], &kindName, true) {
		return nil, d.err()
	}
	o, err := New(Kind(kindName))
	if err != nil {
		d.addf("kind", "unknown kind %q; one of %s", kindName, kindList())
		return nil, d.err()
	}
	m := o.Meta()
	d.key.Kind = o.Kind()

	var meta map[string]json.RawMessage
	if raw, ok := top["metadata"]; !ok || string(raw) == "null" {
		d.addf("metadata", "required")
	} else if err := json.Unmarshal(raw, &meta); err != nil {
		d.addf("metadata", "must be a mapping")
	} else {
		stringField(d, "metadata.name", meta["name"], &m.Name, true)
		d.key.Name = m.Name
		stringField(d, "metadata.namespace", meta["namespace"], &m.Namespace, false)
		if m.Namespace == "" {
			m.Namespace = DefaultNamespace
		}
		d.key.Namespace = m.Namespace
		unknownKeys(d, "metadata.", "metadata", meta, "name", "namespace", "revision", "updateTime")
		if raw, ok := meta["revision"]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, &m.Revision); err != nil {
				d.addf("metadata.revision", "must be a non-negative integer")
			}
		}
		var ts string
		if stringField(d, "metadata.updateTime", meta["updateTime"], &ts, false) && ts != "" {
			t, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil {
				d.addf("metadata.updateTime", "%q is not an RFC 3339 time", ts)
			}
			m.UpdateTime = t.UTC()
		}
	}

	raw, ok := top["spec"]
	if !ok || string(raw) == "null" {
		d.addf("spec", "required")
		return nil, d.err()
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var spec any
	if err := dec.Decode(&spec); err != nil {
		d.addf("spec", "%v", err)
		return nil, d.err()
	}
	msg := o.SpecMessage()
	before := len(d.errs)
	norm := normalizeMessage(d, msg.ProtoReflect().Descriptor(), spec, "spec")
	if len(d.errs) > before {
		return nil, d.err() // protojson would only repeat these, with less detail.
	}
	b, err := json.Marshal(norm)
	if err != nil {
		d.addf("spec", "%v", err)
		return nil, d.err()
	}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(b, msg); err != nil {
		d.addf("spec", "%s", protojsonReason(err))
	}
	if len(d.errs) > 0 {
		return nil, d.err()
	}
	return o, nil
}

var protojsonPrefix = regexp.MustCompile(`^proto:[\s\x{00a0}]*(\(line \d+:\d+\):[\s\x{00a0}]*)?`)

// protojsonReason strips protojson's prefix and its positions in JSON that
// the user never wrote.
func protojsonReason(err error) string {
	return protojsonPrefix.ReplaceAllString(err.Error(), "")
}

func unknownKeys(d *docErrors, prefix, where string, m map[string]json.RawMessage, known ...string) {
	var unknown []string
	for k := range m {
		if !slices.Contains(known, k) {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	for _, k := range unknown {
		d.addf(prefix+k, "unknown field; %s has only %s", where, strings.Join(known, ", "))
	}
}

// stringField decodes raw (which may be absent) into *dst and reports
// whether it held a string.
func stringField(d *docErrors, field string, raw json.RawMessage, dst *string, required bool) bool {
	if raw == nil || string(raw) == "null" {
		if required {
			d.addf(field, "required")
		}
		return false
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		d.addf(field, "must be a string (quote it)")
		return false
	}
	if *dst == "" && required {
		d.addf(field, "required")
		return false
	}
	return true
}

const durationName = "google.protobuf.Duration"

// normalizeMessage walks a spec's JSON by its message descriptor: it
// reports unknown fields and wrongly typed values with their paths, and
// rewrites enum short names and Go durations into the forms protojson
// reads.
func normalizeMessage(d *docErrors, md protoreflect.MessageDescriptor, v any, path string) any {
	if md.FullName() == durationName {
		s, ok := v.(string)
		if !ok {
			d.addf(path, "must be a duration such as \"1.5s\" or \"250ms\"")
			return v
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			d.addf(path, "%q is not a duration such as \"1.5s\" or \"250ms\"", s)
			return v
		}
		return protojsonDuration(dur)
	}
	if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		return v
	}
	obj, ok := v.(map[string]any)
	if !ok {
		d.addf(path, "must be a mapping")
		return v
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	fields := md.Fields()
	out := make(map[string]any, len(obj))
	oneofs := map[protoreflect.Name]string{} // oneof → the member set
	for _, k := range keys {
		fd := fields.ByJSONName(k)
		if fd == nil {
			fd = fields.ByTextName(k)
		}
		if fd == nil {
			d.addf(path+"."+k, "unknown field; %s has only %s", path, fieldList(md))
			continue
		}
		fpath := path + "." + fd.JSONName()
		val := obj[k]
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() && val != nil {
			if other, dup := oneofs[od.Name()]; dup {
				d.addf(path, "%s and %s are both set; set only one of %s", other, fd.JSONName(), oneofMembers(od))
				continue
			}
			oneofs[od.Name()] = fd.JSONName()
		}
		switch {
		case val == nil:
		case fd.IsMap():
		case fd.IsList():
			list, ok := val.([]any)
			if !ok {
				d.addf(fpath, "must be a list")
				break
			}
			for i := range list {
				list[i] = normalizeValue(d, fd, list[i], idx(fpath, i))
			}
		default:
			val = normalizeValue(d, fd, val, fpath)
		}
		out[k] = val
	}
	return out
}

func oneofMembers(od protoreflect.OneofDescriptor) string {
	fields := od.Fields()
	names := make([]string, fields.Len())
	for i := range names {
		names[i] = fields.Get(i).JSONName()
	}
	return strings.Join(names, ", ")
}

func fieldList(md protoreflect.MessageDescriptor) string {
	fields := md.Fields()
	names := make([]string, fields.Len())
	for i := range names {
		names[i] = fields.Get(i).JSONName()
	}
	return strings.Join(names, ", ")
}

func normalizeValue(d *docErrors, fd protoreflect.FieldDescriptor, v any, path string) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return normalizeMessage(d, fd.Message(), v, path)
	case protoreflect.EnumKind:
		ed := fd.Enum()
		switch s := v.(type) {
		case string:
			if ev, ok := enumLookup(ed, s); ok {
				return string(ev.Name())
			}
			d.addf(path, "unknown value %q; one of %s", s, enumChoices(ed))
		case json.Number:
			// protojson takes numbers; Validate judges them.
		default:
			d.addf(path, "must be one of %s", enumChoices(ed))
		}
	case protoreflect.StringKind:
		if _, ok := v.(string); !ok {
			d.addf(path, "must be a string (quote it)")
		}
	case protoreflect.BoolKind:
		if _, ok := v.(bool); !ok {
			d.addf(path, "must be true or false")
		}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		bits := 64
		if fd.Kind() == protoreflect.Int32Kind || fd.Kind() == protoreflect.Sint32Kind || fd.Kind() == protoreflect.Sfixed32Kind {
			bits = 32
		}
		if _, err := strconv.ParseInt(numberText(v), 10, bits); err != nil {
			d.addf(path, "must be an integer of %d bits", bits)
		}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		bits := 64
		if fd.Kind() == protoreflect.Uint32Kind || fd.Kind() == protoreflect.Fixed32Kind {
			bits = 32
		}
		if _, err := strconv.ParseUint(numberText(v), 10, bits); err != nil {
			d.addf(path, "must be an integer between 0 and %d", uint64(1)<<bits-1)
		}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		switch v.(type) {
		case json.Number, string: // protojson also reads "NaN" and "Infinity"; Validate rejects them.
		default:
			d.addf(path, "must be a number")
		}
	}
	return v
}

func numberText(v any) string {
	switch n := v.(type) {
	case json.Number:
		return string(n)
	case string:
		return n
	}
	return "not a number"
}

// protojsonDuration formats d as protojson writes durations: seconds with
// up to nine fractional digits and an "s".
func protojsonDuration(d time.Duration) string {
	sign := ""
	if d < 0 {
		sign = "-"
		if d == -1<<63 {
			return "-9223372036.854775808s"
		}
		d = -d
	}
	s := fmt.Sprintf("%s%d.%09d", sign, d/time.Second, d%time.Second)
	s = strings.TrimRight(s, "0")
	s = strings.TrimSuffix(s, ".")
	return s + "s"
}

// Encode writes objects as a YAML stream, "---" between documents, in the
// form Decode reads. Spec fields appear in the order of the proto, enum
// values by their short names.
func Encode(w io.Writer, objs ...Object) error {
	for i, o := range objs {
		b, err := MarshalYAML(o)
		if err != nil {
			return err
		}
		if i > 0 {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return fmt.Errorf("api: write: %w", err)
			}
		}
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("api: write: %w", err)
		}
	}
	return nil
}

// MarshalYAML returns one object as a YAML document. Durations are written
// as Go durations ("2.5s", "1h30m0s").
func MarshalYAML(o Object) ([]byte, error) {
	doc, err := document(o, true)
	if err != nil {
		return nil, err
	}
	b, err := yamlv2.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("api: %s: encode yaml: %w", KeyOf(o), err)
	}
	return b, nil
}

// MarshalJSON returns one object as a JSON document with the same
// structure and key order as MarshalYAML's, but durations in protojson's
// form ("2.500s") so that its spec is the kind's protojson.
func MarshalJSON(o Object) ([]byte, error) {
	doc, err := document(o, false)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := writeJSON(&buf, doc); err != nil {
		return nil, fmt.Errorf("api: %s: encode json: %w", KeyOf(o), err)
	}
	return buf.Bytes(), nil
}

// document builds o's ordered tree.
func document(o Object, goDurations bool) (yamlv2.MapSlice, error) {
	m := o.Meta()
	meta := yamlv2.MapSlice{{Key: "name", Value: m.Name}, {Key: "namespace", Value: m.Namespace}}
	if m.Revision != 0 {
		meta = append(meta, yamlv2.MapItem{Key: "revision", Value: m.Revision})
	}
	if !m.UpdateTime.IsZero() {
		meta = append(meta, yamlv2.MapItem{Key: "updateTime", Value: m.UpdateTime.UTC().Format(time.RFC3339Nano)})
	}
	msg := o.SpecMessage()
	j, err := protojson.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("api: %s: encode spec: %w", KeyOf(o), err)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var spec any
	if err := dec.Decode(&spec); err != nil {
		return nil, fmt.Errorf("api: %s: encode spec: %w", KeyOf(o), err)
	}
	return yamlv2.MapSlice{
		{Key: "apiVersion", Value: APIVersion},
		{Key: "kind", Value: string(o.Kind())},
		{Key: "metadata", Value: meta},
		{Key: "spec", Value: treeBuilder{goDurations}.message(msg.ProtoReflect().Descriptor(), spec)},
	}, nil
}

// treeBuilder turns protojson output into a tree whose mappings follow
// the message's field order, with enum short names and Go numbers.
type treeBuilder struct {
	goDurations bool
}

func (tb treeBuilder) message(md protoreflect.MessageDescriptor, v any) any {
	if s, ok := v.(string); ok && tb.goDurations && md.FullName() == durationName {
		return goDuration(s)
	}
	obj, ok := v.(map[string]any)
	if !ok || strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		return plainValue(v)
	}
	out := yamlv2.MapSlice{}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		val, ok := obj[fd.JSONName()]
		if !ok {
			continue
		}
		if list, isList := val.([]any); isList && fd.IsList() {
			items := make([]any, len(list))
			for i, e := range list {
				items[i] = tb.value(fd, e)
			}
			val = items
		} else {
			val = tb.value(fd, val)
		}
		out = append(out, yamlv2.MapItem{Key: fd.JSONName(), Value: val})
	}
	return out
}

func (tb treeBuilder) value(fd protoreflect.FieldDescriptor, v any) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if !fd.IsMap() {
			return tb.message(fd.Message(), v)
		}
	case protoreflect.EnumKind:
		if s, ok := v.(string); ok {
			if ev := fd.Enum().Values().ByName(protoreflect.Name(s)); ev != nil && ev.Number() != 0 {
				return enumShortName(fd.Enum(), ev.Number())
			}
		}
	}
	return plainValue(v)
}

// goDuration rewrites a protojson duration as a Go duration when it fits
// in one.
func goDuration(s string) string {
	var d durationpb.Duration
	if err := protojson.Unmarshal([]byte(strconv.Quote(s)), &d); err != nil || d.CheckValid() != nil {
		return s
	}
	const maxSeconds = math.MaxInt64/int64(time.Second) - 1
	if d.GetSeconds() > maxSeconds || d.GetSeconds() < -maxSeconds {
		return s
	}
	return d.AsDuration().String()
}

// plainValue converts json.Numbers (anywhere in v) to Go numbers.
func plainValue(v any) any {
	switch t := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(t), 10, 64); err == nil {
			return i
		}
		if u, err := strconv.ParseUint(string(t), 10, 64); err == nil {
			return u
		}
		if f, err := strconv.ParseFloat(string(t), 64); err == nil {
			return f
		}
		return string(t)
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		out := make(yamlv2.MapSlice, 0, len(t))
		for _, k := range keys {
			out = append(out, yamlv2.MapItem{Key: k, Value: plainValue(t[k])})
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = plainValue(e)
		}
		return out
	}
	return v
}

// writeJSON writes a tree built by document as JSON, keeping key order.
func writeJSON(buf *bytes.Buffer, v any) error {
	switch t := v.(type) {
	case yamlv2.MapSlice:
		buf.WriteByte('{')
		for i, item := range t {
			if i > 0 {
				buf.WriteByte(',')
			}
			k, _ := json.Marshal(fmt.Sprint(item.Key))
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
	default:
		b, err := json.Marshal(t)
		if err != nil {
			return err
		}
		buf.Write(b)
	}
	return nil
}
