package logadapter

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"

	"minimesh/dataplane/logrecord"
	meshv1 "minimesh/proto/mesh/v1"
)

// appendString appends s as a JSON string (logrecord.AppendString): an
// app's bytes can never forge a record of the output. s is only read.
func appendString(b []byte, s []byte) []byte {
	return logrecord.AppendString(b, unsafe.String(unsafe.SliceData(s), len(s)))
}

// ours are the keys the adapter writes; an app's key of the same name is
// kept as "app_<key>".
var ours = map[string]bool{"source": true, "record_id": true, "service": true, "identity": true,
	"pod": true, "file": true, "truncated": true}

// kv is one field parsed from a record: a JSON value (raw) or a string.
type kv struct {
	key  []byte
	val  []byte
	json bool // val is a JSON value, written as it is
}

// recordMeta is what the adapter adds to each record.
type recordMeta struct {
	id        []byte
	service   string
	identity  string
	pod       string
	file      string
	truncated bool
	time      time.Time
}

// encoder builds records; one per Adapter (single goroutine), its buffers
// reused.
type encoder struct {
	buf     []byte
	kvs     []kv
	compact bytes.Buffer
}

// encode returns the JSON record for text (the record's lines joined by
// '\n'); the result is valid until the next call.
func (e *encoder) encode(sp *Spec, text []byte, m *recordMeta) []byte {
	e.kvs = e.kvs[:0]
	first, rest := text, []byte(nil)
	if i := bytes.IndexByte(text, '\n'); i >= 0 {
		first, rest = text[:i], text[i+1:]
	}
	parsed := false
	switch sp.format {
	case meshv1.LogFormat_LOG_FORMAT_JSON:
		if parsed = e.parseJSON(text); parsed {
			rest = nil
		} else {
			parsed = e.parseJSON(first)
		}
	case meshv1.LogFormat_LOG_FORMAT_LOGFMT:
		parsed = e.parseLogfmt(first)
	case meshv1.LogFormat_LOG_FORMAT_REGEX:
		// The whole record first (a pattern with (?s) takes a stack trace
		// into a group), else its first line.
		if parsed = e.parseRegex(sp, text); parsed {
			rest = nil
		} else {
			parsed = e.parseRegex(sp, first)
		}
	}
	b := append(e.buf[:0], `{"source":"app","record_id":"`...)
	b = append(b, m.id...)
	b = append(b, '"')
	str := func(k, v string) {
		b = append(b, `,"`...)
		b = append(b, k...)
		b = append(b, `":`...)
		b = logrecord.AppendString(b, v)
	}
	if sp.fields[0] {
		str("service", m.service)
	}
	if sp.fields[1] {
		str("identity", m.identity)
	}
	if sp.fields[2] {
		str("pod", m.pod)
	}
	if sp.fields[3] {
		str("file", m.file)
	}
	if !parsed {
		b = append(b, `,"time":"`...)
		b = m.time.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, `","message":`...)
		b = appendString(b, text)
	} else {
		hasTime := false
		for _, f := range e.kvs {
			hasTime = hasTime || string(f.key) == "time"
		}
		if !hasTime {
			b = append(b, `,"time":"`...)
			b = m.time.UTC().AppendFormat(b, time.RFC3339Nano)
			b = append(b, '"')
		}
		for _, f := range e.kvs {
			b = append(b, ',')
			k := f.key
			if ours[string(k)] {
				k = append([]byte("app_"), k...)
			}
			b = appendString(b, k)
			b = append(b, ':')
			if f.json {
				b = append(b, f.val...)
			} else {
				b = appendString(b, f.val)
			}
		}
		if len(rest) > 0 {
			b = append(b, `,"continuation":`...)
			b = appendString(b, rest)
		}
	}
	if m.truncated {
		b = append(b, `,"truncated":true`...)
	}
	b = append(b, '}')
	e.buf = b
	return b
}

// add keeps the first of duplicate keys.
func (e *encoder) add(k, v []byte, raw bool) {
	for _, f := range e.kvs {
		if bytes.Equal(f.key, k) {
			return
		}
	}
	e.kvs = append(e.kvs, kv{key: k, val: v, json: raw})
}

