package proxy

import (
	"io"
	"net/http"
	"strings"

	"minimesh/dataplane/applink"
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
	resp, err := f.direct.Do(r, head)
	if err != nil {
		f.errorHandler(w, r, err)
		return
	}
	f.answer(w, resp)
}

// answer hands resp to w as ReverseProxy would: hop-by-hop fields
// dropped, the header map handed over without copying, the body copied
// through a pooled buffer, trailers passed on. A body cut midway aborts the
// handler (http.ErrAbortHandler). Both direct paths (the inbound's to the
// app, the outbound's to the remote proxy) answer with it.
func (f *forwarder) answer(w http.ResponseWriter, resp *http.Response) {
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
	stream := resp.ContentLength < 0 || applink.HasPrefixFold(resp.Header.Get("Content-Type"), "text/event-stream")
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
