package pathnorm

import "errors"

// Sentinel errors. Normalize returns exactly one of these (unwrapped, so a
// refusal costs no allocation); each means "answer 400".
var (
	// ErrNotAbsolute: the path does not start with '/'.
	ErrNotAbsolute = errors.New("pathnorm: path must start with '/'")
	// ErrTooLong: the path is longer than MaxLength bytes.
	ErrTooLong = errors.New("pathnorm: path too long")
	// ErrEncodedSeparator: the path holds %2F or %5C (an encoded '/' or
	// '\'), which servers disagree about.
	ErrEncodedSeparator = errors.New("pathnorm: encoded '/' or '\\' in path")
	// ErrBackslash: the path holds a raw '\', which some servers treat as '/'.
	ErrBackslash = errors.New("pathnorm: '\\' in path")
	// ErrPathParameter: the path holds ';', which starts a path parameter
	// that some servers strip before matching.
	ErrPathParameter = errors.New("pathnorm: ';' path parameter in path")
	// ErrBadEncoding: a '%' is not followed by two hex digits.
	ErrBadEncoding = errors.New("pathnorm: invalid percent-encoding in path")
	// ErrControl: the path holds a control character (C0, DEL or C1), raw
	// or percent-encoded, NUL included.
	ErrControl = errors.New("pathnorm: control character in path")
	// ErrBadUTF8: the path's bytes, once percent-decoded, are not valid
	// UTF-8 (overlong forms and surrogates included).
	ErrBadUTF8 = errors.New("pathnorm: path is not valid UTF-8")
	// ErrQueryOrFragment: the path holds '?' or '#'; pass the path alone.
	ErrQueryOrFragment = errors.New("pathnorm: '?' or '#' in path")
)
