package meshctl

import (
	"fmt"
	"io"
	"reflect"

	"google.golang.org/grpc/status"

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
