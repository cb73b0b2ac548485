package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"minimesh/certs"
	"minimesh/internal/replicas"
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

// AcceptsStats is the name in Registered.accepts of a meshd that takes
// StatsReport messages.
const AcceptsStats = "stats"

// drainTimeout bounds saying goodbye to meshd when the proxy leaves.
const drainTimeout = 2 * time.Second

// stream opens one registration stream and holds it until it breaks, or
// until ctx ends: the proxy is leaving (SIGTERM, /quitquitquit, a part
// failed), and it sends Drain so that meshd drops its endpoint at once. A
// stream that ends any other way (meshd restarted, the network broke)
// leaves the endpoint in place for meshd's endpoint grace: callers keep
// reaching this proxy while it reconnects.
//
// An explicit message rather than a cleanly closed stream (CloseSend):
// it states the intent whatever sits between proxy and meshd (a half-close
// can come from an intermediary or a client library's shutdown), and
// proxies that predate it fall on the safe side (the grace).
func (a *Agent) stream(ctx context.Context) error {
	tc := certs.MTLSClientConfig(a.svid, a.bundle, certs.AuthorizeID(certs.MeshdID(a.cfg.TrustDomain)), certs.TLSOptions{Clock: a.cfg.Clock})
	conn, err := replicas.NewClient(a.cfg.ControlPlane,
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
	)
	if err != nil {
		return err
	}
	defer conn.Close()
	// The stream outlives ctx by the Drain: it has its own cancel.
	leaving := ctx
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	st, err := meshv1.NewConfigServiceClient(conn).Stream(ctx)
	if err != nil {
		return err
	}
	hello := &meshv1.Hello{
		InstanceId:       a.instance(),
		Service:          a.cfg.Service,
		AdvertiseAddress: a.cfg.Advertise,
		ProxyVersion:     a.cfg.Version,
		EndpointScope:    a.cfg.EndpointScope,
	}
	if snap := a.applied.Load(); snap != nil {
		hello.AppliedVersion = snap.GetVersion()
	}
	if err := st.Send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Hello{Hello: hello}}); err != nil {
		return fmt.Errorf("agent: send hello: %w", err)
	}
	// The first answer must come in bounded time.
	first := make(chan error, 1)
	var registered *meshv1.Registered
	go func() {
		m, err := st.Recv()
		if err == nil && m.GetRegistered() == nil {
			err = errors.New("agent: meshd answered the hello with something else")
		}
		registered = m.GetRegistered()
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
	case <-leaving.Done():
		cancel()
		<-first
		return leaving.Err()
	}
	a.setConnected(true)
	// The service is the logger's (mesh-proxy's every line names it).
	a.cfg.Logger.Info("registered with meshd", "instance_id", a.instance(), "advertise", a.cfg.Advertise)

	// One goroutine receives; this one sends (gRPC streams allow one of
	// each). Query answers come back through replies.
	msgs := make(chan *meshv1.StreamResponse)
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	// Traffic stats, only to a meshd that takes them (an older one
	// would drop them): a nil channel never fires.
	var statsTick <-chan time.Time
	if a.cfg.Stats != nil && slices.Contains(registered.GetAccepts(), AcceptsStats) {
		t := time.NewTicker(a.cfg.StatsInterval)
		defer t.Stop()
		statsTick = t.C
	}
	replies := make(chan *meshv1.Reply, 8)
	var queries sync.WaitGroup
	defer queries.Wait()
	defer cancel()
	for {
		var out *meshv1.StreamRequest
		select {
		case <-leaving.Done():
			a.drain(st, msgs, recvErr, cancel)
			return leaving.Err()
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return errors.New("agent: meshd closed the stream")
			}
			return err
		case r := <-replies:
			out = &meshv1.StreamRequest{Message: &meshv1.StreamRequest_Reply{Reply: r}}
		case <-statsTick:
			if rep := a.cfg.Stats(); len(rep.GetEdges()) > 0 || len(rep.GetDenies()) > 0 {
				out = &meshv1.StreamRequest{Message: &meshv1.StreamRequest_Stats{Stats: rep}}
			}
		case m := <-msgs:
			switch msg := m.GetMessage().(type) {
			case *meshv1.StreamResponse_Snapshot:
				out = a.onSnapshot(msg.Snapshot)
			case *meshv1.StreamResponse_Request:
				queries.Add(1)
				go func() {
					defer queries.Done()
					r := a.answer(ctx, msg.Request)
					select {
					case replies <- r:
					case <-ctx.Done():
					}
				}()
			}
		}
		if out != nil {
			if err := st.Send(out); err != nil {
				return err
			}
		}
	}
}

// drain tells meshd this proxy is leaving and waits, bounded, for meshd to
// end the stream; cancel ends it (and any Send blocked on it) at the bound.
func (a *Agent) drain(st meshv1.ConfigService_StreamClient, msgs <-chan *meshv1.StreamResponse, recvErr <-chan error, cancel context.CancelFunc) {
	t := time.AfterFunc(min(drainTimeout, a.cfg.CallTimeout), cancel)
	defer t.Stop()
	if err := st.Send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Drain{Drain: &meshv1.Drain{}}}); err != nil {
		a.cfg.Logger.Warn("could not tell meshd this proxy is leaving; it stays an endpoint for meshd's grace", "error", err)
		return
	}
	_ = st.CloseSend()
	a.cfg.Logger.Info("told meshd this proxy is leaving")
	for {
		select {
		case <-recvErr:
			return
		case <-msgs: // a snapshot after leaving: not applied
		case <-st.Context().Done():
			return
		}
	}
}

// onSnapshot applies a snapshot and returns the ACK or NACK to send.
func (a *Agent) onSnapshot(snap *meshv1.Snapshot) *meshv1.StreamRequest {
	files, err := a.apply(snap, true)
	if err != nil {
		a.snapshots.WithLabelValues("nack").Inc()
		a.cfg.Logger.Warn("snapshot refused; keeping the previous one", "version", snap.GetVersion(), "error", err)
		return &meshv1.StreamRequest{Message: &meshv1.StreamRequest_Nack{Nack: &meshv1.Nack{Version: snap.GetVersion(), Reason: err.Error()}}}
	}
	a.snapshots.WithLabelValues("ack").Inc()
	return &meshv1.StreamRequest{Message: &meshv1.StreamRequest_Ack{Ack: &meshv1.Ack{Version: snap.GetVersion(), Files: files}}}
}

// answer runs an operator query with a bounded time.
func (a *Agent) answer(ctx context.Context, req *meshv1.Request) *meshv1.Reply {
	r := &meshv1.Reply{Id: req.GetId()}
	if a.cfg.Querier == nil {
		r.Error = "this proxy answers no queries"
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
	defer cancel()
	b, err := a.cfg.Querier(ctx, req)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Json = b
	return r
}

func (a *Agent) setConnected(v bool) {
	a.mu.Lock()
	a.connected = v
	a.mu.Unlock()
}
