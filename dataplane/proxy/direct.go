package proxy

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"minimesh/dataplane/applink"
	"minimesh/dataplane/h1"
	"minimesh/dataplane/internal/resphead"
	"minimesh/dataplane/meshlink"
)

// The direct path forwards a request without a body to the app on the
// handler's goroutine: its head is written to the app straight from the
// incoming request, filtered as it goes, and the app's answer is copied
// back. It is what httputil.ReverseProxy does for such a request, without
// cloning the request and its header map, building the outgoing header and
// sorting it: about a third of a hop's allocations. Requests with a body,
// upgrades, Expect: 100-continue, request trailers and HTTP/2 to the app
// keep ReverseProxy.

// forwardDirect sends r to the app by the direct path and copies the answer
// to w. Errors are answered by errorHandler; a body cut midway aborts the
// handler (http.ErrAbortHandler), so the client sees the response fail.
func (f *forwarder) forwardDirect(w http.ResponseWriter, r *http.Request, head *applink.Head) {
	head.W = w
	raw := getFields(w)
	defer putFields(raw)
	head.Raw = raw.fields()
	head.Affinity = affinity(w)
	resp, err := f.direct.Do(r, head)
	head.Raw, head.Affinity = nil, nil
	if err != nil {
		f.errorHandler(w, r, err)
		return
	}
	f.answer(w, resp, raw)
}

// affinity is the client connection's applink.Affinity (keptOf); nil
// when w is not h1's. A keep-alive client's requests then reach the app on
// one connection, as through a proxy with an app connection per client
// connection, without the pool's lock on each.
func affinity(w http.ResponseWriter) *applink.Affinity {
	if k := keptOf(w); k != nil {
		return &k.aff
	}
	return nil
}

// kept is what a client connection keeps between its requests, in its
// dataplane/h1 Keeper slot (made on its first request): its app
// connection, and what its requests served from their heads are built in
// (servehead.go).
type kept struct {
	aff    applink.Affinity
	tmpl   *http.Request // made once per connection (kept.request)
	req    *http.Request
	url    url.URL
	fields []byte
	// clientIP is the client's address (applink.ClientIP), found on the
	// first request served from its head.
	clientIP string
}

// Release hands the app connection back to its pool (h1 calls it when the
// client connection ends).
func (k *kept) Release() { k.aff.Release() }

// keptOf is w's connection's kept; nil when w is not h1's (under the
// forwarder's recorder and an exchange of the inbound or the access log).
func keptOf(w http.ResponseWriter) *kept {
	if rec, ok := w.(*recorder); ok {
		w = rec.ResponseWriter
	}
	if ex, ok := w.(*inExchange); ok {
		w = ex.ResponseWriter
	}
	kr, ok := w.(h1.Keeper)
	if !ok {
		return nil
	}
	slot := kr.Kept()
	k, ok := (*slot).(*kept)
	if !ok {
		if *slot != nil {
			return nil // someone else's
		}
		k = new(kept)
		*slot = k
	}
	return k
}

// The answer's head as lines. When the client's writer is dataplane/h1's,
// wrapped by nothing but the forwarder's recorder and an inExchange, and
// nothing has set a field of the answer yet, the links read a common
// answer head (dataplane/internal/resphead) into Fields instead of a
// header map, and answer hands its lines to the writer (h1.LinesWriter):
// no map, no strings, no copy of the fields from one map to another,
// nothing to iterate when the head goes out; the fields go in the order
// the app (or the remote proxy) sent them.
var fieldsPool = sync.Pool{New: func() any { return new(lineFields) }}

// lineFields is an answer's head as lines and the writer that takes them
// (linesWriter's, found once per request).
type lineFields struct {
	resphead.Fields
	lw linesResponseWriter
}

// linesResponseWriter is a writer that takes an answer's head as lines.
type linesResponseWriter interface {
	http.ResponseWriter
	h1.LinesWriter
}

// fields is f's Fields, nil for a nil f.
func (f *lineFields) fields() *resphead.Fields {
	if f == nil {
		return nil
	}
	return &f.Fields
}

// writer is the writer found by getFields when it still takes a head as
// lines (no field of the answer set since), else nil.
func (f *lineFields) writer() linesResponseWriter {
	if f == nil || len(f.lw.Header()) != 0 {
		return nil
	}
	return f.lw
}

