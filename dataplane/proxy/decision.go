package proxy

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"

	"minimesh/dataplane/applink"
	"minimesh/dataplane/balancer"
	"minimesh/dataplane/h1"
	"minimesh/dataplane/route"
	meshv1 "minimesh/proto/mesh/v1"
)

// decision is what a listener decided for one request, made once and
// carried as one value: where it goes, with which path and for which peer,
// and the route it matched. The inbound and the public port fill app
// (what the app receives, by either path to it), the outbound fills the
// mesh side (service, balancer, port, route). ReverseProxy's Rewrite and
// the outbound's round trip find it under decisionKey, the request's only
// context key of ours.
type decision struct {
	// The app side (inbound, public).
	app   applink.Head
	proto meshv1.Protocol // the app port's protocol
	peer  *peer           // the caller (inbound); nil at the public port

	// Both: the normalized path the policy matched ("" before it is
	// known, or refused), the route matched and where the request went,
	// for the access log.
	path      string
	routeName string
	upstream  string

	// The mesh side (outbound).
	ctx   context.Context // the request's, with the route timeout
	dst   *service
	bal   *balancer.Balancer
	port  *svcPort
	route *route.Route
	// series is the destination's outbound metric series (svcRun).
	series *atomic.Pointer[requestSeries]
	// The outbound's direct path (outdirect.go): w takes the remote's
	// 1xx answers; early guards them when a try goes over HTTP/2.
	w     http.ResponseWriter
	early *early1xx
	raw   *lineFields // the answer's head as lines (outHead.Fields)
	// fields are the app's header fields of a request served from its
	// head (Outbound.ServeHead), as long as its Request has no header map
	// (headerOf makes one when a step needs it).
	fields []h1.Field
}

type decisionKey struct{}

// decisionPool holds the decisions of the public port's requests that no
// exchange carries (access log off); the inbound's live in its pooled
// inExchange. A decision is put back once the handler has returned: by
// then ReverseProxy and the direct path are done with it.
var decisionPool = sync.Pool{New: func() any { return new(decision) }}

// decisionFrom returns the decision a request carries; nil when none.
func decisionFrom(ctx context.Context) *decision {
	d, _ := ctx.Value(decisionKey{}).(*decision)
	return d
}
