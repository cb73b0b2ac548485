package api

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
)

// Limits on regular expressions in routes.
const (
	// MaxRegexLength caps an expression's source.
	MaxRegexLength = 1024
	// MaxRegexProgram caps an expression's compiled size in instructions,
	// which bounds the time each match takes per input byte.
	MaxRegexProgram = 5000
)

// CompileRegex compiles a route's regular expression with Go's RE2 syntax
// (linear-time matching, no backreferences). The result matches only whole
// strings, as if the expression were written ^(?:expr)$. Its errors wrap
// ErrInvalidPattern.
func CompileRegex(expr string) (*regexp.Regexp, error) {
	re, err := compileRegex(expr)
	if err != nil {
		return nil, fmt.Errorf("%w: regex: %v", ErrInvalidPattern, err)
	}
	return re, nil
}

// compileRegex's errors are reasons for a FieldError.
func compileRegex(expr string) (*regexp.Regexp, error) {
	if expr == "" {
		return nil, errors.New("must not be empty")
	}
	if len(expr) > MaxRegexLength {
		return nil, fmt.Errorf("longer than %d bytes", MaxRegexLength)
	}
	// Parse alone first: only an expression that is well-formed by itself
	// can be wrapped without changing its meaning (think "a)|(b").
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil, err
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return nil, err
	}
	if len(prog.Inst) > MaxRegexProgram {
		return nil, fmt.Errorf("too complex: %d instructions, at most %d", len(prog.Inst), MaxRegexProgram)
	}
	return regexp.Compile(`^(?:` + expr + `)$`)
}
