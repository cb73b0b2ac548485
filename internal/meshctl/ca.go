package meshctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	meshv1 "minimesh/proto/mesh/v1"
)

func newCACmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "The certificate authority: root rotation and status"}
	var force bool
	rotate := &cobra.Command{
		Use:   "rotate [--force]",
		Short: "Start a root rotation (or, with --force, move one to its next phase now)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				resp, err := c.RotateCA(ctx, &meshv1.RotateCARequest{Force: force})
				if err != nil {
					return err
				}
				if g.output != "table" {
					return g.print(resp)
				}
				return printCAStatus(g, resp.GetStatus())
			})
		},
	}
	rotate.Flags().BoolVar(&force, "force", false, "move the rotation to its next phase without waiting for the proxies")
	status := &cobra.Command{
		Use:   "status",
		Short: "The roots, the rotation phase and which proxies hold what",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				resp, err := c.CAStatus(ctx, &meshv1.CAStatusRequest{})
				if err != nil {
					return err
				}
				if g.output != "table" {
					return g.print(resp)
				}
				return printCAStatus(g, resp)
			})
		},
	}
	cmd.AddCommand(rotate, status)
	return cmd
}

func shortPin(p string) string {
	if len(p) > 19 {
		return p[:19] + "…"
	}
	return p
}

func printCAStatus(g *globals, st *meshv1.CAStatusResponse) error {
	fmt.Fprintf(g.io.Out, "phase:        %s\n", st.GetPhase())
	fmt.Fprintf(g.io.Out, "active root:  %s (expires %s)\n", st.GetActive().GetPin(), fmtTime(st.GetActive().GetNotAfter(), st.GetActive().GetNotAfter() != nil))
	if n := st.GetNext(); n != nil {
		fmt.Fprintf(g.io.Out, "next root:    %s\n", n.GetPin())
	}
	for _, r := range st.GetRetired() {
		fmt.Fprintf(g.io.Out, "retired root: %s\n", r.GetPin())
	}
	fmt.Fprintf(g.io.Out, "intermediate: expires %s\n", fmtTime(st.GetIntermediateNotAfter(), st.GetIntermediateNotAfter() != nil))
	if st.GetWaitingFor() != "" {
		fmt.Fprintf(g.io.Out, "waiting for:  %s\n", st.GetWaitingFor())
	}
	if n := st.GetStaleTokens(); n > 0 {
		fmt.Fprintf(g.io.Out, "join tokens:  %d usable carry a retired root's pin; their pods cannot bootstrap: make new ones (meshctl token list shows them)\n", n)
	}
	w := tabwriter.NewWriter(g.io.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "\nINSTANCE\tSERVICE\tCONNECTED\tBUNDLE ACKED\tSVID ROOT")
	for _, p := range st.GetProxies() {
		var roots []string
		for _, r := range p.GetAckedRoots() {
			roots = append(roots, shortPin(r))
		}
		fmt.Fprintf(w, "%s\t%s\t%v\t%s\t%s\n", p.GetInstanceId(), p.GetService(), p.GetConnected(), orDash(strings.Join(roots, ",")), orDash(shortPin(p.GetSvidRoot())))
	}
	return w.Flush()
}

func newProxyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "proxy", Short: "Act on one proxy instance"}
	cmd.AddCommand(&cobra.Command{
		Use:   "revoke INSTANCE",
		Short: "No more renewals; its endpoint goes and every proxy closes its connections",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				if _, err := c.RevokeProxy(ctx, &meshv1.RevokeProxyRequest{InstanceId: args[0]}); err != nil {
					return err
				}
				fmt.Fprintf(g.io.Out, "proxy %s revoked\n", args[0])
				return nil
			})
		},
	})
	return cmd
}

func newIdentityCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "identity", Short: "Act on a SPIFFE identity"}
	cmd.AddCommand(&cobra.Command{
		Use:   "deny SPIFFEID",
		Short: "No certificates for it any more; every proxy closes its connections",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				if _, err := c.DenyIdentity(ctx, &meshv1.DenyIdentityRequest{SpiffeId: args[0]}); err != nil {
					return err
				}
				fmt.Fprintf(g.io.Out, "identity %s denied\n", args[0])
				return nil
			})
		},
	})
	return cmd
}

// backupCAKeysHeader is controlplane.BackupCAKeysHeader: "encrypted" when
// the backup's CA keys are encrypted, "clear" otherwise.
const backupCAKeysHeader = "minimesh-ca-keys"

func newBackupCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "backup FILE",
		Short: "Write a consistent copy of meshd's data file, taken live (restore with meshd --restore)",
		Long: `Write a consistent copy of meshd's data file, taken live (restore with meshd --restore).

The copy holds the certificate authority's private keys. When meshd runs
with --ca-key-file they are encrypted (AES-256-GCM), and restoring the copy
needs that same key file: keep the two apart. Without --ca-key-file they are
in clear: whoever reads the copy can issue certificates for the whole mesh,
and backup warns on stderr. The file is written mode 0600.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				stream, err := c.Backup(ctx, &meshv1.BackupRequest{})
				if err != nil {
					return err
				}
				// The backup holds the CA keys: 0600, and it appears whole or
				// not at all (temp file, fsync, rename).
				dir := filepath.Dir(args[0])
				if err := os.MkdirAll(dir, 0o700); err != nil {
					return err
				}
				tmp, err := os.CreateTemp(dir, ".backup-*")
				if err != nil {
					return err
				}
				defer os.Remove(tmp.Name())
				defer tmp.Close()
				var n int64
				for {
					m, err := stream.Recv()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						return err
					}
					w, err := tmp.Write(m.GetChunk())
					n += int64(w)
					if err != nil {
						return err
					}
				}
				if n == 0 {
					return errors.New("backup: meshd sent nothing")
				}
				if err := tmp.Sync(); err != nil {
					return err
				}
				if err := tmp.Close(); err != nil {
					return err
				}
				if err := os.Rename(tmp.Name(), args[0]); err != nil {
					return err
				}
				fmt.Fprintf(g.io.Out, "wrote %s (%d bytes)\n", args[0], n)
				// meshd says in a header whether the CA keys in the copy are
				// encrypted; a meshd that does not say is taken as clear.
				if md, err := stream.Header(); err != nil || !slices.Equal(md.Get(backupCAKeysHeader), []string{"encrypted"}) {
					fmt.Fprintf(g.io.Err, "warning: %s holds the CA's private keys in clear (meshd runs without --ca-key-file): whoever reads it can issue certificates for the whole mesh; keep it as secret as the CA, or start meshd with --ca-key-file\n", args[0])
				}
				return nil
			})
		},
	}
}
