package pathnorm

// MaxLength caps the paths Normalize accepts, in bytes of input.
const MaxLength = 8192

// What a raw input byte is.
const (
	clKeep      uint8 = iota // unreserved, sub-delims but ';', ':' and '@': copied as is
	clSlash                  // '/': ends a segment
	clPercent                // '%': starts an escape
	clEncode                 // other printable ASCII not allowed raw in a path: escaped
	clHigh                   // 0x80 and above: part of a UTF-8 sequence, escaped
	clSemicolon              // ';'
	clBackslash              // '\'
	clQuery                  // '?' or '#'
	clControl                // C0 and DEL
)

var class = func() (t [256]uint8) {
	for c := range 256 {
		switch {
		case c < 0x20 || c == 0x7f:
			t[c] = clControl
		case c >= 0x80:
			t[c] = clHigh
		case isUnreserved(byte(c)) || c == ':' || c == '@':
			t[c] = clKeep
		default:
			switch c {
			case '!', '$', '&', '\'', '(', ')', '*', '+', ',', '=':
				t[c] = clKeep
			case '/':
				t[c] = clSlash
			case '%':
				t[c] = clPercent
			case ';':
				t[c] = clSemicolon
			case '\\':
				t[c] = clBackslash
			case '?', '#':
				t[c] = clQuery
			default:
				t[c] = clEncode
			}
		}
	}
	return t
}()

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

const upperHex = "0123456789ABCDEF"

// Normalize returns the canonical form of an HTTP request path, the one
// both to match against rules and to forward, or an error (answer 400)
// when the path is ambiguous. p is the path as it was sent, still
// percent-encoded and without the query: the part of the request target
// before '?', or (*url.URL).EscapedPath().
//
// The canonical form:
//   - percent-encodings of unreserved characters (letters, digits, '-',
//     '.', '_', '~') are decoded: "/%61dmin" is "/admin";
//   - every other percent-encoding is kept, with upper-case hex digits;
//     bytes not allowed raw in a path (non-ASCII, '"', '<', space, ...) are
//     percent-encoded, so the result is printable ASCII;
//   - "." and ".." segments are resolved (after decoding, so "%2e%2e" is
//     ".."; ".." never climbs above the root) and empty segments ("//")
//     are removed; a trailing '/' is kept;
//   - "" becomes "/".
//
// Refused, with one of this package's sentinel errors: a path not
// starting with '/'; longer than MaxLength; holding '?', '#', a raw '\',
// ';' (raw or as %3B), %2F or %5C, a '%' not followed by two hex digits, a
// control character (raw or encoded, NUL included, C1 controls too), or
// bytes that are not UTF-8 once decoded (overlong forms such as %C0%AE
// included).
//
// Normalize is idempotent. A path already in canonical form is returned as
// is, without allocating.
func Normalize(p string) (string, error) {
	if p == "" {
		return "/", nil
	}
	if p[0] != '/' {
		return "", ErrNotAbsolute
	}
	if len(p) > MaxLength {
		return "", ErrTooLong
	}
	if canonical(p) {
		return p, nil
	}
	var arr [512]byte
	out, err := appendNormalized(arr[:0], p)
	if err != nil {
		return "", err
	}
	if string(out) == p {
		return p, nil
	}
	return string(out), nil
}

// canonical reports whether p (starting with '/') is already its own
// canonical form: only bytes kept as is, no empty, "." or ".." segment
// except a final empty one.
func canonical(p string) bool {
	start := 1
	for i := 1; i <= len(p); i++ {
		if i < len(p) {
			switch class[p[i]] {
			case clKeep:
				continue
			case clSlash:
			default:
				return false
			}
		}
		switch seg := p[start:i]; seg {
		case ".", "..":
			return false
		case "":
			if i < len(p) {
				return false
			}
		}
		start = i + 1
	}
	return true
}

