package meshctl

import (
	"context"
	"fmt"
	"io"
	"strings"

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
		Long: `Would this request be allowed? Decides it with the proxies' own code on the
destination's AuthorizationPolicies as meshd holds them, and says which rule
decided. Exits 0 when allowed and 1 when denied (as kubectl auth can-i), so
scripts can test it; other errors exit 1 too, with a message on stderr.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if _, err := spiffeid.FromString(from); err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				x, policies, err := explainRequest(ctx, c, namespace, to, authz.Request{Peer: from, Method: method, Path: path})
				if err != nil {
					return err
				}
				err = g.show(view{doc: explanationDoc(namespace, to, policies, x), table: func(bool) error {
					printf(g.io.Out, "service %s/%s, %d policies\n", namespace, to, policies)
					_, err := io.WriteString(g.io.Out, x.String())
					return err
				}})
				if err == nil && !x.Decision.Allowed {
					return errDenied // exit 1, as kubectl auth can-i says no
				}
				return err
			})
		},
	}
	outputs(explain, docFormats...)
	f := explain.Flags()
	f.StringVar(&from, "from", "", "the caller's SPIFFE ID (required)")
	f.StringVar(&to, "to", "", "the destination service (required)")
	addNamespaceFlag(g, explain, &namespace, "the destination's namespace")
	f.StringVar(&method, "method", "GET", "HTTP method")
	f.StringVar(&path, "path", "/", "request path, as sent")
	_ = explain.MarkFlagRequired("from")
	_ = explain.MarkFlagRequired("to")
	cmd.AddCommand(explain)
	return cmd
}

// explainRequest decides req with the proxies' own code (the same compile
// and check the destination's proxy runs on the policies meshd pushes to
// it) on the AuthorizationPolicies of service to in namespace as meshd
// holds them; it returns the explanation and how many policies there are.
func explainRequest(ctx context.Context, c meshv1.AdminServiceClient, namespace, to string, req authz.Request) (authz.Explanation, int, error) {
	resp, err := c.GetResources(ctx, &meshv1.GetResourcesRequest{Kind: string(api.KindAuthorizationPolicy), Namespace: namespace})
	if err != nil {
		return authz.Explanation{}, 0, err
	}
	var policies []*api.AuthorizationPolicy
	for _, r := range resp.GetResources() {
		o, err := api.FromProto(r)
		if err != nil {
			return authz.Explanation{}, 0, err
		}
		if p := o.(*api.AuthorizationPolicy); p.Spec.GetService() == to {
			policies = append(policies, p)
		}
	}
	engine, err := authz.Compile(policies)
	if err != nil {
		return authz.Explanation{}, 0, err
	}
	return engine.Explain(req), len(policies), nil
}

// explanationDoc is authz explain's document, in camelCase.
func explanationDoc(namespace, service string, policies int, x authz.Explanation) any {
	type rule struct {
		Policy      string `json:"policy"`
		Rule        int    `json:"rule"`
		Description string `json:"description,omitempty"`
	}
	type doc struct {
		Namespace string `json:"namespace"`
		Service   string `json:"service"`
		Policies  int    `json:"policies"`
		Request   struct {
			From   string `json:"from"`
			Method string `json:"method"`
			Path   string `json:"path"`
		} `json:"request"`
		Allowed      bool   `json:"allowed"`
		Action       string `json:"action,omitempty"`
		Reason       string `json:"reason"`
		PathError    string `json:"pathError,omitempty"`
		DecidedBy    *rule  `json:"decidedBy,omitempty"`
		DryRunDenyBy *rule  `json:"dryRunDenyBy,omitempty"`
		DryRunDeny   bool   `json:"dryRunDeny,omitempty"`
		AuditedBy    *rule  `json:"auditedBy,omitempty"`
	}
	d := x.Decision
	out := doc{Namespace: namespace, Service: service, Policies: policies, Allowed: d.Allowed, Reason: d.Reason, DryRunDeny: d.DryRun}
	out.Request.From, out.Request.Method, out.Request.Path = x.Request.Peer, x.Request.Method, x.Request.Path
	if d.Rule >= 0 {
		out.Action = strings.ToLower(fmt.Sprint(d.Action))
		out.DecidedBy = &rule{Policy: d.Policy, Rule: d.Rule, Description: x.Rule}
	}
	if x.PathError != nil {
		out.PathError = x.PathError.Error()
	}
	if d.DryRun && d.DryRunRule >= 0 {
		out.DryRunDenyBy = &rule{Policy: d.DryRunPolicy, Rule: d.DryRunRule, Description: x.DryRunRule}
	}
	if d.Audit {
		out.AuditedBy = &rule{Policy: d.AuditPolicy, Rule: d.AuditRule, Description: x.AuditRule}
	}
	return out
}
