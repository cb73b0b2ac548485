// Package protodoc reads the comments of a .proto file, which
// protoc-gen-go drops from the descriptor it embeds, for the generators
// that document the resources (internal/docgen's reference, internal/crdgen's
// CRD schemas).
package protodoc

import (
	"context"
	"fmt"
	"strings"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Comments maps a full name (message, field, enum, enum value) to its
// leading comment, cleaned (Clean); "" maps to the file's own comment (the
// detached comment above its first message).
type Comments map[string]string

// Parse compiles src, the text of the file at path (imports of the
// standard well-known types only), and returns its comments and the
// compiled file, for a caller that compares it with the generated
// descriptor.
func Parse(path string, src []byte) (Comments, protoreflect.FileDescriptor, error) {
	c := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
			Accessor: protocompile.SourceAccessorFromMap(map[string]string{path: string(src)}),
		}),
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	files, err := c.Compile(context.Background(), path)
	if err != nil {
		return nil, nil, fmt.Errorf("parse %s: %w", path, err)
	}
	parsed := files[0]
	cm := Comments{}
	locs := parsed.SourceLocations()
	add := func(d protoreflect.Descriptor) {
		cm[string(d.FullName())] = Clean(locs.ByDescriptor(d).LeadingComments)
	}
	enums := func(es protoreflect.EnumDescriptors) {
		for i := range es.Len() {
			e := es.Get(i)
			add(e)
			for j := range e.Values().Len() {
				add(e.Values().Get(j))
			}
		}
	}
	var walk func(ms protoreflect.MessageDescriptors)
	walk = func(ms protoreflect.MessageDescriptors) {
		for i := range ms.Len() {
			m := ms.Get(i)
			add(m)
			for j := range m.Fields().Len() {
				add(m.Fields().Get(j))
			}
			walk(m.Messages())
			enums(m.Enums())
		}
	}
	walk(parsed.Messages())
	enums(parsed.Enums())
	if first := parsed.Messages(); first.Len() > 0 {
		if d := locs.ByDescriptor(first.Get(0)).LeadingDetachedComments; len(d) > 0 {
			cm[""] = Clean(strings.Join(d, "\n"))
		}
	}
	return cm, parsed, nil
}

// Clean joins a comment's lines with spaces; paragraphs stay apart, joined
// by a blank line.
func Clean(s string) string {
	var paras, cur []string
	for line := range strings.SplitSeq(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			if len(cur) > 0 {
				paras = append(paras, strings.Join(cur, " "))
				cur = nil
			}
			continue
		}
		cur = append(cur, line)
	}
	if len(cur) > 0 {
		paras = append(paras, strings.Join(cur, " "))
	}
	return strings.Join(paras, "\n\n")
}
