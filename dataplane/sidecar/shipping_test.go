package sidecar

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

func logShipping(ns, service string) *meshv1.Resource {
	return api.ToProto(&api.LogShipping{Metadata: api.Metadata{Name: "logs", Namespace: ns}, Spec: &meshv1.LogShippingSpec{
		Service: service, Endpoint: "http://127.0.0.1:9000", Bucket: "mesh-logs", PathStyle: true, CredentialsFile: "/etc/s3/credentials",
	}})
}

// A LogShipping for this proxy's service NACKs without --spool-dir, with
// the reason; one for another service is none of its business.
func TestLogShippingNeedsSpoolDir(t *testing.T) {
	s := &Sidecar{cfg: Config{Service: "api", Namespace: "prod", Logger: slog.New(slog.DiscardHandler)}, ap: &applier{}}
	if err := s.addShipping(nil); err != nil {
		t.Fatal(err)
	}
	if s.LogSink() != nil {
		t.Fatal("a log sink without --spool-dir")
	}
	part := s.ap.parts[0]
	_, err := part.Prepare(&meshv1.Snapshot{Version: "1", Resources: []*meshv1.Resource{logShipping("prod", "api")}})
	if err == nil || !strings.Contains(err.Error(), "LogShipping prod/logs") || !strings.Contains(err.Error(), "--spool-dir") {
		t.Fatalf("Prepare: %v, want a NACK naming the LogShipping and --spool-dir", err)
	}
	for _, r := range []*meshv1.Resource{logShipping("prod", "web"), logShipping("dev", "api")} {
		if _, err := part.Prepare(&meshv1.Snapshot{Version: "1", Resources: []*meshv1.Resource{r}}); err != nil {
			t.Errorf("another service's LogShipping: %v", err)
		}
	}
}

// With --spool-dir, the LogShipping switches the sink on and its removal
// off.
func TestLogShippingSwitchesTheSink(t *testing.T) {
	s := &Sidecar{cfg: Config{Service: "api", Namespace: "prod", SpoolDir: filepath.Join(t.TempDir(), "spool"), Pod: "api-0",
		Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()}, ap: &applier{}}
	if err := s.addShipping(nil); err != nil {
		t.Fatal(err)
	}
	sink := s.LogSink()
	if sink == nil || sink.Offer([]byte(`{"a":1}`)) {
		t.Fatal("the sink takes records before any LogShipping")
	}
	part := s.ap.parts[0]
	commit, err := part.Prepare(&meshv1.Snapshot{Version: "1", Resources: []*meshv1.Resource{logShipping("prod", "api")}})
	if err != nil {
		t.Fatal(err)
	}
	commit()
	if !sink.Offer([]byte(`{"a":1}`)) {
		t.Fatal("the sink refuses records with a LogShipping applied")
	}
	commit, err = part.Prepare(&meshv1.Snapshot{Version: "2"})
	if err != nil {
		t.Fatal(err)
	}
	commit()
	if sink.Offer([]byte(`{"a":1}`)) {
		t.Fatal("the sink takes records after the LogShipping was removed")
	}
}

// --spool-dir may be a volume's root that others can write (an emptyDir
// is root's and 0777): the spool is a 0700 directory of our own inside it.
func TestSpoolInsideSharedVolume(t *testing.T) {
	vol := filepath.Join(t.TempDir(), "vol")
	if err := os.Mkdir(vol, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(vol, 0o777); err != nil {
		t.Fatal(err)
	}
	s := &Sidecar{cfg: Config{Service: "api", SpoolDir: vol, Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()}, ap: &applier{}}
	if err := s.addShipping(nil); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(filepath.Join(vol, SpoolSubdir))
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("spool %v %v", fi, err)
	}
	// Someone else's link in its place is refused.
	vol2 := filepath.Join(t.TempDir(), "vol2")
	if err := os.Mkdir(vol2, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(t.TempDir(), filepath.Join(vol2, SpoolSubdir)); err != nil {
		t.Fatal(err)
	}
	s = &Sidecar{cfg: Config{Service: "api", SpoolDir: vol2, Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()}, ap: &applier{}}
	if err := s.addShipping(nil); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("a symlinked spool: %v", err)
	}
}