// getFields is a pooled lineFields when w takes a head as lines, else nil.
func getFields(w http.ResponseWriter) *lineFields {
	lw := linesWriter(w)
	if lw == nil {
		return nil
	}
	f := fieldsPool.Get().(*lineFields)
	f.lw = lw
	return f
}

func putFields(f *lineFields) {
	if f != nil && cap(f.Lines) <= 16<<10 {
		f.ContentType = nil
		f.lw = nil
		fieldsPool.Put(f)
	}
}

// linesWriter is w as an h1.LinesWriter (under the forwarder's recorder
// and an exchange of the inbound or the access log only) with no header
// field set yet; nil otherwise.
func linesWriter(w http.ResponseWriter) linesResponseWriter {
	if rec, ok := w.(*recorder); ok {
		w = rec.ResponseWriter
	}
	if ex, ok := w.(*inExchange); ok {
		if _, ok := ex.ResponseWriter.(h1.LinesWriter); !ok || len(ex.Header()) != 0 {
			return nil
		}
		return ex
	}
	lw, ok := w.(linesResponseWriter)
	if !ok || len(w.Header()) != 0 {
		return nil
	}
	return lw
}

// answer hands resp to w as ReverseProxy would: hop-by-hop fields
// dropped, the header map handed over without copying, the body copied
// through a pooled buffer, trailers passed on. A body cut midway aborts the
// handler (http.ErrAbortHandler). Both direct paths (the inbound's to the
// app, the outbound's to the remote proxy) answer with it.
//
// A response without a header map came as lines in raw (getFields): they
// go to the writer as they are when it still takes them, else into a map.
func (f *forwarder) answer(w http.ResponseWriter, resp *http.Response, raw *lineFields) {
	if resp.Header == nil && raw != nil {
		if lw := raw.writer(); lw != nil {
			if rec, ok := w.(*recorder); ok && rec.code == 0 {
				rec.code = resp.StatusCode
			}
			lw.WriteHeaderLines(resp.StatusCode, raw.Lines, resp.ContentLength, raw.ContentType != nil, raw.HasDate)
			// Server-sent events go to the client as they come.
			stream := len(raw.ContentType) >= len(eventStream) &&
				strings.EqualFold(string(raw.ContentType[:len(eventStream)]), eventStream)
			err := copyBody(w, resp.Body, stream)
			_ = resp.Body.Close()
			if err != nil {
				panic(http.ErrAbortHandler)
			}
			return // no trailers: a head with a Trailer field is never taken
		}
		resp.Header = raw.Header(resp.ContentLength)
	}
	applink.DropHopByHop(resp.Header)
	dst := w.Header()
	for k, vv := range resp.Header {
		if cur := dst[k]; len(cur) > 0 {
			dst[k] = append(cur, vv...)
		} else {
			dst[k] = vv // the response is ours: no copy
		}
	}
	announced := len(resp.Trailer)
	if announced > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		dst.Add("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(resp.StatusCode)
	// A body of unknown length (a stream) or server-sent events go to
	// the client as they come.
	stream := resp.ContentLength < 0 || applink.HasPrefixFold(resp.Header.Get("Content-Type"), eventStream)
	if err := copyBody(w, resp.Body, stream); err != nil {
		_ = resp.Body.Close()
		panic(http.ErrAbortHandler)
	}
	_ = resp.Body.Close() // fills resp.Trailer
	if len(resp.Trailer) == 0 {
		return
	}
	// Force chunking, so net/http does not compute a length for a short
	// body and drop the trailers; then trailers the app announced go by
	// their names, any others with http.TrailerPrefix.
	_ = http.NewResponseController(w).Flush()
	for k, vv := range resp.Trailer {
		if len(resp.Trailer) != announced {
			k = http.TrailerPrefix + k
		}
		dst[k] = vv
	}
}

const eventStream = "text/event-stream"

// copyBody copies the app's body to the client through a pooled buffer,
// flushing after every read when stream is set.
func copyBody(w http.ResponseWriter, body io.Reader, stream bool) error {
	buf := meshlink.BufferPool{}.Get()
	defer meshlink.BufferPool{}.Put(buf)
	var flush func() error
	if stream {
		flush = http.NewResponseController(w).Flush
	}
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if flush != nil {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}
