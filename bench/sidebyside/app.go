package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// appBody is the fixed response of the upstream app: 100 bytes, so the
// table measures the proxies' per-request cost, not bandwidth.
var appBody = []byte(strings.Repeat("x", 99) + "\n")

// runApp serves appBody on addr with keep-alive until SIGTERM. It runs as
// its own process (this binary, re-executed) so its CPU is not counted as
// the orchestrator's.
func runApp(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	clen := []string{strconv.Itoa(len(appBody))}
	ctype := []string{"text/plain; charset=utf-8"}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h["Content-Length"] = clen
			h["Content-Type"] = ctype
			_, _ = w.Write(appBody)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	go func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM, os.Interrupt)
		<-ch
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return fmt.Errorf("sidebyside: app: %w", err)
	}
	return nil
}
