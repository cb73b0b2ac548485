package proxy

import (
	"encoding/hex"
	"math/rand/v2"
	"net/http"
	"strings"
	"unsafe"

	"minimesh/dataplane/applink"
)

// maxRequestID bounds a kept X-Request-Id.
const maxRequestID = 128

// ensureRequestID keeps a valid X-Request-Id (1 to 128 characters of
// letters, digits and "-_.:+/=", one field) and replaces anything else with
// a new random one in UUID form. IDs need to be unique, not secret:
// math/rand/v2's per-thread ChaCha8 is enough and takes no lock.
func ensureRequestID(h http.Header) {
	if v := h[HeaderRequestID]; len(v) == 1 && validRequestID(v[0]) {
		return
	}
	// A non-canonical spelling ("x-request-id" from a raw h2 frame is
	// canonicalised by net/http, but a map built by hand may not be).
	for k := range h {
		if k != HeaderRequestID && len(k) == len(HeaderRequestID) && applink.HasPrefixFold(k, HeaderRequestID) {
			delete(h, k)
		}
	}
	id := new(requestID)
	id.fill()
	h[HeaderRequestID] = id.v[:]
}

// requestID is a new X-Request-Id's field value and its bytes, in one
// allocation (two as []string{string(b)}): v[0] is a string over b, which
// nothing writes after fill.
type requestID struct {
	v [1]string
	b [36]byte
}

func (id *requestID) fill() {
	newRequestID(&id.b)
	id.v[0] = unsafe.String(&id.b[0], len(id.b))
}

func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > maxRequestID {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !requestIDByte[s[i]] {
			return false
		}
	}
	return true
}

// requestIDByte holds the bytes a request ID may have: letters, digits and
// "-_.:+/=".
var requestIDByte = func() (t [256]bool) {
	for c := range t {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.:+/=", byte(c)) >= 0
	}
	return t
}()

// newRequestID writes a random version 4 UUID into out.
func newRequestID(out *[36]byte) {
	var b [16]byte
	a, c := rand.Uint64(), rand.Uint64()
	for i := 0; i < 8; i++ {
		b[i], b[8+i] = byte(a>>(8*i)), byte(c>>(8*i))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:36], b[10:16])
}
