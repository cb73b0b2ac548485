package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"

	"testing"
	"time"

	"minimesh/dataplane/edge"
)

// A client that leaves the public port over HTTP/1.1 while the app is
// still thinking: the proxy notices (our own loop: its watch, after 1 s;
// net/http's server: at once), drops its request to the app, whose own
// request's context is then cancelled. Both servers behave the same.
func TestPublicClientGoneAbortsAppRequest(t *testing.T) {
	for _, mode := range []string{"own", "nethttp"} {
		t.Run(mode, func(t *testing.T) {
			t.Setenv(edge.HTTP1Env, mode)
			entered, appGone := make(chan struct{}, 1), make(chan error, 1)
			appLn := listenLocal(t)
			app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				entered <- struct{}{}
				select {
				case <-r.Context().Done():
					appGone <- r.Context().Err()
				case <-time.After(10 * time.Second):
					appGone <- nil
				}
			}), ReadHeaderTimeout: 5 * time.Second}
			go func() { _ = app.Serve(appLn) }()
			t.Cleanup(func() { _ = app.Close() })
			pubLn, pubTLS := startPublicWith(t, PublicConfig{App: appLn.Addr().String()})
			pubTLS.NextProtos = []string{"http/1.1"}
			c, err := tls.Dial("tcp", pubLn.Addr().String(), pubTLS)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.WriteString(c, "GET /think HTTP/1.1\r\nHost: api\r\n\r\n")
			select {
			case <-entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the request did not reach the app")
			}
			_ = c.Close()
			if err := <-appGone; !errors.Is(err, context.Canceled) {
				t.Fatalf("the app's request after the client left: %v, want canceled", err)
			}
		})
	}
}
