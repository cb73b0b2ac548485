package redirect_test

// The network-namespace test runs this test binary again, inside the
// namespaces, in one of these roles. TestMain dispatches on the
// environment variable before any test runs.

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"minimesh/dataplane/proxy"
	"minimesh/dataplane/redirect"
)

const helperEnv = "MINIMESH_REDIRECT_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		if err := helper(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helper runs one role until it is done or killed.
func helper(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("no role")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	switch role, args := args[0], args[1:]; role {
	case "server":
		return serve(ctx, args)
	case "proxy":
		return runProxy(ctx, args)
	case "client":
		return client(args)
	case "redirect":
		return redirect.Main(ctx, args, os.Stdout, os.Stderr)
	default:
		return fmt.Errorf("unknown role %q", role)
	}
}

// serve: NAME ADDR... Each accepted connection is answered with one line
// saying who connected and, when the peer socket is in this network
// namespace, which user owns it; then the connection is closed.
func serve(ctx context.Context, args []string) error {
	name, addrs := args[0], args[1:]
	g, ctx := errgroup.WithContext(ctx)
	for _, addr := range addrs {
		ln, err := net.Listen("tcp4", addr)
		if err != nil {
			return err
		}
		context.AfterFunc(ctx, func() { _ = ln.Close() })
		g.Go(func() error {
			for {
				c, err := ln.Accept()
				if err != nil {
					return nil
				}
				local := c.LocalAddr().(*net.TCPAddr).AddrPort()
				remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
				uid := socketOwner(remote, local)
				fmt.Fprintf(c, "%s port=%d saw=%s peer_uid=%s\n", name, local.Port(), remote, uid)
				_ = c.Close()
			}
		})
	}
	fmt.Println("ready")
	return g.Wait()
}

// socketOwner finds, in /proc/net/tcp of this network namespace, the
// socket whose local address is local and remote address remote, and
// returns its owner's UID, or "none" when no such socket is here (the
// peer is in another namespace).
func socketOwner(local, remote netip.AddrPort) string {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return "error:" + err.Error()
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 || fields[0] == "sl" {
			continue
		}
		l, lerr := parseProcAddr(fields[1])
		r, rerr := parseProcAddr(fields[2])
		if lerr == nil && rerr == nil && l == local && r == remote {
			return fields[7]
		}
	}
	return "none"
}

// parseProcAddr parses /proc/net/tcp's "0200D30A:1F90": the IPv4 address
// as a host-order 32-bit hex number of network-order bytes, then the port.
func parseProcAddr(s string) (netip.AddrPort, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	raw, err := hex.DecodeString(h)
	if err != nil || len(raw) != 4 {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], binary.BigEndian.Uint32(raw))
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(netip.AddrFrom4(b), uint16(port)), nil
}

// runProxy: INBOUND OUTBOUND. Two transparent listeners, logging every
// connection as JSON on stdout; the first line says which user we are.
func runProxy(ctx context.Context, args []string) error {
	log := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g, ctx := errgroup.WithContext(ctx)
	for i, addr := range args {
		name := [...]string{"inbound", "outbound"}[i]
		ln, err := net.Listen("tcp4", addr)
		if err != nil {
			return err
		}
		tr, err := proxy.NewTransparent(proxy.TransparentConfig{Listener: ln, Logger: log.With("listener", name)})
		if err != nil {
			return err
		}
		g.Go(func() error { return tr.Run(ctx) })
	}
	log.Info("ready", "uid", os.Getuid())
	return g.Wait()
}

// client: ADDR. Dials, prints everything it reads.
func client(args []string) error {
	c, err := net.DialTimeout("tcp4", args[0], 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.Copy(os.Stdout, c)
	return err
}
