package meshctl

import "errors"

// ExitError is an error with its own exit status. A silent one is an
// answer the command has printed already (authz explain's deny, diff's
// differences): cmd/meshctl exits with Code and prints nothing more, as
// `kubectl auth can-i` and `kubectl diff` do.
type ExitError struct {
	Code   int
	Silent bool
	Err    error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode is the exit status for a command's error, and whether
// cmd/meshctl prints it: 0 for nil, an ExitError's own, else 1.
func ExitCode(err error) (code int, show bool) {
	if err == nil {
		return 0, false
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code, !ee.Silent
	}
	return 1, true
}

// errDenied is authz explain's answer "no", as an exit status of 1.
var errDenied = &ExitError{Code: 1, Silent: true, Err: errors.New("denied")}

// errDiffers is diff's "there are differences", as an exit status of 1.
var errDiffers = &ExitError{Code: 1, Silent: true, Err: errors.New("the files differ from meshd's resources")}
