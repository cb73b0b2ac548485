package meshctl

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/api"
	"minimesh/api/authz"
	meshv1 "minimesh/proto/mesh/v1"
)

func newAuthzCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "authz", Short: "Authorization policies"}
	var from, to, namespace, method, path string
	explain := &cobra.Command{
		Use:   "explain --from SPIFFEID --to SERVICE --method M --path P [-n NAMESPACE]",
		Short: "Would this request be allowed? The decision and the rule that made it, by the proxy's own code",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if _, err := spiffeid.FromString(from); err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				resp, err := c.GetResources(ctx, &meshv1.GetResourcesRequest{Kind: string(api.KindAuthorizationPolicy), Namespace: namespace})
				if err != nil {
					return err
				}
				var policies []*api.AuthorizationPolicy
				for _, r := range resp.GetResources() {
					o, err := api.FromProto(r)
					if err != nil {
						return err
					}
					if p := o.(*api.AuthorizationPolicy); p.Spec.GetService() == to {
						policies = append(policies, p)
					}
				}
				// The same compile and check the destination's proxy runs on
				// the policies meshd pushes to it.
				engine, err := authz.Compile(policies)
				if err != nil {
					return err
				}
				x := engine.Explain(authz.Request{Peer: from, Method: method, Path: path})
				if g.output != "table" {
					b, err := json.MarshalIndent(x, "", "  ")
					if err != nil {
						return err
					}
					_, err = fmt.Fprintln(g.io.Out, string(b))
					return err
				}
				fmt.Fprintf(g.io.Out, "service %s/%s, %d policies\n%s", namespace, to, len(policies), x.String())
				return nil
			})
		},
	}
	f := explain.Flags()
	f.StringVar(&from, "from", "", "the caller's SPIFFE ID (required)")
	f.StringVar(&to, "to", "", "the destination service (required)")
	f.StringVarP(&namespace, "namespace", "n", "default", "the destination's namespace")
	f.StringVar(&method, "method", "GET", "HTTP method")
	f.StringVar(&path, "path", "/", "request path, as sent")
	_ = explain.MarkFlagRequired("from")
	_ = explain.MarkFlagRequired("to")
	cmd.AddCommand(explain)
	return cmd
}
