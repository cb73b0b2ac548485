package api

import (
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Enum values have short names for people: the value's name without the
// enum's prefix, in lower case, with '-' for '_'. PROTOCOL_HTTP2 is "http2",
// RETRY_ON_GATEWAY_ERROR is "gateway-error". The prefix is the name of the
// enum's zero value without "UNSPECIFIED" (buf's lint rules make every enum
// follow that scheme).

func enumPrefix(ed protoreflect.EnumDescriptor) string {
	zero := ed.Values().ByNumber(0)
	if zero == nil {
		return ""
	}
	n := string(zero.Name())
	if !strings.HasSuffix(n, "_UNSPECIFIED") {
		return ""
	}
	return strings.TrimSuffix(n, "UNSPECIFIED")
}

// enumShortName returns the short name of value number n, or "" when n is
// not a value of ed.
func enumShortName(ed protoreflect.EnumDescriptor, n protoreflect.EnumNumber) string {
	v := ed.Values().ByNumber(n)
	if v == nil {
		return ""
	}
	s := strings.TrimPrefix(string(v.Name()), enumPrefix(ed))
	return strings.ToLower(strings.ReplaceAll(s, "_", "-"))
}

// enumLookup resolves a value by its full name or (in any case) its short
// name. The zero value resolves only by its full name.
func enumLookup(ed protoreflect.EnumDescriptor, s string) (protoreflect.EnumValueDescriptor, bool) {
	if v := ed.Values().ByName(protoreflect.Name(s)); v != nil {
		return v, true
	}
	full := enumPrefix(ed) + strings.ToUpper(strings.ReplaceAll(s, "-", "_"))
	if v := ed.Values().ByName(protoreflect.Name(full)); v != nil && v.Number() != 0 {
		return v, true
	}
	return nil, false
}

// enumChoices lists the short names of ed's non-zero values: "http, http2, grpc, tcp".
func enumChoices(ed protoreflect.EnumDescriptor) string {
	var names []string
	vals := ed.Values()
	for i := range vals.Len() {
		if v := vals.Get(i); v.Number() != 0 {
			names = append(names, enumShortName(ed, v.Number()))
		}
	}
	return strings.Join(names, ", ")
}
