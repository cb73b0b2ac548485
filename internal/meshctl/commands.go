package meshctl

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	meshv1 "minimesh/proto/mesh/v1"
)

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Create, list and revoke join tokens"}
	var (
		ns, sa string
		ttl    time.Duration
		uses   uint32
	)
	create := &cobra.Command{
		Use:   "create --ns NS --sa SA [--ttl 10m] [--uses 1]",
		Short: "Create a join token bound to one namespace and service account",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				req := &meshv1.CreateJoinTokenRequest{Namespace: ns, ServiceAccount: sa, Uses: uses}
				if ttl != 0 {
					req.Ttl = durationpb.New(ttl)
				}
				resp, err := c.CreateJoinToken(ctx, req)
				if err != nil {
					return err
				}
				if g.output != "table" {
					return g.print(resp)
				}
				t := resp.GetToken()
				printf(g.io.Out, "token:     %s\nca-pin:    %s\nidentity:  %s\nexpires:   %s\nuses:      %d\n",
					resp.GetSecret(), resp.GetCaPin(), t.GetSpiffeId(), fmtTime(t.GetExpiresAt(), t.ExpiresAt != nil), t.GetUses())
				return nil
			})
		},
	}
	create.Flags().StringVar(&ns, "ns", "", "namespace the token is bound to (required)")
	create.Flags().StringVar(&sa, "sa", "", "service account the token is bound to (required)")
	create.Flags().DurationVar(&ttl, "ttl", 0, "lifetime of the token (default 10m)")
	create.Flags().Uint32Var(&uses, "uses", 0, "how many proxies may bootstrap with it (default 1)")
	_ = create.MarkFlagRequired("ns")
	_ = create.MarkFlagRequired("sa")

	list := &cobra.Command{
		Use:   "list",
		Short: "List join tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				resp, err := c.ListJoinTokens(ctx, &meshv1.ListJoinTokensRequest{})
				if err != nil {
					return err
				}
				if g.output != "table" {
					return g.print(resp)
				}
				w := tabwriter.NewWriter(g.io.Out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "ID\tIDENTITY\tUSES LEFT\tEXPIRES\tSTATE")
				now := time.Now()
				for _, t := range resp.GetTokens() {
					state := "active"
					switch {
					case t.GetRevoked():
						state = "revoked"
					case !now.Before(t.GetExpiresAt().AsTime()):
						state = "expired"
					case t.GetUsesLeft() == 0:
						state = "used"
					case t.GetStalePin():
						state = "old CA pin"
					}
					printf(w, "%s\t%s\t%d/%d\t%s\t%s\n", t.GetId(), t.GetSpiffeId(), t.GetUsesLeft(), t.GetUses(), fmtTime(t.GetExpiresAt(), t.ExpiresAt != nil), state)
				}
				return w.Flush()
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a join token",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				resp, err := c.RevokeJoinToken(ctx, &meshv1.RevokeJoinTokenRequest{Id: args[0]})
				if err != nil {
					return err
				}
				if g.output != "table" {
					return g.print(resp)
				}
				printf(g.io.Out, "token %s revoked\n", args[0])
				return nil
			})
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func newCertsCmd(g *globals) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "List the X509-SVIDs meshd has issued: identity, serial, expiry",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				resp, err := c.ListCertificates(ctx, &meshv1.ListCertificatesRequest{ValidOnly: !all})
				if err != nil {
					return err
				}
				if g.output != "table" {
					return g.print(resp)
				}
				w := tabwriter.NewWriter(g.io.Out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "IDENTITY\tSERIAL\tISSUED BY\tINSTANCE\tEXPIRES\tIN")
				for _, ct := range resp.GetCertificates() {
					inst := ct.GetInstanceId()
					if inst == "" {
						inst = "-"
					}
					printf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", ct.GetSpiffeId(), ct.GetSerial(), ct.GetIssuedBy(), inst,
						fmtTime(ct.GetNotAfter(), ct.NotAfter != nil), until(ct.GetNotAfter().AsTime()))
				}
				return w.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "include expired certificates")
	return cmd
}

func newProxiesCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "proxies",
		Short: "List registered proxy instances",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				resp, err := c.ListProxies(ctx, &meshv1.ListProxiesRequest{})
				if err != nil {
					return err
				}
				if g.output != "table" {
					return g.print(resp)
				}
				w := tabwriter.NewWriter(g.io.Out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "INSTANCE\tSERVICE\tIDENTITY\tADDRESS\tVERSION\tSTATE\tLAST SEEN\tSVID EXPIRES IN\tENDPOINTS OF")
				for _, p := range resp.GetProxies() {
					state := "disconnected"
					switch {
					case p.GetRevoked():
						state = "revoked"
					case p.GetConnected():
						state = "connected"
					}
					printf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.GetInstanceId(), p.GetService(), p.GetSpiffeId(), p.GetAddress(), p.GetVersion(), state,
						fmtTime(p.GetLastSeen(), p.LastSeen != nil), until(p.GetSvidExpiresAt().AsTime()), endpointScope(p))
				}
				return w.Flush()
			})
		},
	}
}

// endpointScope is the ENDPOINTS OF column: "all" for a proxy that gets
// every endpoint, else the services it named ("none" for none) and, as
// meshd adds them, their Routes' backends.
func endpointScope(p *meshv1.Proxy) string {
	switch {
	case !p.GetEndpointScoped():
		return "all"
	case len(p.GetEndpointScope()) == 0:
		return "none"
	}
	return strings.Join(p.GetEndpointScope(), ",") + " (+route backends)"
}