// parseJSON reads one JSON object: compacted (which also validates it),
// then its top-level members are kept in their order, values as they are.
// Anything else is not parsed (the record becomes message).
func (e *encoder) parseJSON(s []byte) bool {
	s = bytes.TrimSpace(s)
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' || !utf8.Valid(s) {
		return false
	}
	e.compact.Reset()
	if err := json.Compact(&e.compact, s); err != nil {
		return false
	}
	c := e.compact.Bytes()
	// c is valid and compact: {"k":v,"k":v}
	i := 1
	for i < len(c)-1 {
		k0 := i
		i = skipString(c, i)
		key := c[k0+1 : i-1]
		i++ // ':'
		v0 := i
		i = skipValue(c, i)
		if bytes.IndexByte(key, '\\') >= 0 {
			var k string
			if json.Unmarshal(c[k0:v0-1], &k) != nil {
				return false
			}
			key = []byte(k)
		}
		e.add(key, c[v0:i], true)
		if i < len(c) && c[i] == ',' {
			i++
		}
	}
	return true
}

// skipString returns the index after the JSON string starting at c[i].
func skipString(c []byte, i int) int {
	for i++; i < len(c); i++ {
		switch c[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// skipValue returns the index after the compact JSON value at c[i].
func skipValue(c []byte, i int) int {
	depth := 0
	for i < len(c) {
		switch c[i] {
		case '"':
			i = skipString(c, i)
			if depth == 0 {
				return i
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i
			}
			depth--
			if depth == 0 {
				return i + 1
			}
		case ',':
			if depth == 0 {
				return i
			}
		}
		i++
	}
	return i
}

// parseLogfmt reads key=value pairs, values bare or double-quoted (with
// \" \\ \n \t escapes); a bare key is true. Anything else is not parsed.
func (e *encoder) parseLogfmt(s []byte) bool {
	i := 0
	for {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i >= len(s) {
			break
		}
		k0 := i
		for i < len(s) && s[i] > ' ' && s[i] != '=' && s[i] != '"' {
			i++
		}
		if i == k0 {
			return false
		}
		key := s[k0:i]
		if i >= len(s) || s[i] != '=' {
			if i < len(s) && s[i] != ' ' && s[i] != '\t' {
				return false
			}
			e.add(key, []byte("true"), true)
			continue
		}
		i++
		if i < len(s) && s[i] == '"' {
			i++
			var v []byte
			closed := false
			for i < len(s) {
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					switch s[i+1] {
					case 'n':
						v = append(v, '\n')
					case 't':
						v = append(v, '\t')
					default:
						v = append(v, s[i+1])
					}
					i += 2
					continue
				}
				if c == '"' {
					closed = true
					i++
					break
				}
				v = append(v, c)
				i++
			}
			if !closed {
				return false
			}
			if v == nil {
				v = []byte{}
			}
			e.add(key, v, false)
			continue
		}
		v0 := i
		for i < len(s) && s[i] != ' ' && s[i] != '\t' {
			i++
		}
		e.add(key, s[v0:i], false)
	}
	return len(e.kvs) > 0
}

// parseRegex takes the pattern's named groups that matched.
func (e *encoder) parseRegex(sp *Spec, s []byte) bool {
	m := sp.pattern.FindSubmatchIndex(s)
	if m == nil {
		return false
	}
	for i, name := range sp.groups {
		if name == "" || m[2*i] < 0 {
			continue
		}
		e.add([]byte(name), s[m[2*i]:m[2*i+1]], false)
	}
	return len(e.kvs) > 0
}

// recordID is the record's stable ID: "<inode>-<generation>-<offset>",
// the file's inode, how many times that file was truncated (copytruncate
// rotation; 0 first), and the byte offset of the record's first byte. The
// same bytes of the same file always get the same ID, across restarts.
func appendRecordID(b []byte, ino, gen uint64, off int64) []byte {
	b = strconv.AppendUint(b, ino, 10)
	b = append(b, '-')
	b = strconv.AppendUint(b, gen, 10)
	b = append(b, '-')
	return strconv.AppendInt(b, off, 10)
}
