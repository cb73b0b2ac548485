package accesslog

import (
	"strconv"
	"time"
	"unicode/utf8"

	"minimesh/dataplane/logrecord"
)

// MaxFieldBytes caps each string field of a line; a longer value is cut
// (at a character boundary) and ends with "...".
const MaxFieldBytes = 4096

// appendString appends s as a JSON string (logrecord.AppendString), cut
// to MaxFieldBytes at a character boundary and then ending with "...".
func appendString(b []byte, s string) []byte {
	if len(s) <= MaxFieldBytes {
		return logrecord.AppendString(b, s)
	}
	cut := MaxFieldBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	b = logrecord.AppendEscaped(append(b, '"'), s[:cut])
	return append(b, `..."`...)
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
