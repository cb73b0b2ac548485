package accesslog_test

import (
	"os"
	"time"

	"minimesh/api"
	"minimesh/dataplane/accesslog"
	meshv1 "minimesh/proto/mesh/v1"
)

func Example() {
	al := accesslog.New(accesslog.Config{Output: os.Stdout})
	err := al.Apply(&api.AccessLog{
		Metadata: api.Metadata{Namespace: "prod", Name: "api"},
		Spec: &meshv1.AccessLogSpec{
			Service: "api", Enabled: true,
			Fields: []string{"time", "source_identity", "method", "path", "status", "duration_ms"},
		},
	})
	if err != nil {
		panic(err)
	}
	al.Log(&accesslog.Entry{
		Time:           time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		SourceIdentity: "spiffe://minimesh.local/ns/prod/sa/web",
		Method:         "GET",
		Path:           "/orders\n{\"forged\":true}",
		Status:         200,
		Duration:       1500 * time.Microsecond,
	})
	// Output:
	// {"time":"2030-01-02T03:04:05.000Z","source_identity":"spiffe://minimesh.local/ns/prod/sa/web","method":"GET","path":"/orders\n{\"forged\":true}","status":200,"duration_ms":1.500}
}
