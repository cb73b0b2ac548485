package h1

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// maxChunkLine bounds a chunk-size line (the framing checker's limit).
const maxChunkLine = 256

// maxTrailerBytes bounds the trailer section (net/http's: its reader's
// buffer).
const maxTrailerBytes = 4096

var (
	errBodyClosed = errors.New("h1: read of a request body after its handler returned")
	errChunk      = errors.New("h1: malformed chunked encoding")
	errTrailer    = errors.New("h1: malformed trailer")
)

// body is a request's body, read from the connection's reader on
// whichever goroutine the handler gives it to. One per request: a reader
// still holding it after the handler returned gets errBodyClosed, never
// the next request's bytes.
type body struct {
	mu        sync.Mutex
	c         *conn
	req       *http.Request
	remaining int64 // Content-Length left, or of the current chunk
	chunked   bool
	needCRLF  bool // after a chunk's data
	excess    int64
	eof       bool
	closed    bool
	err       error
	// expect: a 100 Continue is owed before the first read.
	expect bool
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, errBodyClosed
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.eof {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if b.expect {
		b.expect = false
		if err := b.c.sendContinue(); err != nil {
			b.err = err
			return 0, err
		}
	}
	b.c.readIdle.Store(true)
	defer b.c.readIdle.Store(false)
	n, err := b.read(p)
	if err == io.EOF {
		b.c.bodyEOF()
	}
	if err != nil && err != io.EOF {
		// As net/http: a failed read of the connection cancels what is
		// in flight on it (the request's link to the app ends at once).
		b.err = err
		b.c.cancel()
	}
	return n, err
}

func (b *body) read(p []byte) (int, error) {
	br := b.c.br
	if !b.chunked {
		if int64(len(p)) > b.remaining {
			p = p[:b.remaining]
		}
		n, err := br.Read(p)
		b.remaining -= int64(n)
		if b.remaining == 0 {
			b.eof = true
			return n, io.EOF
		}
		if err == io.EOF {
			return n, io.ErrUnexpectedEOF
		}
		return n, err
	}
	for b.remaining == 0 {
		if b.needCRLF {
			var crlf [2]byte
			if _, err := io.ReadFull(br, crlf[:]); err != nil {
				return 0, unexpected(err)
			}
			if crlf != [2]byte{'\r', '\n'} {
				return 0, errChunk
			}
			b.needCRLF = false
		}
		line, err := br.ReadSlice('\n')
		if err != nil {
			if err == bufio.ErrBufferFull {
				return 0, errChunk
			}
			return 0, unexpected(err)
		}
		if len(line) > maxChunkLine+2 || len(line) < 3 || line[len(line)-2] != '\r' {
			return 0, errChunk
		}
		line = line[:len(line)-2]
		digits := 0
		for digits < len(line) && isHex(line[digits]) {
			digits++
		}
		if digits == 0 || digits > 15 || !ValidChunkExt(line[digits:]) {
			return 0, errChunk
		}
		var n int64
		for _, c := range line[:digits] {
			n = n<<4 | int64(unhex(c))
		}
		// net/http's guard against a flood of tiny chunks.
		b.excess += int64(len(line)) + 4 - 16 - 2*n
		b.excess = max(b.excess, 0)
		if b.excess > 16*1024 {
			return 0, errors.New("h1: chunked encoding contains too much non-data")
		}
		if n == 0 {
			if err := b.readTrailer(); err != nil {
				return 0, err
			}
			b.eof = true
			return 0, io.EOF
		}
		b.remaining, b.needCRLF = n, true
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := br.Read(p)
	b.remaining -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// readTrailer reads the trailer section after the last chunk, merged into
// the request's Trailer as net/http does.
func (b *body) readTrailer() error {
	br := b.c.br
	if p, err := br.Peek(2); err != nil {
		return unexpected(err)
	} else if p[0] == '\r' && p[1] == '\n' {
		_, _ = br.Discard(2)
		return nil
	}
	var sect []byte
	for {
		line, err := br.ReadSlice('\n')
		if len(sect)+len(line) > maxTrailerBytes {
			return errTrailer
		}
		if err != nil {
			return unexpected(err)
		}
		sect = append(sect, line...)
		if len(line) < 2 || line[len(line)-2] != '\r' {
			return errTrailer
		}
		if len(line) == 2 {
			break
		}
	}
	t := http.Header{}
	rest := string(sect[:len(sect)-4])
	for rest != "" {
		var fl string
		fl, rest, _ = strings.Cut(rest, "\r\n")
		k, v, err := splitField(fl)
		if err != nil {
			return errTrailer
		}
		k = http.CanonicalHeaderKey(k)
		t[k] = append(t[k], v)
	}
	if b.req.Trailer == nil {
		b.req.Trailer = t
	} else {
		for k, vv := range t {
			b.req.Trailer[k] = vv
		}
	}
	return nil
}

func (b *body) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// finish is the loop's end of a request's body, after the handler
// returned: a read still on the network is aborted, and what is left is
// discarded up to 256 KiB. It reports whether the connection can carry
// another request.
func (b *body) finish() bool {
	if !b.mu.TryLock() {
		// A goroutine the handler left behind reads on: stop it.
		b.c.setReadDeadline(aLongTimeAgo)
		b.mu.Lock()
		b.closed = true
		b.mu.Unlock()
		return false
	}
	defer b.mu.Unlock()
	b.closed = true
	if b.err != nil {
		return false
	}
	if b.eof {
		return true
	}
	if b.expect {
		// The client waits for a 100 Continue it will not get; its body,
		// if it sends it anyway, must not be read as a request.
		return false
	}
	b.c.readIdle.Store(true)
	defer b.c.readIdle.Store(false)
	buf := make([]byte, 4096)
	var total int64
	for total <= maxDiscard {
		n, err := b.read(buf)
		total += int64(n)
		if err == io.EOF {
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}

const maxDiscard = 256 << 10

var aLongTimeAgo = time.Unix(1, 0)

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// ValidChunkExt reports whether b, what follows a chunk's size on its
// line, is of RFC 9112's grammar (section 7.1.1), only trailing
// whitespace without a ";". It is the one rule h1 and the framing checker
// (edge.Strict) both apply.
func ValidChunkExt(b []byte) bool {
	i := 0
	ws := func() {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
			i++
		}
	}
	token := func() bool {
		j := i
		for i < len(b) && b[i] < 0x80 && isTokenByte(b[i]) {
			i++
		}
		return i > j
	}
	if len(b) > 0 && b[0] != ';' {
		ws()
		return i == len(b)
	}
	for {
		ws()
		if i == len(b) {
			return true
		}
		if b[i] != ';' {
			return false
		}
		i++
		ws()
		if !token() {
			return false
		}
		ws()
		if i == len(b) || b[i] != '=' {
			continue
		}
		i++
		ws()
		if i < len(b) && b[i] == '"' {
			if !quotedString(b, &i) {
				return false
			}
		} else if !token() {
			return false
		}
	}
}

// quotedString advances *i over the quoted-string starting at b[*i].
func quotedString(b []byte, i *int) bool {
	for j := *i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			*i = j + 1
			return true
		case c == '\\':
			j++
			if j == len(b) || b[j] != '\t' && (b[j] < 0x20 || b[j] == 0x7f) {
				return false
			}
		case c != '\t' && (c < 0x20 || c == 0x7f):
			return false
		}
	}
	return false
}

func isTokenByte(c byte) bool { return httpguts.IsTokenRune(rune(c)) }