func appendNormalized(out []byte, p string) ([]byte, error) {
	var u utf8State
	i := 1
	for {
		mark := len(out)
		out = append(out, '/')
		for ; i < len(p) && p[i] != '/'; i++ {
			c := p[i]
			switch class[c] {
			case clKeep:
				if u.need > 0 {
					return nil, ErrBadUTF8
				}
				out = append(out, c)
			case clEncode:
				if u.need > 0 {
					return nil, ErrBadUTF8
				}
				out = append(out, '%', upperHex[c>>4], upperHex[c&15])
			case clHigh:
				if err := u.feed(c); err != nil {
					return nil, err
				}
				out = append(out, '%', upperHex[c>>4], upperHex[c&15])
			case clPercent:
				if i+2 >= len(p) {
					return nil, ErrBadEncoding
				}
				h, ok1 := unhex(p[i+1])
				l, ok2 := unhex(p[i+2])
				if !ok1 || !ok2 {
					return nil, ErrBadEncoding
				}
				i += 2
				v := h<<4 | l
				switch {
				case v == '/' || v == '\\':
					return nil, ErrEncodedSeparator
				case v == ';':
					return nil, ErrPathParameter
				case v < 0x20 || v == 0x7f:
					return nil, ErrControl
				case v >= 0x80:
					if err := u.feed(v); err != nil {
						return nil, err
					}
				case u.need > 0:
					return nil, ErrBadUTF8
				case isUnreserved(v):
					out = append(out, v)
					continue
				}
				out = append(out, '%', upperHex[v>>4], upperHex[v&15])
			case clSemicolon:
				return nil, ErrPathParameter
			case clBackslash:
				return nil, ErrBackslash
			case clQuery:
				return nil, ErrQueryOrFragment
			default:
				return nil, ErrControl
			}
		}
		if u.need > 0 {
			return nil, ErrBadUTF8
		}
		last := i >= len(p)
		switch seg := out[mark+1:]; {
		case len(seg) == 0, len(seg) == 1 && seg[0] == '.':
			out = out[:mark]
		case len(seg) == 2 && seg[0] == '.' && seg[1] == '.':
			out = out[:mark]
			for len(out) > 0 {
				c := out[len(out)-1]
				out = out[:len(out)-1]
				if c == '/' {
					break
				}
			}
		default:
			if last {
				return out, nil
			}
			i++
			continue
		}
		// The segment was dropped: a final one leaves its '/'.
		if last {
			return append(out, '/'), nil
		}
		i++
	}
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// utf8State validates a byte stream as UTF-8 incrementally, the way
// unicode/utf8 does (no overlong forms, no surrogates, nothing above
// U+10FFFF), and refuses C1 controls (U+0080 to U+009F).
type utf8State struct {
	need   int  // continuation bytes still expected
	lo, hi byte // the range of the next continuation byte
	c1     bool // the sequence started with 0xC2: 0x80-0x9F are C1 controls
}

func (u *utf8State) feed(b byte) error {
	if u.need > 0 {
		if b < u.lo || b > u.hi {
			if u.c1 && b >= 0x80 && b <= 0x9f {
				return ErrControl
			}
			return ErrBadUTF8
		}
		u.need--
		u.lo, u.hi, u.c1 = 0x80, 0xbf, false
		return nil
	}
	switch {
	case b < 0x80:
		return nil
	case b == 0xc2:
		u.need, u.lo, u.hi, u.c1 = 1, 0xa0, 0xbf, true
	case b > 0xc2 && b <= 0xdf:
		u.need, u.lo, u.hi = 1, 0x80, 0xbf
	case b == 0xe0:
		u.need, u.lo, u.hi = 2, 0xa0, 0xbf
	case b >= 0xe1 && b <= 0xef && b != 0xed:
		u.need, u.lo, u.hi = 2, 0x80, 0xbf
	case b == 0xed:
		u.need, u.lo, u.hi = 2, 0x80, 0x9f
	case b == 0xf0:
		u.need, u.lo, u.hi = 3, 0x90, 0xbf
	case b >= 0xf1 && b <= 0xf3:
		u.need, u.lo, u.hi = 3, 0x80, 0xbf
	case b == 0xf4:
		u.need, u.lo, u.hi = 3, 0x80, 0x8f
	default:
		return ErrBadUTF8
	}
	return nil
}
