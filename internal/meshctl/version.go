package meshctl

import (
	"context"
	"fmt"
	"runtime"
	"strings"

	"github.com/spf13/cobra"
	yamlv2 "go.yaml.in/yaml/v2"

	"minimesh/internal/version"
	meshv1 "minimesh/proto/mesh/v1"
)

// clientVersion is meshctl's part of version's document.
type clientVersion struct {
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

func newVersionCmd(g *globals) *cobra.Command {
	var client bool
	cmd := &cobra.Command{
		Use:   "version [--client]",
		Short: "meshctl's version and meshd's (its store, trust domain and replicas)",
		Long: `meshctl's version and, through meshd's Version call, meshd's: its version,
store, trust domain and, on etcd, its replicas and leader. --client asks
meshd nothing. When meshd does not answer, the client's is printed and the
command fails.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cv := clientVersion{Version: version.Version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
			var sv *meshv1.VersionResponse
			var err error
			if !client {
				err = g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
					sv, err = c.Version(ctx, &meshv1.VersionRequest{})
					return err
				})
			}
			cTree, terr := docTree(cv)
			if terr != nil {
				return terr
			}
			doc := yamlv2.MapSlice{{Key: "clientVersion", Value: cTree}}
			if sv != nil {
				sTree, terr := docTree(sv)
				if terr != nil {
					return terr
				}
				doc = append(doc, yamlv2.MapItem{Key: "serverVersion", Value: sTree})
			}
			if perr := g.show(view{doc: doc, table: func(bool) error {
				printf(g.io.Out, "Client Version: %s (%s %s)\n", cv.Version, cv.GoVersion, cv.Platform)
				if sv == nil {
					return nil
				}
				printf(g.io.Out, "Server Version: %s (store %s, trust domain %s)\n", sv.GetVersion(), sv.GetStore(), sv.GetTrustDomain())
				if len(sv.GetReplicas()) > 0 {
					var reps []string
					for _, r := range sv.GetReplicas() {
						st := "answering"
						if !r.GetAnswering() {
							st = "not answering"
						}
						reps = append(reps, fmt.Sprintf("%s (%s)", r.GetName(), st))
					}
					printf(g.io.Out, "Replicas:       %s; leader %s\n", strings.Join(reps, ", "), orDash(sv.GetLeader()))
				}
				return nil
			}}); perr != nil {
				return perr
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&client, "client", false, "meshctl's version only; ask meshd nothing")
	return outputs(cmd, docFormats...)
}
