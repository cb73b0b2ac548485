package api

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Every error this package returns wraps one of them.
var (
	// ErrInvalid: an object or a document is not valid. Errors that wrap it
	// are *FieldError or *DocumentError values (or errors.Join of them).
	ErrInvalid = errors.New("api: invalid")
	// ErrUnknownKind: the kind is not one of Kinds().
	ErrUnknownKind = errors.New("api: unknown kind")
	// ErrMissingReference: an object refers to an object that does not exist.
	ErrMissingReference = errors.New("api: missing reference")
	// ErrConflict: two objects may not coexist (same key twice in one apply,
	// two ConfigFiles with one path, two AccessLogs for one service).
	ErrConflict = errors.New("api: conflict")
	// ErrTooLarge: the input exceeds MaxInputBytes or MaxDocuments.
	ErrTooLarge = errors.New("api: input too large")
	// ErrInvalidPattern: an identity pattern or a regular expression does
	// not parse or exceeds its limits.
	ErrInvalidPattern = errors.New("api: invalid pattern")
	// ErrSyntax: the input is not well-formed YAML.
	ErrSyntax = errors.New("api: syntax error")
)

// maxErrors bounds how many errors one Validate or Decode reports.
const maxErrors = 50

// FieldError is one invalid field of one object. It unwraps to ErrInvalid
// and, when set, to Err.
type FieldError struct {
	// Kind, Namespace and Name identify the object; Kind is empty when the
	// error was found before the kind was known.
	Kind      Kind
	Namespace string
	Name      string
	// Field is the path of the field as written in YAML, such as
	// "spec.retries.attempts" or "spec.backends[1].service"; empty when the
	// error concerns the object as a whole.
	Field string
	// Reason says what is wrong.
	Reason string
	// Err is an optional cause such as ErrMissingReference.
	Err error
}

// Error returns, for example,
// `api: Route "prod/r1": spec.retries.attempts: must be between 0 and 10`.
func (e *FieldError) Error() string { return "api: " + e.detail() }

func (e *FieldError) detail() string {
	var b strings.Builder
	if e.Kind != "" {
		fmt.Fprintf(&b, "%s %q: ", e.Kind, e.Namespace+"/"+e.Name)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Unwrap returns ErrInvalid and Err.
func (e *FieldError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrInvalid, e.Err}
	}
	return []error{ErrInvalid}
}

// DocumentError places an error in its input: the source's name, the
// document's 1-based index among the non-empty documents and the line where
// the document starts.
type DocumentError struct {
	Source string
	Index  int
	Line   int
	Err    error
}

// Error returns one line per underlying error, for example
// `api: web.yaml: document 3 (line 12): Route "prod/r1": spec.timeout: must be positive`.
func (e *DocumentError) Error() string {
	var where strings.Builder
	if e.Source != "" {
		where.WriteString(e.Source)
		where.WriteString(": ")
	}
	fmt.Fprintf(&where, "document %d", e.Index)
	if e.Line > 0 {
		fmt.Fprintf(&where, " (line %d)", e.Line)
	}
	var lines []string
	for _, leaf := range leaves(e.Err) {
		msg := leaf.Error()
		if fe, ok := leaf.(*FieldError); ok {
			msg = fe.detail()
		} else {
			msg = strings.TrimPrefix(msg, "api: ")
		}
		lines = append(lines, "api: "+where.String()+": "+msg)
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the underlying error.
func (e *DocumentError) Unwrap() error { return e.Err }

// FieldErrors returns every *FieldError in err's tree, in order.
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *FieldError:
			out = append(out, e)
		case interface{ Unwrap() []error }:
			for _, c := range e.Unwrap() {
				walk(c)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	return out
}

// leaves flattens errors.Join trees (but not FieldErrors, which are leaves).
func leaves(err error) []error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*FieldError); ok {
		return []error{err}
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, c := range j.Unwrap() {
			out = append(out, leaves(c)...)
		}
		return out
	}
	return []error{err}
}
