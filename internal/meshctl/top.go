package meshctl

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"minimesh/api/topz"
	meshv1 "minimesh/proto/mesh/v1"
)

// query asks one proxy, through meshd and the proxy's own stream.
func (g *globals) query(instance string, req *meshv1.Request, out any, print func()) error {
	return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
		resp, err := c.ProxyQuery(ctx, &meshv1.ProxyQueryRequest{InstanceId: instance, Request: req})
		if err != nil {
			return err
		}
		if g.out.format != formatTable {
			// The proxy's answer, its snake_case keys in camelCase as in
			// every other document.
			tree, err := orderedJSON(resp.GetJson())
			if err != nil {
				return fmt.Errorf("answer from %s: %w", instance, err)
			}
			return g.show(view{doc: snakeToCamel(tree)})
		}
		if err := json.Unmarshal(resp.GetJson(), out); err != nil {
			return fmt.Errorf("answer from %s: %w", instance, err)
		}
		print()
		return nil
	})
}

func newTopCmd(g *globals) *cobra.Command {
	return outputs(&cobra.Command{
		Use:   "top INSTANCE",
		Short: "The processes a proxy's pod runs: CPU, memory, threads, open files",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			var tab topz.Table
			return g.query(args[0], &meshv1.Request{Query: &meshv1.Request_Topz{Topz: &meshv1.TopzQuery{}}}, &tab, func() {
				topz.WriteTable(g.io.Out, tab)
			})
		},
	}, docFormats...)
}

func newProczCmd(g *globals) *cobra.Command {
	return outputs(&cobra.Command{
		Use:   "procz INSTANCE PID",
		Short: "One process in a proxy's pod: its open sockets and files",
		Args:  cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			pid, err := strconv.ParseInt(args[1], 10, 32)
			if err != nil || pid <= 0 {
				return fmt.Errorf("PID: want a positive number, got %q", args[1])
			}
			var p topz.Process
			return g.query(args[0], &meshv1.Request{Query: &meshv1.Request_Procz{Procz: &meshv1.ProczQuery{Pid: int32(pid)}}}, &p, func() {
				topz.WriteProcess(g.io.Out, p)
			})
		},
	}, docFormats...)
}
