package meshctl

// meshctl inject: adds mesh-proxy to the pods of Kubernetes manifests, the
// way meshd's mutating webhook does (the same function: internal/inject),
// but as a pure function of the manifest and the flags, so its output can
// be reviewed, committed and diffed.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"minimesh/internal/inject"
	"minimesh/internal/version"
	meshv1 "minimesh/proto/mesh/v1"
)

func newInjectCmd(g *globals) *cobra.Command {
	var (
		file string
		opts inject.Options
	)
	cmd := &cobra.Command{
		Use:   "inject -f FILE|-",
		Short: "Add mesh-proxy to the pods of Kubernetes manifests (Pod, Deployment, StatefulSet, DaemonSet, Job)",
		Long: `inject reads Kubernetes manifests and writes them with mesh-proxy added to
every pod, as meshd's admission webhook adds it to the pods of namespaces
labelled minimesh.io/inject=enabled: a native sidecar (an init container with
restartPolicy: Always and a startup probe, so the app starts once the proxy is
ready and the proxy stops after the app), an init container that installs the
iptables redirect of the app's port, a shared process namespace, the shared and
state volumes, a projected service-account token (audience minimesh, 600 s)
the proxy bootstraps and renews with, the pins of every root of meshd's bundle
(--ca-pin; asked of meshd when not given) and --advertise from the pod IP. The
app's HTTP and TCP probes are moved to the proxy's admin port, which the
redirect leaves alone.

--join-token-secret NAME writes the older form, for clusters where meshd has no
access to the Kubernetes API: the proxy bootstraps with the join token and pin
in that Secret.

Injecting an injected manifest again changes nothing. Documents that are not
workloads (Service, ConfigMap, ...) and pods annotated minimesh.io/inject:
"false" are written unchanged; CronJob, ReplicaSet and Lists are refused.
Comments of injected documents are not kept.

  meshctl inject -f deployment.yaml | kubectl apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var r io.Reader
			switch file {
			case "":
				return errors.New("inject: -f FILE or -f - (standard input) is required")
			case "-":
				r = cmd.InOrStdin()
			default:
				f, err := os.Open(file)
				if err != nil {
					return fmt.Errorf("inject: %w", err)
				}
				defer f.Close()
				r = f
			}
			in, err := io.ReadAll(io.LimitReader(r, inject.MaxInput+1))
			if err != nil {
				return fmt.Errorf("inject: read %s: %w", file, err)
			}
			if len(in) > inject.MaxInput {
				return fmt.Errorf("inject: %s is larger than %d bytes", file, inject.MaxInput)
			}
			if len(opts.CAPins) == 0 && opts.JoinTokenSecret == "" {
				if opts.CAPins, err = g.rootPins(); err != nil {
					return fmt.Errorf("inject: --ca-pin not given, and meshd could not be asked for its roots: %w", err)
				}
			}
			out, err := inject.Inject(in, opts)
			if err != nil {
				if file != "-" {
					return fmt.Errorf("%s: %w", file, err)
				}
				return err
			}
			_, err = g.io.Out.Write(out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "filename", "f", "", "manifest file, or - for standard input")
	f.StringVar(&opts.Image, "image", "", `mesh-proxy's image (default "minimesh/minimesh:`+version.Version+`")`)
	f.StringVar(&opts.ControlPlane, "control-plane", "", `meshd's address (default "meshd.minimesh-system.svc:15010")`)
	f.StringVar(&opts.TrustDomain, "trust-domain", "", `SPIFFE trust domain (default "minimesh.local")`)
	f.StringVar(&opts.Service, "service", "", "service the pods serve (default: their serviceAccountName)")
	f.StringSliceVar(&opts.CAPins, "ca-pin", nil, "pins (sha256:<hex>) of meshd's roots, comma-separated or repeated (default: every root of the bundle meshd serves, asked of meshd)")
	f.StringVar(&opts.JoinTokenSecret, "join-token-secret", "", `the older form: bootstrap with the join token and pin of this Secret (keys "token" and "ca-pin") instead of the pod's service-account token`)
	f.IntVar(&opts.AppPort, "port", 0, "the app's port (default: the one TCP containerPort the app declares)")
	f.BoolVar(&opts.CaptureOutbound, "capture-outbound", false, "redirect the app's outbound TCP to mesh-proxy: HTTP to mesh services over mTLS (outside hosts only through --egress), anything else passed through")
	f.StringArrayVar(&opts.Upstreams, "upstream", nil, "passed to mesh-proxy as --upstream: SERVICE=LOCALADDR[=REMOTEADDR=SPIFFEID] (repeatable)")
	_ = cmd.MarkFlagFilename("filename", "yaml", "yml", "json")
	// Its output is manifests, as YAML: -o yaml says so, the rest is refused.
	return outputs(cmd, formatTable, formatYAML)
}

// rootPins asks meshd for the pins of every root of its bundle: the active
// one, and during a rotation the next and the retired ones.
func (g *globals) rootPins() ([]string, error) {
	var pins []string
	err := g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
		st, err := c.CAStatus(ctx, &meshv1.CAStatusRequest{})
		if err != nil {
			return err
		}
		pins = append(pins, st.GetActive().GetPin())
		if n := st.GetNext(); n != nil {
			pins = append(pins, n.GetPin())
		}
		for _, r := range st.GetRetired() {
			pins = append(pins, r.GetPin())
		}
		return nil
	})
	return pins, err
}
