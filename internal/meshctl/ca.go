package meshctl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	meshv1 "minimesh/proto/mesh/v1"
)

func newCACmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "The certificate authority: root rotation and status"}
	var (
		force, yes bool
		wait       time.Duration
	)
	rotate := &cobra.Command{
		Use:   "rotate [--force [--yes]] [--wait[=TIMEOUT]]",
		Short: "Start a root rotation (or, with --force, move one to its next phase now)",
		Long: `Start a root rotation (or, with --force, move one to its next phase now).

--force during a rotation breaks the proxies the phase waits for: in phase
prepared those whose bundle lacks the new root, in phase activated those
whose SVID still chains to the old one (their peers and meshd refuse them).
It prints them and needs --yes; at a terminal it asks instead, and without
one and without --yes it refuses.

--wait follows the rotation until it is idle again, printing its phase and
the proxies it waits for.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.adminFor(wait, func(ctx context.Context, c meshv1.AdminServiceClient) error {
				if force {
					if err := g.confirmForce(ctx, cmd, c, yes); err != nil {
						return err
					}
				}
				cctx, cancel := context.WithTimeout(ctx, g.timeout)
				defer cancel()
				if wait > 0 && !force {
					// --wait on a rotation under way follows it.
					st, err := c.CAStatus(cctx, &meshv1.CAStatusRequest{})
					if err != nil {
						return err
					}
					if st.GetPhase() != "idle" {
						printf(g.io.Err, "a root rotation is under way (phase %s); following it\n", st.GetPhase())
						if st, err = g.waitRotation(ctx, c, wait); err != nil {
							return err
						}
						return g.show(view{doc: &meshv1.RotateCAResponse{Status: st}, table: func(bool) error { return printCAStatus(g, st) }})
					}
				}
				resp, err := c.RotateCA(cctx, &meshv1.RotateCARequest{Force: force})
				if err != nil {
					return err
				}
				st := resp.GetStatus()
				if wait > 0 {
					if st, err = g.waitRotation(ctx, c, wait); err != nil {
						return err
					}
					resp.Status = st
				}
				return g.show(view{doc: resp, table: func(bool) error { return printCAStatus(g, st) }})
			})
		},
	}
	outputs(rotate, docFormats...)
	rotate.Flags().BoolVar(&force, "force", false, "move the rotation to its next phase without waiting for the proxies (breaks those it waits for; needs --yes)")
	rotate.Flags().BoolVar(&yes, "yes", false, "with --force: go ahead without asking, whatever it breaks")
	addWaitFlag(rotate.Flags(), &wait, "the rotation is idle again")
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
				return g.show(view{doc: resp, table: func(bool) error { return printCAStatus(g, resp) }})
			})
		},
	}
	outputs(status, docFormats...)
	cmd.AddCommand(rotate, status)
	return cmd
}

// confirmForce prints what --force would break now and asks for
// confirmation: --yes, or "yes" typed at a terminal. Without either it
// refuses.
func (g *globals) confirmForce(ctx context.Context, cmd *cobra.Command, c meshv1.AdminServiceClient, yes bool) error {
	cctx, cancel := context.WithTimeout(ctx, g.timeout)
	st, err := c.CAStatus(cctx, &meshv1.CAStatusRequest{})
	cancel()
	if err != nil {
		return err
	}
	var what string
	switch st.GetPhase() {
	case "idle":
		return nil // --force starts a rotation like a plain rotate: nothing breaks
	case "prepared":
		what = "activates the new root now: it signs meshd's and new SVIDs, which these proxies cannot verify (their bundle lacks it)"
	default:
		what = "drops the retired root now: these proxies still hold SVIDs from it, which their peers and meshd will refuse"
	}
	brk := st.GetWouldBreak()
	printf(g.io.Err, "ca rotate --force in phase %s %s:\n", st.GetPhase(), what)
	if len(brk) == 0 {
		printf(g.io.Err, "  none that meshd knows of\n")
	}
	for _, id := range brk {
		printf(g.io.Err, "  %s\n", id)
	}
	if yes {
		return nil
	}
	if f, isFile := cmd.InOrStdin().(*os.File); isFile && isTerminal(f) {
		printf(g.io.Err, "Type yes to go on: ")
		line, _ := bufio.NewReader(f).ReadString('\n')
		if strings.TrimSpace(line) == "yes" {
			return nil
		}
		return errors.New("ca rotate --force: not confirmed; nothing changed")
	}
	return fmt.Errorf("ca rotate --force would break %d proxies (listed above) and needs --yes (no terminal to ask at); nothing changed", len(brk))
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
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
	if d := st.GetWaitingDisconnected(); len(d) > 0 {
		printf(g.io.Out, "  disconnected: %s: a dead instance holds the rotation until meshd forgets it (--forget-after); `meshctl proxy forget INSTANCE` does it now\n", strings.Join(d, ", "))
	}
	if b := st.GetWouldBreak(); len(b) > 0 {
		printf(g.io.Out, "would break:  %s (if the rotation were forced on now)\n", strings.Join(b, ", "))
	}
	if u := st.GetUntrusted(); len(u) > 0 {
		printf(g.io.Out, "UNTRUSTED:    %s: their SVID chains to a root not in their bundle or meshd's; peers and meshd refuse them (restart them with a new join token)\n", strings.Join(u, ", "))
	}
	if n := st.GetRefusedByClients(); n > 0 {
		printf(g.io.Out, "refused:      %d TLS handshakes in the last 10 minutes were refused by clients that do not trust meshd's root (from %s): was meshd restored from a backup older than a rotation?\n", n, strings.Join(st.GetRefusedByClientAddrs(), ", "))
	}
	holders := map[string][]string{}
	for _, p := range st.GetProxies() {
		if p.GetSvidRoot() != "" {
			holders[p.GetSvidRoot()] = append(holders[p.GetSvidRoot()], p.GetInstanceId())
		}
	}
	for _, pin := range slices.Sorted(maps.Keys(holders)) {
		role := "unknown to meshd"
		switch {
		case pin == st.GetActive().GetPin():
			role = "active"
		case pin == st.GetNext().GetPin():
			role = "next"
		case containsRoot(st.GetRetired(), pin):
			role = "retired"
		}
		printf(g.io.Out, "SVIDs of %s (%s): %d proxies: %s\n", shortPin(pin), role, len(holders[pin]), strings.Join(holders[pin], ", "))
	}
	if n := st.GetStaleTokens(); n > 0 {
		fmt.Fprintf(g.io.Out, "join tokens:  %d usable carry a retired root's pin; their pods cannot bootstrap: make new ones (meshctl token list shows them)\n", n)
	}
	fmt.Fprintln(g.io.Out)
	w := g.newTable("INSTANCE\tSERVICE\tCONNECTED\tBUNDLE ACKED\tSVID ROOT\tSTATE")
	for _, p := range st.GetProxies() {
		var roots []string
		for _, r := range p.GetAckedRoots() {
			roots = append(roots, shortPin(r))
		}
		state := "-"
		switch {
		case p.GetRevoked():
			state = "REVOKED"
		case p.GetUntrusted():
			state = "UNTRUSTED"
		case slices.Contains(st.GetWouldBreak(), p.GetInstanceId()):
			state = "would break if forced"
		}
		printf(w, "%s\t%s\t%v\t%s\t%s\t%s\n", p.GetInstanceId(), p.GetService(), p.GetConnected(), orDash(strings.Join(roots, ",")), orDash(shortPin(p.GetSvidRoot())), state)
	}
	return w.Flush()
}

func newProxyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "proxy", Short: "Act on one proxy instance"}
	var forceForget bool
	forget := &cobra.Command{
		Use:   "forget INSTANCE [--force]",
		Short: "Drop a dead instance's record now, so a root rotation no longer waits for it",
		Long: `Drop a dead instance's record now (meshd forgets instances disconnected
longer than --forget-after, 72h by default), so a root rotation no longer
waits for it. A connected instance is refused unless --force, which also
ends its stream (a live proxy registers again). A revoked instance is never
forgotten: its revocation is on its record.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				resp, err := c.ForgetProxy(ctx, &meshv1.ForgetProxyRequest{InstanceId: args[0], Force: forceForget})
				if err != nil {
					return err
				}
				doc := forgotten{InstanceID: args[0], Forgotten: true, WasConnected: resp.GetWasConnected()}
				return g.show(view{doc: doc, names: []string{"proxy/" + args[0]}, table: func(bool) error {
					printf(g.io.Out, "proxy %s forgotten\n", args[0])
					if resp.GetWasConnected() {
						printf(g.io.Out, "its stream was open and was ended: if it is alive it registers again\n")
					}
					return nil
				}})
			})
		},
	}
	outputs(forget, formatTable, formatName, formatJSON, formatYAML, formatJSONPath)
	forget.Flags().BoolVar(&forceForget, "force", false, "forget it even though it is connected (its stream is ended)")
	cmd.AddCommand(forget)
	cmd.AddCommand(outputs(&cobra.Command{
		Use:   "revoke INSTANCE",
		Short: "No more renewals; its endpoint goes and every proxy closes its connections",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				if _, err := c.RevokeProxy(ctx, &meshv1.RevokeProxyRequest{InstanceId: args[0]}); err != nil {
					return err
				}
				return g.show(view{doc: revoked{ID: args[0], Revoked: true}, names: []string{"proxy/" + args[0]}, table: func(bool) error {
					printf(g.io.Out, "proxy %s revoked\n", args[0])
					return nil
				}})
			})
		},
	}, formatTable, formatName, formatJSON, formatYAML, formatJSONPath))
	return cmd
}

func newIdentityCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "identity", Short: "Act on a SPIFFE identity"}
	cmd.AddCommand(outputs(&cobra.Command{
		Use:   "deny SPIFFEID",
		Short: "No certificates for it any more; every proxy closes its connections",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				if _, err := c.DenyIdentity(ctx, &meshv1.DenyIdentityRequest{SpiffeId: args[0]}); err != nil {
					return err
				}
				return g.show(view{doc: denied{SpiffeID: args[0], Denied: true}, table: func(bool) error {
					printf(g.io.Out, "identity %s denied\n", args[0])
					return nil
				}})
			})
		},
	}, docFormats...))
	return cmd
}

// backupCAKeysHeader is controlplane.BackupCAKeysHeader: "encrypted" when
// the backup's CA keys are encrypted, "clear" otherwise.
const backupCAKeysHeader = "minimesh-ca-keys"

// forgotten is proxy forget's document.
type forgotten struct {
	InstanceID   string `json:"instanceId"`
	Forgotten    bool   `json:"forgotten"`
	WasConnected bool   `json:"wasConnected"`
}

// denied is identity deny's document.
type denied struct {
	SpiffeID string `json:"spiffeId"`
	Denied   bool   `json:"denied"`
}

// backupDoc is backup's document.
type backupDoc struct {
	File            string `json:"file"`
	Bytes           int64  `json:"bytes"`
	CAKeysEncrypted bool   `json:"caKeysEncrypted"`
}

func newBackupCmd(g *globals) *cobra.Command {
	return outputs(&cobra.Command{
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
				// meshd says in a header whether the CA keys in the copy are
				// encrypted; a meshd that does not say is taken as clear.
				md, err := stream.Header()
				encrypted := err == nil && slices.Equal(md.Get(backupCAKeysHeader), []string{"encrypted"})
				if !encrypted {
					printf(g.io.Err, "warning: %s holds the CA's private keys in clear (meshd runs without --ca-key-file): whoever reads it can issue certificates for the whole mesh; keep it as secret as the CA, or start meshd with --ca-key-file\n", args[0])
				}
				return g.show(view{doc: backupDoc{File: args[0], Bytes: n, CAKeysEncrypted: encrypted}, table: func(bool) error {
					printf(g.io.Out, "wrote %s (%d bytes)\n", args[0], n)
					return nil
				}})
			})
		},
	}, docFormats...)
}
