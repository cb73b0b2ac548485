// Package redact removes secrets from what the proxy shows: URLs (their
// userinfo and the values of credential-like query parameters), text
// that quotes URLs (a git error), and command lines (the values of
// secret flags such as --token, and URLs in any argument).
//
// Command lines are scrubbed by flag name, not by knowing every program:
// a flag or NAME=value argument whose name, lowercased and without its
// dashes, ends in token, password, passwd, secret, apikey, api-key,
// api_key, credential(s) or is one of pass, pwd, auth, authorization — and
// does not end in -file, _file, -path, -dir or -env (those name where the
// secret is, which is what they are for) — has its value replaced by
// <redacted>, whether written --token=X or --token X. A secret a program
// takes another way (mysql's -pSECRET, a bare positional token) is not
// found: the documented way to pass mesh-proxy its join token is
// --token-file or MESH_PROXY_TOKEN, never the command line.
package redact

import (
	"net/url"
	"regexp"
	"strings"
)

// Placeholder replaces every secret.
const Placeholder = "<redacted>"

// URL returns raw with its userinfo removed and the values of its
// credential-like query parameters replaced; raw that is not a URL with a
// scheme and host is returned as is.
func URL(raw string) string {
	if !strings.Contains(raw, "://") {
		return raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		// Unparseable, but it may still carry user:pass@: cut it.
		if i, j := strings.Index(raw, "://"), strings.LastIndex(raw, "@"); j > i {
			return raw[:i+3] + Placeholder + raw[j:]
		}
		return raw
	}
	changed := false
	if u.User != nil {
		u.User = url.User(Placeholder)
		changed = true
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k, vs := range q {
			if secretName(k) || queryKeys[strings.ToLower(k)] {
				for i := range vs {
					vs[i] = Placeholder
				}
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	if !changed {
		return raw
	}
	s := u.String()
	// url.String escapes the placeholder's angle brackets.
	return strings.ReplaceAll(s, url.QueryEscape(Placeholder), Placeholder)
}

// queryKeys are query parameters that carry credentials besides those
// secretName finds (presigned URLs and the like).
var queryKeys = map[string]bool{
	"sig": true, "signature": true, "x-amz-signature": true, "x-amz-credential": true,
	"x-amz-security-token": true, "x-goog-signature": true, "x-goog-credential": true,
	"code": true, "key": true, "sas": true,
}

var urlRE = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>]+`)

// Text returns s with every URL in it redacted by URL.
func Text(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	return urlRE.ReplaceAllStringFunc(s, URL)
}

// secretName reports whether a flag, parameter or variable name names a
// secret value (not where one is kept).
func secretName(name string) bool {
	n := strings.ToLower(strings.TrimLeft(name, "-"))
	for _, suffix := range []string{"-file", "_file", "-path", "_path", "-dir", "_dir", "-env", "_env"} {
		if strings.HasSuffix(n, suffix) {
			return false
		}
	}
	switch n {
	case "pass", "pwd", "auth", "authorization", "p12pass":
		return true
	}
	for _, suffix := range []string{"token", "password", "passwd", "secret", "apikey", "api-key", "api_key", "credential", "credentials", "private-key", "private_key"} {
		if strings.HasSuffix(n, suffix) {
			return true
		}
	}
	return false
}

// Args returns a copy of argv (argv[0] first) with the values of secret
// flags replaced and URLs redacted: "--token=X" and "--token X" both
// become "--token=<redacted>", "DB_PASSWORD=X" becomes
// "DB_PASSWORD=<redacted>".
func Args(argv []string) []string {
	out := make([]string, 0, len(argv))
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		if i == 0 {
			out = append(out, URL(a))
			continue
		}
		if a == "--" {
			// Positional from here on; URLs may still carry credentials.
			for _, rest := range argv[i:] {
				out = append(out, Text(rest))
			}
			break
		}
		name, _, hasValue := strings.Cut(a, "=")
		isFlag := strings.HasPrefix(a, "-") && len(a) > 1
		if hasValue && name != "" && secretName(name) && (isFlag || envName.MatchString(name)) {
			out = append(out, name+"="+Placeholder)
			continue
		}
		if isFlag && !hasValue && secretName(name) && i+1 < len(argv) {
			out = append(out, name+"="+Placeholder)
			i++ // the value
			continue
		}
		out = append(out, Text(a))
	}
	return out
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
