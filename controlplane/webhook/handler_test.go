package webhook

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"minimesh/internal/inject"
)

// What is not an AdmissionReview is refused with an HTTP error naming why,
// and a body past MaxRequestBytes is not read to its end.
func TestHandlerRefusesBadRequests(t *testing.T) {
	h, err := newHandler(func() inject.Options { return inject.Options{CAPins: []string{"sha256:" + strings.Repeat("ab", 32)}} }, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, method, ctype, body string
		code                      int
		want                      string
	}{
		{"GET", http.MethodGet, "application/json", "", http.StatusMethodNotAllowed, "takes POST"},
		{"YAML", http.MethodPost, "application/yaml", "{}", http.StatusUnsupportedMediaType, "want application/json"},
		{"too large", http.MethodPost, "application/json", `{"x":"` + strings.Repeat("a", MaxRequestBytes) + `"}`, http.StatusRequestEntityTooLarge, "larger than"},
		{"not JSON", http.MethodPost, "application/json", "{", http.StatusBadRequest, "not an AdmissionReview"},
		{"v1beta1", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u"}}`, http.StatusBadRequest, "want admission.k8s.io/v1"},
		{"no request", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest, "without a request"},
		{"no uid", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}`, http.StatusBadRequest, "uid is empty"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, Path, bytes.NewReader([]byte(tt.body)))
			r.Header.Set("Content-Type", tt.ctype)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.code || !strings.Contains(w.Body.String(), tt.want) {
				t.Errorf("%d %q, want %d %q", w.Code, w.Body.String(), tt.code, tt.want)
			}
		})
	}
}
