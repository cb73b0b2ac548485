// Package replicas dials meshd's replicas through gRPC's own machinery:
// mesh-proxy's --control-plane and meshctl's --server take one host:port
// (a DNS name with several addresses fails over among them, through
// gRPC's dns resolver) or a comma-separated list (a manual resolver), and
// the channel's pick_first policy, over a shuffled list, connects to the
// first replica that answers and moves on when it goes. Neither caller
// loops over addresses itself.
package replicas

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// MaxAddresses bounds a list: replicas, not a fleet.
const MaxAddresses = 16

// serviceConfig: one connection at a time (a stream lives on one replica),
// the list shuffled so that proxies spread over the replicas.
const serviceConfig = `{"loadBalancingConfig":[{"pick_first":{"shuffleAddressList":true}}]}`

// Parse splits list (comma-separated host:port) and checks each address;
// an error names flag and the address.
func Parse(flag, list string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(list, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			return nil, fmt.Errorf("%s: empty address in %q (want host:port[,host:port...])", flag, list)
		}
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %v (want host:port)", flag, a, err)
		}
		if host == "" {
			return nil, fmt.Errorf("%s: %q: no host", flag, a)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("%s: %q: port must be a number from 1 to 65535", flag, a)
		}
		if strings.ContainsAny(host, "/?#@ ") {
			return nil, fmt.Errorf("%s: %q: not a host name or IP address", flag, a)
		}
		out = append(out, a)
	}
	if len(out) > MaxAddresses {
		return nil, fmt.Errorf("%s: %d addresses; at most %d", flag, len(out), MaxAddresses)
	}
	return out, nil
}

// NewClient is grpc.NewClient for meshd at list (see Parse): one address
// through the dns resolver, several through a manual resolver of this
// channel's own; pick_first over the shuffled addresses either way. A DNS
// TXT service config is ignored: DNS does not configure this client.
func NewClient(list string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	addrs, err := Parse("address", list)
	if err != nil {
		return nil, err
	}
	opts = append(opts, grpc.WithDisableServiceConfig(), grpc.WithDefaultServiceConfig(serviceConfig))
	if len(addrs) == 1 {
		return grpc.NewClient("dns:///"+addrs[0], opts...)
	}
	r := manual.NewBuilderWithScheme("meshd-replicas")
	st := resolver.State{}
	for _, a := range addrs {
		st.Endpoints = append(st.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}})
	}
	r.InitialState(st)
	return grpc.NewClient(r.Scheme()+":///meshd", append(opts, grpc.WithResolvers(r))...)
}
