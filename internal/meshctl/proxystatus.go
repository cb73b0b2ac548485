package meshctl

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	yamlv2 "go.yaml.in/yaml/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

func syncState(s meshv1.SyncState, reason string) string {
	name := strings.TrimPrefix(s.String(), "SYNC_STATE_")
	if s == meshv1.SyncState_SYNC_STATE_NACKED && reason != "" {
		return name + " (" + reason + ")"
	}
	return name
}

// proxyState is the STATUS column: the state, with what makes it so.
func proxyState(ps *meshv1.ProxySync) string {
	switch ps.GetState() {
	case meshv1.SyncState_SYNC_STATE_UNTRUSTED:
		return "UNTRUSTED (svid root " + ps.GetSvidRoot() + " not in bundle)"
	case meshv1.SyncState_SYNC_STATE_UNTRUSTED_PEERS:
		return fmt.Sprintf("UNTRUSTED PEERS (%d)", len(ps.GetUntrustedPeers()))
	}
	return syncState(ps.GetState(), ps.GetNackReason())
}

func newProxyStatusCmd(g *globals) *cobra.Command {
	return outputs(&cobra.Command{
		Use:   "proxy-status",
		Short: "Each proxy's state: SYNCED, STALE, NACKED (reason), DISCONNECTED, UNTRUSTED, UNTRUSTED PEERS (n) or REVOKED",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				resp, err := c.ProxyStatus(ctx, &meshv1.ProxyStatusRequest{})
				if err != nil {
					return err
				}
				var names []string
				for _, ps := range resp.GetProxies() {
					names = append(names, "proxy/"+ps.GetProxy().GetInstanceId())
				}
				return g.show(view{doc: resp, names: names, table: func(wide bool) error {
					return g.proxyStatusTable(resp, wide)
				}})
			})
		},
	}, formatTable, formatWide, formatName, formatJSON, formatYAML, formatJSONPath)
}

func (g *globals) proxyStatusTable(resp *meshv1.ProxyStatusResponse, wide bool) error {
	h := "INSTANCE\tSERVICE\tIDENTITY\tADDRESS\tSTATUS\tVERSION\tFILES\tSVID EXPIRES IN"
	if wide {
		h += "\tCURRENT VERSION\tREVISION\tPROXY VERSION\tLAST MESSAGE"
	}
	w := g.newTable(h)
	for _, ps := range resp.GetProxies() {
		p := ps.GetProxy()
		version := ps.GetAckedVersion()
		if version == "" {
			version = "-"
		}
		files := "-"
		if n := len(ps.GetFiles()); n > 0 {
			last := ps.GetFiles()[0].GetWrittenAt().AsTime()
			for _, f := range ps.GetFiles() {
				if t := f.GetWrittenAt().AsTime(); t.After(last) {
					last = t
				}
			}
			files = fmt.Sprintf("%d (last written %s)", n, last.UTC().Format("15:04:05Z"))
		}
		cells := []string{p.GetInstanceId(), p.GetService(), p.GetSpiffeId(), p.GetAddress(),
			proxyState(ps), version, files, until(p.GetSvidExpiresAt().AsTime())}
		if wide {
			cells = append(cells, orDash(ps.GetCurrentVersion()), fmt.Sprint(ps.GetRevision()), orDash(p.GetVersion()), fmtTime(ps.GetLastMessage(), ps.LastMessage != nil))
		}
		row(w, cells...)
	}
	return w.Flush()
}

func newProxyConfigCmd(g *globals) *cobra.Command {
	return outputs(&cobra.Command{
		Use:   "proxy-config INSTANCE",
		Short: "What a proxy has applied: its snapshot's resources as YAML, and endpoints",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
				resp, err := c.ProxyConfig(ctx, &meshv1.ProxyConfigRequest{InstanceId: args[0]})
				if err != nil {
					return err
				}
				snap := resp.GetApplied()
				st := resp.GetStatus()
				if g.out.format != formatTable {
					doc, err := proxyConfigDoc(args[0], resp)
					if err != nil {
						return err
					}
					return g.show(view{doc: doc})
				}
				printf(g.io.Out, "# instance %s, status %s, applied version %s\n", args[0], proxyState(st), orDash(st.GetAckedVersion()))
				if snap == nil {
					fmt.Fprintln(g.io.Out, "# meshd holds no copy of the applied snapshot yet (it keeps the last one ACKed since it started)")
					return nil
				}
				var objs []api.Object
				for _, r := range snap.GetResources() {
					o, err := api.FromProto(r)
					if err != nil {
						return err
					}
					objs = append(objs, o)
				}
				if err := api.Encode(g.io.Out, objs...); err != nil {
					return err
				}
				eps, err := protojson.Marshal(&meshv1.Snapshot{Endpoints: snap.GetEndpoints()})
				if err != nil {
					return err
				}
				y, err := yaml.JSONToYAML(eps)
				if err != nil {
					return err
				}
				fmt.Fprintf(g.io.Out, "---\n# endpoints\n%s", y)
				return nil
			})
		},
	}, docFormats...)
}

// proxyConfigDoc is proxy-config's document: the instance, its status
// (as proxy-status prints it) and the snapshot it applied, its resources
// in the form get prints them.
func proxyConfigDoc(instance string, resp *meshv1.ProxyConfigResponse) (yamlv2.MapSlice, error) {
	st, err := docTree(resp.GetStatus())
	if err != nil {
		return nil, err
	}
	doc := yamlv2.MapSlice{{Key: "instanceId", Value: instance}, {Key: "status", Value: st}}
	snap := resp.GetApplied()
	if snap == nil {
		return doc, nil
	}
	objs := []any{}
	for _, r := range snap.GetResources() {
		o, err := api.FromProto(r)
		if err != nil {
			return nil, err
		}
		t, err := objectTree(o)
		if err != nil {
			return nil, err
		}
		objs = append(objs, t)
	}
	// The rest of the snapshot (endpoints, bundle, revocations) as
	// protojson, after its version and resources.
	rest, err := docTree(&meshv1.Snapshot{Endpoints: snap.GetEndpoints(), TrustBundle: snap.GetTrustBundle(),
		DeniedIdentities: snap.GetDeniedIdentities(), RevokedSerials: snap.GetRevokedSerials(), RevokedInstances: snap.GetRevokedInstances()})
	if err != nil {
		return nil, err
	}
	applied := yamlv2.MapSlice{{Key: "version", Value: snap.GetVersion()}, {Key: "resources", Value: objs}}
	if m, ok := rest.(yamlv2.MapSlice); ok {
		applied = append(applied, m...)
	}
	return append(doc, yamlv2.MapItem{Key: "applied", Value: applied}), nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
