package gitsync_test

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"minimesh/dataplane/gitsync"
)

// A web server beside the sidecar serves /shared/site/current; the syncer
// keeps it at the tip of main.
func Example() {
	s, err := gitsync.New(gitsync.Config{
		Repo:       "https://git.example.com/site.git",
		Ref:        "main",
		Interval:   time.Minute,
		Root:       "/shared/site",
		Link:       "current",
		Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx) }()
	// For /ready: nil once a checkout is live.
	_ = s.Ready()
	fmt.Println(s.Status().Path)
}
