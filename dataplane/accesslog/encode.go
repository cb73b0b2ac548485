package accesslog

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// MaxFieldBytes caps each string field of a line; a longer value is cut
// (at a character boundary) and ends with "...".
const MaxFieldBytes = 4096

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string: quoted, with '"', '\' and every
// control character escaped (C0, DEL and C1, so a value can never start a
// new line or carry a terminal escape sequence), U+2028 and U+2029
// escaped, and invalid UTF-8 replaced by U+FFFD.
func appendString(b []byte, s string) []byte {
	truncated := false
	if len(s) > MaxFieldBytes {
		cut := MaxFieldBytes
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s, truncated = s[:cut], true
	}
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < 0x7f {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r >= 0x80 && r <= 0x9f, r == '\u2028', r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', hexDigits[r>>12&0xf], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	if truncated {
		b = append(b, "..."...)
	}
	return append(b, '"')
}

// appendLine appends e as one JSON object with the fields fs, and '\n'.
func appendLine(b []byte, e *Entry, fs []field) []byte {
	b = append(b, '{')
	first := true
	for _, f := range fs {
		if f.id == fResponseFlags && e.ResponseFlags == "" {
			continue // only on responses that ended abnormally
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, f.key...) // `"name":`
		switch f.id {
		case fTime:
			b = append(b, '"')
			b = e.Time.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
			b = append(b, '"')
		case fSourceIdentity:
			b = appendString(b, e.SourceIdentity)
		case fSourceAddress:
			b = appendString(b, e.SourceAddress)
		case fMethod:
			b = appendString(b, e.Method)
		case fAuthority:
			b = appendString(b, e.Authority)
		case fPath:
			b = appendString(b, e.Path)
		case fProtocol:
			b = appendString(b, e.Protocol)
		case fRoute:
			b = appendString(b, e.Route)
		case fStatus:
			b = strconv.AppendInt(b, int64(e.Status), 10)
		case fBytesReceived:
			b = strconv.AppendInt(b, e.BytesReceived, 10)
		case fBytesSent:
			b = strconv.AppendInt(b, e.BytesSent, 10)
		case fDurationMS:
			b = strconv.AppendFloat(b, float64(e.Duration)/float64(time.Millisecond), 'f', 3, 64)
		case fUpstream:
			b = appendString(b, e.Upstream)
		case fRetries:
			b = strconv.AppendInt(b, int64(e.Retries), 10)
		case fUserAgent:
			b = appendString(b, e.UserAgent)
		case fRequestID:
			b = appendString(b, e.RequestID)
		case fAuthzDecision:
			b = appendString(b, e.AuthzDecision)
		case fResponseFlags:
			b = appendString(b, e.ResponseFlags)
		}
	}
	return append(b, '}', '\n')
}
