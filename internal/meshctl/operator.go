package meshctl

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	meshv1 "minimesh/proto/mesh/v1"
)

func newOperatorCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "Operator credentials: list them, revoke one by its serial",
		Long: `Every operator credential has the SPIFFE ID spiffe://<td>/ns/minimesh-system/sa/operator;
what tells one from another is its certificate serial. meshd writes one to <data-dir>/operator
at start; 'meshd operator issue --out DIR' writes another with meshd stopped. Revoke a lost or
leaked one with 'meshctl operator revoke SERIAL' ('meshd operator revoke SERIAL' with meshd stopped).`,
	}
	var all bool
	list := &cobra.Command{
		Use:   "list [--all]",
		Short: "List the operator credentials: serial, expiry, where each was issued, revoked or not",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				resp, err := c.ListOperators(ctx, &meshv1.ListOperatorsRequest{IncludeExpired: all})
				if err != nil {
					return err
				}
				var names []string
				for _, o := range resp.GetOperators() {
					names = append(names, "operator/"+o.GetSerial())
				}
				return g.show(view{doc: resp, names: names, table: func(bool) error { return g.operatorTable(resp) }})
			})
		},
	}
	outputs(list, formatTable, formatName, formatJSON, formatYAML, formatJSONPath)
	list.Flags().BoolVar(&all, "all", false, "include expired credentials")
	cmd.AddCommand(list)
	addRevoke(g, cmd)
	return cmd
}

func (g *globals) operatorTable(resp *meshv1.ListOperatorsResponse) error {
	w := g.newTable("SERIAL\tISSUED BY\tISSUED\tEXPIRES\tIN\tSTATE")
	for _, o := range resp.GetOperators() {
		state := "valid"
		switch {
		case o.GetRevoked():
			state = "revoked " + fmtTime(o.GetRevokedAt(), o.RevokedAt != nil)
		case until(o.GetNotAfter().AsTime()) == "expired":
			state = "expired"
		}
		if o.GetCaller() {
			state += " (this credential)"
		}
		row(w, o.GetSerial(), o.GetIssuedBy(), fmtTime(o.GetNotBefore(), o.NotBefore != nil),
			fmtTime(o.GetNotAfter(), o.NotAfter != nil), until(o.GetNotAfter().AsTime()), state)
	}
	return w.Flush()
}

func addRevoke(g *globals, cmd *cobra.Command) {

	var force bool
	var reason string
	revoke := &cobra.Command{
		Use:   "revoke SERIAL [--force] [--reason TEXT]",
		Short: "Revoke one operator credential by its certificate serial; every later call made with it is refused",
		Long: `Revoke one operator credential by its certificate serial (meshctl operator list shows them;
openssl's form, upper case with colons, is accepted). Every later call made with it is refused,
on connections already open too. The credential you call with may be revoked: this call
succeeds and your next one fails. Revoking the last valid credential is refused unless --force:
it locks every operator out until 'meshd operator issue --out DIR' is run with meshd stopped
(or meshd restarts and writes a new one to <data-dir>/operator).`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				resp, err := c.RevokeOperator(ctx, &meshv1.RevokeOperatorRequest{Serial: args[0], Force: force, Reason: reason})
				if err != nil {
					return err
				}
				return g.show(view{doc: resp, names: []string{"operator/" + resp.GetOperator().GetSerial()}, table: func(bool) error {
					printOperatorRevoked(g.io.Out, resp)
					return nil
				}})
			})
		},
	}
	revoke.Flags().BoolVar(&force, "force", false, "revoke it even if it is the last valid operator credential")
	revoke.Flags().StringVar(&reason, "reason", "", "free text kept with the revocation")
	outputs(revoke, formatTable, formatName, formatJSON, formatYAML, formatJSONPath)
	cmd.AddCommand(revoke)
}

// printOperatorRevoked writes what a RevokeOperator did.
func printOperatorRevoked(w interface{ Write([]byte) (int, error) }, resp *meshv1.RevokeOperatorResponse) {
	o := resp.GetOperator()
	if resp.GetAlreadyRevoked() {
		fmt.Fprintf(w, "operator credential %s was already revoked (%s); nothing changed\n", o.GetSerial(), fmtTime(o.GetRevokedAt(), o.RevokedAt != nil))
		return
	}
	fmt.Fprintf(w, "operator credential %s revoked (issued by %s, expires %s)\n", o.GetSerial(), o.GetIssuedBy(), fmtTime(o.GetNotAfter(), o.NotAfter != nil))
	if o.GetCaller() {
		fmt.Fprintln(w, "it is the credential this call was made with: your next call with it will be refused")
	}
	fmt.Fprintf(w, "%d valid operator credentials left\n", resp.GetRemaining())
}
