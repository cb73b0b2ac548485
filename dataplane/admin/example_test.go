package admin_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"minimesh/dataplane/admin"
)

func Example() {
	srv, err := admin.New(admin.Config{Ready: func() error { return fmt.Errorf("no SVID yet") }})
	if err != nil {
		panic(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/ready", nil)
	req.Host = "localhost:15000" // the admin port answers only to its own names
	srv.ServeHTTP(rec, req)
	fmt.Print(rec.Code, " ", rec.Body.String())
	// Output: 503 not ready: no SVID yet
}
