package agent

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"

	"minimesh/certs"
)

// maxRetryDelay caps the delay meshd may ask for (RetryInfo) before the
// next renewal attempt.
const maxRetryDelay = 10 * time.Minute

// nextWait is how long the identity loop sleeps after a refresh that ended
// with err (nil: success): the renewal time, or the jittered backoff; never
// past the SVID's expiry; and never less than the retry delay meshd sent
// with a refusal (a rate-limited Renew), which an earlier retry could only
// spend again.
func (a *Agent) nextWait(err error, backoff time.Duration) time.Duration {
	var wait, floor time.Duration
	if err != nil {
		wait = jitter(backoff, 0.2)
		floor = retryDelay(err)
	} else {
		wait = a.renewIn()
	}
	// Never sleep past expiry without trying again.
	if cur := a.svid.Current(); cur != nil {
		if left := cur.Certificates[0].NotAfter.Sub(a.cfg.Clock.Now()); left > 0 && wait > left {
			wait = left
		}
	}
	if wait < floor {
		// A little past the delay, so that replicas refused together do
		// not all come back at the same instant.
		wait = floor + time.Duration(float64(floor)*0.1*randFloat())
	}
	return wait
}

// retryDelay is the RetryInfo delay of a gRPC status in err's chain
// (capped at maxRetryDelay), or 0.
func retryDelay(err error) time.Duration {
	st, ok := status.FromError(err)
	if !ok {
		return 0
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return min(max(ri.GetRetryDelay().AsDuration(), 0), maxRetryDelay)
		}
	}
	return 0
}

// bundleGeneration is the number of snapshot bundles applied so far; a
// request remembers it when sent.
func (a *Agent) bundleGeneration() uint64 {
	a.bundleMu.Lock()
	defer a.bundleMu.Unlock()
	return a.bundleGen
}

// setSnapshotBundle is the snapshot's writer of the trust bundle: the
// newest snapshot's bundle always wins.
func (a *Agent) setSnapshotBundle(b *x509bundle.Bundle) {
	a.bundleMu.Lock()
	defer a.bundleMu.Unlock()
	a.bundleGen++
	a.bundle.Set(b)
}

// takeReplyBundle puts a verified SVID from a Renew or Bootstrap reply in
// force with the right bundle, and returns that bundle. When no snapshot
// bundle came in since the request was sent (gen), the reply's bundle is
// the newest word and is taken. Otherwise the snapshot's bundle stays (a
// late reply must not put back a root the snapshot dropped), and the SVID
// must verify against it: one that chains to a dropped root is refused,
// and the loop renews again.
func (a *Agent) takeReplyBundle(reply *x509bundle.Bundle, gen uint64, svid *x509svid.SVID) (*x509bundle.Bundle, error) {
	a.bundleMu.Lock()
	defer a.bundleMu.Unlock()
	if a.bundleGen == gen {
		a.bundle.Set(reply)
		a.svid.Set(svid)
		return reply, nil
	}
	cur := a.bundle.Bundle()
	if _, _, err := certs.VerifyPeerCertificates(svid.Certificates, cur, a.cfg.Clock.Now()); err != nil {
		return nil, fmt.Errorf("agent: the SVID from meshd does not verify against the newer snapshot's trust bundle (its root was dropped since the request); renewing again: %w", err)
	}
	a.cfg.Logger.Info("kept the newer snapshot's trust bundle over the one in a late reply")
	a.svid.Set(svid)
	return cur, nil
}

func randFloat() float64 { return rand.Float64() }
