package meshctl

import (
	"context"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

// Dynamic completion (cobra's __complete, behind `meshctl completion
// bash|zsh|fish|powershell`): kinds, resource names and namespaces,
// proxy instance IDs, join token IDs and operator serials are asked of
// meshd with the flags typed so far (--server, --credentials, -n), each
// call bounded by --timeout; -o values are a fixed list. When meshd does
// not answer, nothing is offered (and no file names).

const noFiles = cobra.ShellCompDirectiveNoFileComp

// ask runs fn against meshd for a completion and keeps what starts with
// prefix.
func (g *globals) ask(prefix string, fn func(ctx context.Context, c meshv1.AdminServiceClient) ([]string, error)) ([]string, cobra.ShellCompDirective) {
	var got []string
	err := g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
		var err error
		got, err = fn(ctx, c)
		return err
	})
	if err != nil {
		return nil, noFiles | cobra.ShellCompDirectiveError
	}
	return withPrefix(got, prefix), noFiles
}

// withPrefix keeps the candidates that start with prefix (the part of a
// "value\tdescription" before the tab), sorted, without duplicates.
func withPrefix(cands []string, prefix string) []string {
	var out []string
	for _, c := range cands {
		v, _, _ := strings.Cut(c, "\t")
		if strings.HasPrefix(v, prefix) && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}

// completeKindAndName completes get's and delete's KIND (and all, for
// get) and then NAME, from meshd, in the namespace of -n.
func (g *globals) completeKindAndName(withAll bool) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
		switch len(args) {
		case 0:
			kinds := sortedKinds()
			if withAll {
				kinds = append(kinds, "all")
			}
			return withPrefix(kinds, prefix), noFiles
		case 1:
			k, err := parseKind(args[0])
			if err != nil {
				return nil, noFiles
			}
			ns := api.DefaultNamespace
			if f := cmd.Flags().Lookup("namespace"); f != nil {
				ns = f.Value.String()
			}
			return g.ask(prefix, func(ctx context.Context, c meshv1.AdminServiceClient) ([]string, error) {
				resp, err := c.GetResources(ctx, &meshv1.GetResourcesRequest{Kind: string(k), Namespace: ns})
				var names []string
				for _, r := range resp.GetResources() {
					names = append(names, r.GetName())
				}
				return names, err
			})
		}
		return nil, noFiles
	}
}

// completeNamespaces completes -n with the namespaces of meshd's
// resources.
func (g *globals) completeNamespaces(_ *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
	return g.ask(prefix, func(ctx context.Context, c meshv1.AdminServiceClient) ([]string, error) {
		resp, err := c.GetResources(ctx, &meshv1.GetResourcesRequest{})
		ns := []string{api.DefaultNamespace}
		for _, r := range resp.GetResources() {
			ns = append(ns, r.GetNamespace())
		}
		return ns, err
	})
}

// completeInstance completes a proxy instance ID (the first argument),
// described by its service.
func (g *globals) completeInstance(_ *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, noFiles
	}
	return g.instances(prefix)
}

func (g *globals) instances(prefix string) ([]string, cobra.ShellCompDirective) {
	return g.ask(prefix, func(ctx context.Context, c meshv1.AdminServiceClient) ([]string, error) {
		resp, err := c.ListProxies(ctx, &meshv1.ListProxiesRequest{})
		var ids []string
		for _, p := range resp.GetProxies() {
			ids = append(ids, p.GetInstanceId()+"\t"+p.GetService())
		}
		return ids, err
	})
}

func (g *globals) completeToken(_ *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, noFiles
	}
	return g.ask(prefix, func(ctx context.Context, c meshv1.AdminServiceClient) ([]string, error) {
		resp, err := c.ListJoinTokens(ctx, &meshv1.ListJoinTokensRequest{})
		var ids []string
		for _, t := range resp.GetTokens() {
			if !t.GetRevoked() {
				ids = append(ids, t.GetId()+"\t"+t.GetSpiffeId())
			}
		}
		return ids, err
	})
}

func (g *globals) completeOperator(_ *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, noFiles
	}
	return g.ask(prefix, func(ctx context.Context, c meshv1.AdminServiceClient) ([]string, error) {
		resp, err := c.ListOperators(ctx, &meshv1.ListOperatorsRequest{})
		var ids []string
		for _, o := range resp.GetOperators() {
			if !o.GetRevoked() {
				ids = append(ids, o.GetSerial()+"\t"+o.GetIssuedBy())
			}
		}
		return ids, err
	})
}

// registerCompletions wires the completions that need the command tree:
// -o values, and instance IDs, token IDs and serials by command path.
func registerCompletions(g *globals, root *cobra.Command) {
	_ = root.RegisterFlagCompletionFunc("output", func(cmd *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
		var out []string
		for _, f := range supported(cmd) {
			if f == formatJSONPath {
				f += "="
			}
			out = append(out, f)
		}
		return withPrefix(out, prefix), noFiles | cobra.ShellCompDirectiveNoSpace
	})
	byPath := map[string]cobra.CompletionFunc{
		"meshctl proxy-config":    g.completeInstance,
		"meshctl top":             g.completeInstance,
		"meshctl procz":           g.completeInstance,
		"meshctl proxy forget":    g.completeInstance,
		"meshctl proxy revoke":    g.completeInstance,
		"meshctl token revoke":    g.completeToken,
		"meshctl operator revoke": g.completeOperator,
	}
	walk(root, func(c *cobra.Command) {
		if fn, ok := byPath[c.CommandPath()]; ok {
			c.ValidArgsFunction = fn
		}
		if c.CommandPath() == "meshctl check" {
			_ = c.RegisterFlagCompletionFunc("proxy", func(_ *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
				return g.instances(prefix)
			})
		}
		if c.ValidArgsFunction == nil && c.Args != nil && c.HasParent() && c.CommandPath() != "meshctl backup" {
			// Nothing to complete as an argument: not file names either
			// (inject, apply and diff take theirs with -f).
			c.ValidArgsFunction = cobra.NoFileCompletions
		}
	})
}

// walk calls fn on cmd and every command below it.
func walk(cmd *cobra.Command, fn func(*cobra.Command)) {
	fn(cmd)
	for _, c := range cmd.Commands() {
		walk(c, fn)
	}
}
