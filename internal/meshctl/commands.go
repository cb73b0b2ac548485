package meshctl

import (
	"context"
	"fmt"
	"strings"
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
				t := resp.GetToken()
				return g.show(view{doc: resp, names: []string{"token/" + t.GetId()}, table: func(bool) error {
					printf(g.io.Out, "token:     %s\nca-pin:    %s\nidentity:  %s\nexpires:   %s\nuses:      %d\n",
						resp.GetSecret(), resp.GetCaPin(), t.GetSpiffeId(), fmtTime(t.GetExpiresAt(), t.ExpiresAt != nil), t.GetUses())
					return nil
				}})
			})
		},
	}
	outputs(create, formatTable, formatName, formatJSON, formatYAML, formatJSONPath)
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
				var names []string
				for _, t := range resp.GetTokens() {
					names = append(names, "token/"+t.GetId())
				}
				return g.show(view{doc: resp, names: names, table: func(wide bool) error {
					return g.tokenTable(resp, wide)
				}})
			})
		},
	}
	outputs(list, formatTable, formatWide, formatName, formatJSON, formatYAML, formatJSONPath)
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a join token",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				if _, err := c.RevokeJoinToken(ctx, &meshv1.RevokeJoinTokenRequest{Id: args[0]}); err != nil {
					return err
				}
				return g.show(view{doc: revoked{ID: args[0], Revoked: true}, names: []string{"token/" + args[0]}, table: func(bool) error {
					printf(g.io.Out, "token %s revoked\n", args[0])
					return nil
				}})
			})
		},
	}
	outputs(revoke, formatTable, formatName, formatJSON, formatYAML, formatJSONPath)
	cmd.AddCommand(create, list, revoke)
	return cmd
}

// revoked is the document of the commands that revoke or deny one thing.
type revoked struct {
	ID      string `json:"id"`
	Revoked bool   `json:"revoked"`
}

func (g *globals) tokenTable(resp *meshv1.ListJoinTokensResponse, wide bool) error {
	h := "ID\tIDENTITY\tUSES LEFT\tEXPIRES\tSTATE"
	if wide {
		h += "\tCREATED\tCA PIN"
	}
	w := g.newTable(h)
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
		cells := []string{t.GetId(), t.GetSpiffeId(), fmt.Sprintf("%d/%d", t.GetUsesLeft(), t.GetUses()), fmtTime(t.GetExpiresAt(), t.ExpiresAt != nil), state}
		if wide {
			cells = append(cells, fmtTime(t.GetCreatedAt(), t.CreatedAt != nil), orDash(t.GetCaPin()))
		}
		row(w, cells...)
	}
	return w.Flush()
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
				return g.show(view{doc: resp, table: func(wide bool) error {
					h := "IDENTITY\tSERIAL\tISSUED BY\tINSTANCE\tEXPIRES\tIN"
					if wide {
						h += "\tNOT BEFORE\tTOKEN"
					}
					w := g.newTable(h)
					for _, ct := range resp.GetCertificates() {
						cells := []string{ct.GetSpiffeId(), ct.GetSerial(), ct.GetIssuedBy(), orDash(ct.GetInstanceId()),
							fmtTime(ct.GetNotAfter(), ct.NotAfter != nil), until(ct.GetNotAfter().AsTime())}
						if wide {
							cells = append(cells, fmtTime(ct.GetNotBefore(), ct.NotBefore != nil), orDash(ct.GetTokenId()))
						}
						row(w, cells...)
					}
					return w.Flush()
				}})
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "include expired certificates")
	return outputs(cmd, formatTable, formatWide, formatJSON, formatYAML, formatJSONPath)
}

func newProxiesCmd(g *globals) *cobra.Command {
	return outputs(&cobra.Command{
		Use:   "proxies",
		Short: "List registered proxy instances",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				resp, err := c.ListProxies(ctx, &meshv1.ListProxiesRequest{})
				if err != nil {
					return err
				}
				var names []string
				for _, p := range resp.GetProxies() {
					names = append(names, "proxy/"+p.GetInstanceId())
				}
				return g.show(view{doc: resp, names: names, table: func(wide bool) error {
					h := "INSTANCE\tSERVICE\tIDENTITY\tADDRESS\tVERSION\tSTATE\tLAST SEEN\tSVID EXPIRES IN"
					if wide {
						h += "\tCONNECTED AT\tSVID EXPIRES AT"
					}
					w := g.newTable(h + "\tENDPOINTS OF")
					for _, p := range resp.GetProxies() {
						state := "disconnected"
						switch {
						case p.GetRevoked():
							state = "revoked"
						case p.GetConnected():
							state = "connected"
						}
						cells := []string{p.GetInstanceId(), p.GetService(), p.GetSpiffeId(), p.GetAddress(), orDash(p.GetVersion()), state,
							fmtTime(p.GetLastSeen(), p.LastSeen != nil), until(p.GetSvidExpiresAt().AsTime())}
						if wide {
							cells = append(cells, fmtTime(p.GetConnectedAt(), p.ConnectedAt != nil), fmtTime(p.GetSvidExpiresAt(), p.SvidExpiresAt != nil))
						}
						row(w, append(cells, endpointScope(p))...)
					}
					return w.Flush()
				}})
			})
		},
	}, formatTable, formatWide, formatName, formatJSON, formatYAML, formatJSONPath)
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
