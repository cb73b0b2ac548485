package meshctl

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshv1 "minimesh/proto/mesh/v1"
)

// defaultWait is --wait without a value.
const defaultWait = 5 * time.Minute

// waitPoll is how often a --wait asks meshd.
var waitPoll = 500 * time.Millisecond

// addWaitFlag adds --wait[=TIMEOUT] to fs: 0 without it, defaultWait
// with --wait alone.
func addWaitFlag(fs *pflag.FlagSet, d *time.Duration, what string) {
	fs.DurationVar(d, "wait", 0, "wait until "+what+" (--wait alone: "+defaultWait.String()+"; --wait=TIMEOUT)")
	fs.Lookup("wait").NoOptDefVal = defaultWait.String()
}

// poll calls fn every waitPoll until it says done, fails, or timeout
// passes; each call is bounded by --timeout.
func (g *globals) poll(ctx context.Context, timeout time.Duration, what string, fn func(ctx context.Context) (done bool, progress string, err error)) error {
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		cctx, cancel := context.WithTimeout(ctx, g.timeout)
		done, progress, err := fn(cctx)
		cancel()
		if err != nil {
			return err
		}
		if progress != last && progress != "" {
			printf(g.io.Err, "%s\n", progress)
			last = progress
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("--wait: %s: not done after %s: %s", what, timeout, last)
		}
		t := time.NewTimer(waitPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("--wait: %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}

// waitRotation waits until the rotation is idle again, printing each
// change of phase and of the proxies it waits for.
func (g *globals) waitRotation(ctx context.Context, c meshv1.AdminServiceClient, timeout time.Duration) (*meshv1.CAStatusResponse, error) {
	var st *meshv1.CAStatusResponse
	var redialed *grpc.ClientConn
	defer func() {
		if redialed != nil {
			_ = redialed.Close()
		}
	}()
	err := g.poll(ctx, timeout, "root rotation", func(ctx context.Context) (bool, string, error) {
		var err error
		st, err = c.CAStatus(ctx, &meshv1.CAStatusRequest{})
		if code := status.Code(err); code == codes.Unauthenticated || isHandshakeFailure(err) {
			// The rotation moved meshd and the operator credential to the
			// new root (meshd rewrites <data-dir>/operator) and then dropped
			// the old one, which this connection's certificate chains to:
			// read the credential again.
			conn, derr := g.dial()
			if derr != nil {
				return false, "", err
			}
			if redialed != nil {
				_ = redialed.Close()
			}
			redialed = conn
			c = meshv1.NewAdminServiceClient(conn)
			st, err = c.CAStatus(ctx, &meshv1.CAStatusRequest{})
		}
		if err != nil {
			return false, "", err
		}
		if st.GetPhase() == "idle" {
			return true, "phase idle: rotation done, active root " + st.GetActive().GetPin(), nil
		}
		p := fmt.Sprintf("phase %s: waiting for %s", st.GetPhase(), st.GetWaitingFor())
		if d := st.GetWaitingDisconnected(); len(d) > 0 {
			p += fmt.Sprintf(" (disconnected: %s; `meshctl proxy forget` drops a dead one)", strings.Join(d, ", "))
		}
		return false, p, nil
	})
	return st, err
}

// waitRevision waits until every connected proxy ACKed or NACKed a
// snapshot computed at revision rev or later; a NACK fails, naming the
// proxy and its reason.
func (g *globals) waitRevision(ctx context.Context, c meshv1.AdminServiceClient, rev uint64, timeout time.Duration) error {
	return g.poll(ctx, timeout, fmt.Sprintf("proxies to ACK revision %d", rev), func(ctx context.Context) (bool, string, error) {
		resp, err := c.ProxyStatus(ctx, &meshv1.ProxyStatusRequest{})
		if err != nil {
			return false, "", err
		}
		var waiting, nacked []string
		for _, ps := range resp.GetProxies() {
			id := ps.GetProxy().GetInstanceId()
			switch {
			case !ps.GetProxy().GetConnected() || ps.GetProxy().GetRevoked():
				continue // it cannot answer; proxy-status shows it
			case ps.GetRevision() < rev || ps.GetCurrentVersion() == "":
				waiting = append(waiting, id)
			case ps.GetNackedVersion() == ps.GetCurrentVersion():
				nacked = append(nacked, fmt.Sprintf("%s NACKed version %s: %s", id, ps.GetNackedVersion(), ps.GetNackReason()))
			case ps.GetAckedVersion() != ps.GetCurrentVersion():
				waiting = append(waiting, id)
			}
		}
		if len(nacked) > 0 {
			slices.Sort(nacked)
			return false, "", fmt.Errorf("revision %d refused: %s", rev, strings.Join(nacked, "; "))
		}
		if len(waiting) > 0 {
			return false, fmt.Sprintf("revision %d: waiting for %d proxies: %s", rev, len(waiting), strings.Join(waiting, ", ")), nil
		}
		return true, fmt.Sprintf("revision %d: every connected proxy ACKed it", rev), nil
	})
}
