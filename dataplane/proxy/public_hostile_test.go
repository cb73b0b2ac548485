package proxy

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"minimesh/dataplane/applink/applinktest"
)

// The same hostile app behind the public port: the client gets the
// answer, 502 or 504 (or a response that fails midway), and the next
// request, by the direct path or ReverseProxy, gets its own answer.
func TestPublicHostileApp(t *testing.T) {
	a := applinktest.NewHostileApp(t)
	ln, cfg := startPublicWith(t, PublicConfig{App: a.Addr(), Limits: Limits{ResponseHeader: 300 * time.Millisecond}})
	client := tlsClient(t, cfg, false)
	base := "https://" + ln.Addr().String()
	do := func(method, path string) (int, string, error) {
		t.Helper()
		var body io.Reader
		if method == http.MethodPost {
			body = strings.NewReader("payload") // ReverseProxy's path
		}
		req, _ := http.NewRequest(method, base+path, body)
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	for i, tc := range []struct {
		method, path string
		code         int // 0: the response fails
		body         string
	}{
		{http.MethodGet, "/extra", 200, "ok"},
		{http.MethodPost, "/extra", 200, "ok"},
		{http.MethodGet, "/short-cl", 200, "ok"},
		{http.MethodPost, "/short-cl", 200, "ok"},
		{http.MethodHead, "/head-body", 200, ""},
		{http.MethodGet, "/te-cl", 200, "abc"},
		{http.MethodGet, "/close-mid-headers", http.StatusBadGateway, "bad gateway\n"},
		{http.MethodGet, "/1xx-storm", http.StatusBadGateway, "bad gateway\n"},
		{http.MethodGet, "/slow-headers", http.StatusGatewayTimeout, "gateway timeout\n"},
		{http.MethodGet, "/close-mid-body", 0, ""},
	} {
		code, body, err := do(tc.method, tc.path)
		if tc.code == 0 {
			if err == nil {
				t.Errorf("%s %s: %d %q, want a response that fails", tc.method, tc.path, code, body)
			}
		} else if err != nil || code != tc.code || body != tc.body {
			t.Errorf("%s %s: %d %q %v, want %d %q", tc.method, tc.path, code, body, err, tc.code, tc.body)
		}
		if tc.path == "/slow-headers" {
			<-a.Wrote
			<-a.Cut
		}
		for _, m := range []string{http.MethodGet, http.MethodPost} {
			code, body, err := do(m, fmt.Sprintf("/ok?id=%d", i))
			if want := fmt.Sprintf("ok %d", i); err != nil || code != http.StatusOK || body != want {
				t.Fatalf("%s after %s %s: %d %q %v, want 200 %q", m, tc.method, tc.path, code, body, err, want)
			}
		}
	}
}
