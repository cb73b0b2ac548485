package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"minimesh/certs"
	meshv1 "minimesh/proto/mesh/v1"
)

// registerLoop keeps the registration stream up, reconnecting with
// jittered exponential backoff.
func (a *Agent) registerLoop(ctx context.Context) {
	backoff := a.cfg.BackoffMin
	for ctx.Err() == nil {
		if _, err := a.svid.GetX509SVID(); err != nil {
			// No identity yet: wait for one.
			select {
			case <-ctx.Done():
				return
			case <-a.rotated:
				continue
			case <-time.After(a.cfg.BackoffMin):
				continue
			}
		}
		start := a.cfg.Clock.Now()
		err := a.stream(ctx)
		a.setConnected(false)
		if ctx.Err() != nil {
			return
		}
		// A stream that lived a while resets the backoff.
		if a.cfg.Clock.Now().Sub(start) > a.cfg.BackoffMax {
			backoff = a.cfg.BackoffMin
		}
		wait := jitter(backoff, 0.2)
		backoff = min(backoff*2, a.cfg.BackoffMax)
		a.cfg.Logger.Warn("registration stream ended; reconnecting", "error", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// stream opens one registration stream and holds it until it breaks.
func (a *Agent) stream(ctx context.Context) error {
	tc := certs.MTLSClientConfig(a.svid, a.bundle, certs.AuthorizeID(certs.MeshdID(a.cfg.TrustDomain)), certs.TLSOptions{Clock: a.cfg.Clock})
	conn, err := grpc.NewClient(a.cfg.ControlPlane,
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
	)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := meshv1.NewConfigServiceClient(conn).Stream(ctx)
	if err != nil {
		return err
	}
	hello := &meshv1.Hello{
		InstanceId:       a.instanceID,
		Service:          a.cfg.Service,
		AdvertiseAddress: a.cfg.Advertise,
		ProxyVersion:     a.cfg.Version,
	}
	if err := st.Send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Hello{Hello: hello}}); err != nil {
		return fmt.Errorf("agent: send hello: %w", err)
	}
	// The first answer must come in bounded time.
	first := make(chan error, 1)
	go func() {
		m, err := st.Recv()
		if err == nil && m.GetRegistered() == nil {
			err = errors.New("agent: meshd answered the hello with something else")
		}
		first <- err
	}()
	select {
	case err := <-first:
		if err != nil {
			return fmt.Errorf("agent: registration refused: %w", err)
		}
	case <-time.After(a.cfg.CallTimeout):
		cancel()
		<-first
		return errors.New("agent: no answer to the hello in time")
	}
	a.setConnected(true)
	a.cfg.Logger.Info("registered with meshd", "instance_id", a.instanceID, "service", a.cfg.Service, "advertise", a.cfg.Advertise)
	for {
		if _, err := st.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("agent: meshd closed the stream")
			}
			return err
		}
	}
}

func (a *Agent) setConnected(v bool) {
	a.mu.Lock()
	a.connected = v
	a.mu.Unlock()
}
