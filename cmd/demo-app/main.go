// Command demo-app is the sample application of `make demo`: an unmodified
// HTTP app that knows nothing of the mesh. `serve` runs it (optionally
// calling another service through its sidecar's upstream port), `get`
// fetches a URL (so the demo needs no curl) and `gencert` writes a
// self-signed certificate for the public HTTPS port.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: demo-app serve|get|gencert [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "get":
		err = get(os.Args[2:])
	case "gencert":
		err = gencert(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo-app:", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	name := fs.String("name", "app", "the service name this app reports")
	listen := fs.String("listen", "127.0.0.1:8080", "listen address")
	call := fs.String("call", "", "URL of another service (through the sidecar) to call on /call")
	logFile := fs.String("log", "", "append a log line per request to this file (a Python-style stack trace for paths under /fail), for the proxy's LogAdapter")
	_ = fs.Parse(args)
	client := &http.Client{Timeout: 5 * time.Second}
	mux := http.NewServeMux()
	var requests, failures atomic.Int64
	var logMu sync.Mutex
	logLine := func(r *http.Request) {
		if *logFile == "" {
			return
		}
		line := fmt.Sprintf("%s INFO %s %s\n", time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), r.Method, r.URL.Path)
		if strings.HasPrefix(r.URL.Path, "/fail") {
			line = fmt.Sprintf("%s ERROR %s %s failed\nTraceback (most recent call last):\n  File \"app.py\", line 42, in handle\n    order = orders[key]\nKeyError: %q\n",
				time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), r.Method, r.URL.Path, r.URL.Path)
		}
		logMu.Lock()
		defer logMu.Unlock()
		if f, err := os.OpenFile(*logFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			_, _ = f.WriteString(line)
			_ = f.Close()
		}
	}
	// The app's own metrics, in the Prometheus text format (merged into
	// its proxy's /metrics by --app-metrics or a Service's spec.metrics).
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "# HELP demo_requests_total Requests this app answered.\n# TYPE demo_requests_total counter\ndemo_requests_total{outcome=\"ok\"} %d\ndemo_requests_total{outcome=\"failed\"} %d\n", requests.Load(), failures.Load())
	})
	mux.HandleFunc("/fail/", func(w http.ResponseWriter, r *http.Request) {
		failures.Add(1)
		logLine(r)
		http.Error(w, "failed (see the app's log)", http.StatusInternalServerError)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		logLine(r)
		writeJSON(w, map[string]any{"service": *name, "path": r.URL.Path, "peer": r.Header.Get("X-Mesh-Peer-Id"), "tls_by_sidecar": r.Header.Get("X-Forwarded-Proto") == "https"})
	})
	mux.HandleFunc("/call", func(w http.ResponseWriter, r *http.Request) {
		if *call == "" {
			http.Error(w, "no --call configured", http.StatusNotFound)
			return
		}
		resp, err := client.Get(*call)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		var body any
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		writeJSON(w, map[string]any{"service": *name, "called": *call, "status": resp.StatusCode, "answer": body})
	})
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func get(args []string) error {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	cacert := fs.String("cacert", "", "PEM file of the CA to trust for https")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		return errors.New("get needs one URL")
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if *cacert != "" {
		b, err := os.ReadFile(*cacert)
		if err != nil {
			return err
		}
		tc.RootCAs = x509.NewCertPool()
		tc.RootCAs.AppendCertsFromPEM(b)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	resp, err := client.Get(fs.Arg(0))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	fmt.Printf("%s %s\n%s", resp.Proto, resp.Status, b)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func gencert(args []string) error {
	fs := flag.NewFlagSet("gencert", flag.ExitOnError)
	certFile := fs.String("cert", "tls.crt", "certificate output")
	keyFile := fs.String("key", "tls.key", "key output (0600)")
	_ = fs.Parse(args)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(*keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(*certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}
