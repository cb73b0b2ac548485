package meshctl

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

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
	out         output // output, parsed for the command that runs
	noHeaders   bool
	timeout     time.Duration
}

// DefaultPort is meshd's gRPC port: --server HOST means HOST:15010.
const DefaultPort = "15010"

// NewRoot builds the meshctl command tree.
func NewRoot(stdio IO) *cobra.Command {
	// Every output passes through termsafe (output.go): a workload's
	// strings reach the operator's terminal escaped.
	stdio = IO{Out: termsafe.NewWriter(stdio.Out), Err: termsafe.NewWriter(stdio.Err)}
	g := &globals{io: stdio}
	root := &cobra.Command{
		Use:   "meshctl",
		Short: "Operate a minimesh mesh: resources, proxies, identities and the CA, through meshd",
		Long: `meshctl operates a minimesh mesh through meshd's admin API, with the operator
credential (--credentials, MESHCTL_CREDENTIALS) over mTLS:

  resources     apply, get, diff and delete Services, Routes, RateLimits,
                AccessLogs, AuthorizationPolicies and ConfigFiles (YAML, as kubectl)
  proxies       proxies, proxy-status, proxy-config, top, procz, proxy forget|revoke
  identities    token create|list|revoke, certs, identity deny, operator list|revoke
  the CA        ca status, ca rotate
  checks        check, authz explain, version
  operations    backup, inject (adds mesh-proxy to Kubernetes manifests),
                dashboard (a web UI on 127.0.0.1: topology, proxies, CA, policy)

Every command prints a table, or with -o json|yaml|jsonpath=TEMPLATE one
document (what get prints, apply -f reads back); some also -o wide or name.`,
		Example: `  meshctl --server 127.0.0.1:15010 --credentials /var/lib/meshd/operator get routes
  export MESHCTL_SERVER=meshd.example:15010 MESHCTL_CREDENTIALS=$HOME/.minimesh/operator
  meshctl apply -f mesh.yaml --wait
  meshctl proxy-status`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			out, err := parseOutput(cmd, g.output)
			if err != nil {
				return err
			}
			g.out = out
			if g.noHeaders && out.format != formatTable && out.format != formatWide {
				return fmt.Errorf("--no-headers: only with -o table or wide, not %s", out.format)
			}
			return nil
		},
	}
	root.SetOut(stdio.Out)
	root.SetErr(stdio.Err)
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", envOr("MESHCTL_SERVER", "127.0.0.1:"+DefaultPort), "meshd address: host[:port] (port "+DefaultPort+" when omitted), a comma-separated list of its replicas, or a DNS name with several addresses (env MESHCTL_SERVER)")
	pf.StringVar(&g.credentials, "credentials", os.Getenv("MESHCTL_CREDENTIALS"), "directory with the operator credential: svid.pem, svid_key.pem, bundle.pem (env MESHCTL_CREDENTIALS)")
	pf.StringVarP(&g.output, "output", "o", formatTable, "output format: table, wide, name, json, yaml or jsonpath=TEMPLATE (each command says which it prints)")
	pf.BoolVar(&g.noHeaders, "no-headers", false, "tables without their header line")
	pf.DurationVar(&g.timeout, "timeout", 10*time.Second, "timeout of each call to meshd")
	root.AddCommand(newTokenCmd(g), newCertsCmd(g), newProxiesCmd(g), newApplyCmd(g), newGetCmd(g), newDiffCmd(g), newDeleteCmd(g), newProxyStatusCmd(g), newProxyConfigCmd(g),
		newCACmd(g), newProxyCmd(g), newIdentityCmd(g), newOperatorCmd(g), newBackupCmd(g),
		newTopCmd(g), newProczCmd(g), newAuthzCmd(g), newCheckCmd(g), newVersionCmd(g))
	root.AddCommand(newStatCmd(g), newEdgesCmd(g), newDeniesCmd(g))
	root.AddCommand(newInjectCmd(g))
	root.AddCommand(newDashboardCmd(g))
	registerCompletions(g, root)
	addExamples(root)
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

// WithDefaultPort adds meshd's port (DefaultPort) to each address of a
// comma-separated list that has none: "meshd.example" is
// "meshd.example:15010" (gRPC's resolver would take 443), "::1" and
// "[::1]" are "[::1]:15010".
func WithDefaultPort(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		a := strings.TrimSpace(p)
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err == nil {
			continue
		}
		host := strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")
		if strings.Contains(host, "]") || strings.Contains(host, "[") {
			continue // malformed: replicas.Parse says why
		}
		if !strings.Contains(host, ":") || net.ParseIP(host) != nil {
			parts[i] = net.JoinHostPort(host, DefaultPort)
		}
	}
	return strings.Join(parts, ",")
}

// Dial opens a connection to the meshd at server with the operator
// credential in dir (svid.pem, svid_key.pem, bundle.pem), authenticating
// meshd by its SPIFFE ID against the credential's bundle.
func Dial(server, dir string) (*grpc.ClientConn, error) {
	server = WithDefaultPort(server)
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
	conn, err := g.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout+extra)
	defer cancel()
	// A handshake meshd's certificate fails (a stale credential, a meshd
	// restored from an older backup) is explained, not left to x509; an
	// address where no meshd answers gets a hint.
	return g.hint(g.explain(fn(ctx, meshv1.NewAdminServiceClient(conn))))
}

// errUnreachable marks an error that says meshd did not answer at the
// address.
var errUnreachable = errors.New("meshd unreachable")

// hint adds to an error that says nothing answered at --server where to
// look.
func (g *globals) hint(err error) error {
	if err == nil || errors.Is(err, errUnreachable) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok || isHandshakeFailure(err) {
		return err
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
	default:
		return err
	}
	return &hinted{err: err, msg: fmt.Sprintf("%s\n  is meshd running at %s? set --server or MESHCTL_SERVER", st.Message(), WithDefaultPort(g.server))}
}

// hinted is an error with a hint; it unwraps to the gRPC error.
type hinted struct {
	err error
	msg string
}

func (h *hinted) Error() string { return h.msg }
func (h *hinted) Unwrap() []error {
	return []error{h.err, errUnreachable}
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
