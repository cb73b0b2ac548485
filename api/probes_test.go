package api_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"minimesh/api"
)

func TestParseAppProbes(t *testing.T) {
	tests := []struct {
		name, in, want string // want: substring of the error, "" for valid
	}{
		{"empty", ``, ""},
		{"blank", " \n", ""},
		{"http", `{"/app-health/app/livez":{"httpGet":{"path":"/healthz","port":8080,"scheme":"HTTP","httpHeaders":[{"name":"X-A","value":"b"}]},"timeoutSeconds":3}}`, ""},
		{"https", `{"/app-health/app/startupz":{"httpGet":{"port":443,"scheme":"HTTPS"},"timeoutSeconds":60}}`, ""},
		{"tcp", `{"/app-health/app-2/readyz":{"tcpSocket":{"port":8080}}}`, ""},
		{"unknown field", `{"/app-health/app/livez":{"httpGet":{"port":8080,"host":"evil"}}}`, "unknown field"},
		{"trailing data", `{} {}`, "after the JSON"},
		{"not json", `nope`, "invalid character"},
		{"bad path", `{"/healthz":{"tcpSocket":{"port":1}}}`, "/app-health/<container>"},
		{"bad kind", `{"/app-health/app/alive":{"tcpSocket":{"port":1}}}`, "/app-health/<container>"},
		{"upper container", `{"/app-health/App/livez":{"tcpSocket":{"port":1}}}`, "/app-health/<container>"},
		{"neither", `{"/app-health/app/livez":{}}`, "exactly one"},
		{"both", `{"/app-health/app/livez":{"httpGet":{"port":1},"tcpSocket":{"port":1}}}`, "exactly one"},
		{"port 0", `{"/app-health/app/livez":{"httpGet":{"port":0}}}`, "not a TCP port"},
		{"port big", `{"/app-health/app/livez":{"tcpSocket":{"port":65536}}}`, "not a TCP port"},
		{"scheme", `{"/app-health/app/livez":{"httpGet":{"port":1,"scheme":"ftp"}}}`, "scheme"},
		{"relative path", `{"/app-health/app/livez":{"httpGet":{"port":1,"path":"healthz"}}}`, "must start with /"},
		{"path with newline", `{"/app-health/app/livez":{"httpGet":{"port":1,"path":"/a\nb"}}}`, "control"},
		{"header injection", `{"/app-health/app/livez":{"httpGet":{"port":1,"httpHeaders":[{"name":"X","value":"a\r\nEvil: 1"}]}}}`, "not a valid header"},
		{"bad header name", `{"/app-health/app/livez":{"httpGet":{"port":1,"httpHeaders":[{"name":"X Y","value":"a"}]}}}`, "not a valid header"},
		{"timeout", `{"/app-health/app/livez":{"tcpSocket":{"port":1},"timeoutSeconds":61}}`, "timeoutSeconds"},
		{"negative timeout", `{"/app-health/app/livez":{"tcpSocket":{"port":1},"timeoutSeconds":-1}}`, "timeoutSeconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := api.ParseAppProbes(tt.in)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseAppProbes = %v, want an error containing %q", err, tt.want)
			}
			if !errors.Is(err, api.ErrInvalid) {
				t.Errorf("%v does not wrap api.ErrInvalid", err)
			}
		})
	}
}

// The first bad probe in sorted order is the one named, every time.
func TestAppProbesValidateNamesFirstPath(t *testing.T) {
	p := api.AppProbes{
		api.AppProbePath("b", "livez"): {},
		api.AppProbePath("a", "livez"): {TCPSocket: &api.TCPSocketProbe{Port: 0}},
		api.AppProbePath("c", "livez"): {TCPSocket: &api.TCPSocketProbe{Port: 1}},
	}
	for range 20 {
		err := p.Validate()
		if err == nil || !strings.Contains(err.Error(), "app probe /app-health/a/livez: port 0") {
			t.Fatalf("Validate = %v, want the error of /app-health/a/livez", err)
		}
	}
	if got := api.AppProbePath("web", "readyz"); got != "/app-health/web/readyz" || !strings.HasPrefix(got, api.AppHealthPrefix) {
		t.Errorf("AppProbePath = %q", got)
	}
}

func FuzzParseAppProbes(f *testing.F) {
	f.Add(`{"/app-health/app/livez":{"httpGet":{"path":"/healthz","port":8080}}}`)
	f.Add(`{"/app-health/a/readyz":{"tcpSocket":{"port":1},"timeoutSeconds":60}}`)
	f.Add(`{"/app-health/a/startupz":{"httpGet":{"port":443,"scheme":"HTTPS","httpHeaders":[{"name":"Host","value":"x"}]}}}`)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := api.ParseAppProbes(s)
		if err != nil {
			if !errors.Is(err, api.ErrInvalid) {
				t.Fatalf("%q: %v does not wrap api.ErrInvalid", s, err)
			}
			return
		}
		// What is accepted survives a round trip and stays valid.
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := api.ParseAppProbes(string(b)); err != nil && len(p) > 0 {
			t.Fatalf("%q re-encoded as %s: %v", s, b, err)
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("%q: %v", s, err)
		}
	})
}
