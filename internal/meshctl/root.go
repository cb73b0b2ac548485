package meshctl

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"minimesh/certs"
	"minimesh/internal/replicas"
	"minimesh/internal/termsafe"
	meshv1 "minimesh/proto/mesh/v1"
)

// IO is where commands write.
type IO struct {
	Out io.Writer
	Err io.Writer
}

type globals struct {
	io          IO
	server      string
	credentials string
	output      string
	timeout     time.Duration
}

// NewRoot builds the meshctl command tree.
func NewRoot(stdio IO) *cobra.Command {
	// Every output passes through termsafe (output.go): a workload's
	// strings reach the operator's terminal escaped.
	stdio = IO{Out: termsafe.NewWriter(stdio.Out), Err: termsafe.NewWriter(stdio.Err)}
	g := &globals{io: stdio}
	root := &cobra.Command{
		Use:           "meshctl",
		Short:         "Operate a minimesh mesh: tokens, certificates, proxies",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdio.Out)
	root.SetErr(stdio.Err)
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", envOr("MESHCTL_SERVER", "127.0.0.1:15010"), "meshd address: host:port, a comma-separated list of its replicas, or a DNS name with several addresses (env MESHCTL_SERVER)")
	pf.StringVar(&g.credentials, "credentials", os.Getenv("MESHCTL_CREDENTIALS"), "directory with the operator credential: svid.pem, svid_key.pem, bundle.pem (env MESHCTL_CREDENTIALS)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
	pf.DurationVar(&g.timeout, "timeout", 10*time.Second, "timeout of each call to meshd")
	root.AddCommand(newTokenCmd(g), newCertsCmd(g), newProxiesCmd(g), newApplyCmd(g), newGetCmd(g), newDeleteCmd(g), newProxyStatusCmd(g), newProxyConfigCmd(g),
		newCACmd(g), newProxyCmd(g), newIdentityCmd(g), newOperatorCmd(g), newBackupCmd(g),
		newTopCmd(g), newProczCmd(g), newAuthzCmd(g), newCheckCmd(g))
	root.AddCommand(newInjectCmd(g))
	return root
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// dial connects to meshd with the operator credential, authenticating meshd
// by its SPIFFE ID against the credential's bundle.
func (g *globals) dial() (*grpc.ClientConn, error) {
	if g.credentials == "" {
		return nil, errors.New("no operator credential: pass --credentials DIR or set MESHCTL_CREDENTIALS (meshd writes it to <data-dir>/operator)")
	}
	return Dial(g.server, g.credentials)
}

// Dial opens a connection to the meshd at server with the operator
// credential in dir (svid.pem, svid_key.pem, bundle.pem), authenticating
// meshd by its SPIFFE ID against the credential's bundle.
func Dial(server, dir string) (*grpc.ClientConn, error) {
	td, err := trustDomainOf(dir)
	if err != nil {
		return nil, err
	}
	// meshd replaces the credential's files one by one when it re-issues
	// it; a load that lands in between sees a key and a certificate that do
	// not match, and tries again.
	svid, bundle, err := certs.LoadMountedSVID(dir, td)
	for i := 0; err != nil && i < 5 && !os.IsNotExist(errors.Unwrap(err)); i++ {
		time.Sleep(50 * time.Millisecond)
		svid, bundle, err = certs.LoadMountedSVID(dir, td)
	}
	if err != nil {
		return nil, err
	}
	src := certs.NewSVIDSource(nil)
	src.Set(svid)
	tc := certs.MTLSClientConfig(src, certs.NewBundleSource(bundle), certs.AuthorizeID(certs.MeshdID(td)), certs.TLSOptions{})
	// Several replicas (a list, or a DNS name with several addresses): the
	// call goes to one that answers.
	return replicas.NewClient(server, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
}

func trustDomainOf(dir string) (spiffeid.TrustDomain, error) {
	b, err := os.ReadFile(filepath.Join(dir, certs.SVIDFile))
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("operator credential: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("operator credential: %s holds no PEM certificate", filepath.Join(dir, certs.SVIDFile))
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("operator credential: %w", err)
	}
	id, err := x509svid.IDFromCert(c)
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("operator credential: %w", err)
	}
	return id.TrustDomain(), nil
}

// admin runs fn with an admin client and a bounded context.
func (g *globals) admin(fn func(ctx context.Context, c meshv1.AdminServiceClient) error) error {
	return g.adminFor(0, fn)
}

// adminFor is admin with extra time on top of --timeout (--wait).
func (g *globals) adminFor(extra time.Duration, fn func(ctx context.Context, c meshv1.AdminServiceClient) error) error {
	if g.output != "table" && g.output != "json" && g.output != "yaml" {
		return fmt.Errorf("--output: must be table, json or yaml, got %q", g.output)
	}
	conn, err := g.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout+extra)
	defer cancel()
	// A handshake meshd's certificate fails (a stale credential, a meshd
	// restored from an older backup) is explained, not left to x509.
	return g.explain(fn(ctx, meshv1.NewAdminServiceClient(conn)))
}

// print writes m as JSON or YAML, as --output says.
func (g *globals) print(m proto.Message) error {
	if g.output == "yaml" {
		b, err := protojson.Marshal(m)
		if err != nil {
			return err
		}
		y, err := yaml.JSONToYAML(b)
		if err != nil {
			return err
		}
		_, err = g.io.Out.Write(y)
		return err
	}
	return g.printJSON(m)
}

func (g *globals) printJSON(m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: false}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(g.io.Out, string(b))
	return err
}

func fmtTime(t interface{ AsTime() time.Time }, valid bool) string {
	if !valid {
		return "-"
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

func until(t time.Time) string {
	d := time.Until(t).Round(time.Second)
	if d < 0 {
		return "expired"
	}
	return d.String()
}
