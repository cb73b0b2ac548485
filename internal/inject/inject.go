// Package inject adds mesh-proxy to Kubernetes pods. It is the one code
// path of both `meshctl inject` (manifests in, manifests out: a pure
// function of the manifest and the flags, so its output can be reviewed,
// committed and diffed) and meshd's mutating admission webhook
// (controlplane/webhook, through PodJSON): a pod injected by the command
// comes out of the webhook byte-identical.
package inject

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"minimesh/api"
	"minimesh/certs"
	"minimesh/internal/version"
)

// Names and ports inject adds to a pod. Containers, volumes and
// annotations with these names are inject's own: injecting again replaces
// them.
const (
	ProxyContainer    = "mesh-proxy"
	RedirectContainer = "mesh-redirect"
	StateVolume       = "mesh-state"
	SharedVolume      = "mesh-shared"
	TokenVolume       = "mesh-token"
	// LogsVolume is the app's log directory, SharedDir/logs: read-write in
	// the app's containers, read-only in the proxy (its log adapter).
	LogsVolume = "mesh-logs"
	// SpoolVolume is the log shipper's spool (mesh-proxy --spool-dir), on
	// the node's disk and bounded by SpoolSize; never the memory-backed
	// state volume.
	SpoolVolume = "mesh-spool"

	// InjectedAnnotation marks an injected pod template with the version
	// of meshctl (or meshd's webhook) that injected it.
	InjectedAnnotation = "minimesh.dev/injected"
	// OptOutAnnotation "false" on a pod (template) leaves it as it is:
	// the webhook admits it without the sidecar, and the command writes
	// its document unchanged.
	OptOutAnnotation = "minimesh.io/inject"
	// ExternalAnnotation on a pod (template), "NAME=PORT[,NAME=PORT...]",
	// gives the app a local port for each named ExternalService of its
	// namespace (the ambassador): mesh-proxy --external=NAME=127.0.0.1:PORT,
	// where the app speaks plain TCP or HTTP and the proxy originates TLS,
	// verifies the server and presents the client certificate.
	ExternalAnnotation = "minimesh.io/external"

	// TokenAudience and TokenExpirationSeconds are those of the projected
	// service-account token the proxy presents to meshd (which reviews it
	// with this audience); 600 s is the API's minimum.
	TokenAudience          = "minimesh"
	TokenExpirationSeconds = 600

	ProxyInboundPort = api.ProxyInboundPort // mTLS from other proxies, and captured inbound
	ProxyAdminPort   = 15020                // /ready, /metrics, /app-health/... on the pod IP
	// ProxyOutboundPort receives the app's captured outbound traffic
	// (mesh-proxy --transparent), ProxyHTTPPort is the Host-routed HTTP
	// port it hands HTTP to (mesh-proxy --outbound-http, loopback).
	ProxyOutboundPort = 15001
	ProxyHTTPPort     = 15080
	ProxyUID          = api.ProxyUID

	// StateDir is the state volume (an emptyDir: root's, 0777); the
	// proxy's 0700 state dir is StateDir/proxy. It is under /run, not
	// /var/run: in the image /var/run is a symbolic link to /run, and
	// mesh-proxy refuses a state dir with a symbolic link on its path.
	StateDir  = "/run/minimesh/state"
	SharedDir = "/var/run/minimesh/shared"
	LogsDir   = SharedDir + "/" + api.LogsDir
	SpoolDir  = "/var/spool/minimesh"
	SpoolSize = "512Mi"
	// LogsSize bounds the app's log directory (LogsVolume) on the node's
	// disk: an app that writes logs without rotating them gets its pod
	// evicted by the kubelet instead of filling the node.
	LogsSize = "1Gi"
	TokenDir = "/var/run/minimesh/token"

	// MaxInput bounds what the command reads.
	MaxInput = 32 << 20
)

// Options are inject's flags. The zero value of each field takes the
// default beside it.
type Options struct {
	Image        string // mesh-proxy's image; "minimesh/minimesh:<version>"
	ControlPlane string // meshd's address; "meshd.minimesh-system.svc:15010"
	TrustDomain  string // "minimesh.local"
	// Service is the service the pods serve; default their
	// serviceAccountName (their identity is spiffe://TD/ns/NS/sa/SA).
	Service string
	// CAPins are the pins (sha256:<hex>) of every root in meshd's current
	// bundle, passed to mesh-proxy as one comma list (--ca-pin): it
	// authenticates meshd by any one of them before it sends its
	// service-account token. Required unless JoinTokenSecret is set.
	CAPins []string
	// JoinTokenSecret, when set, is the old form, for clusters where meshd
	// has no API access: the proxy bootstraps with a join token from this
	// Secret (in the pod's namespace, keys "token" and "ca-pin") instead of
	// its projected service-account token, and CAPins is not used.
	JoinTokenSecret string
	// AppPort is the app's port that mesh-proxy forwards to and whose
	// inbound traffic is captured; default the single TCP port the app
	// containers declare (or, when re-injecting, the one used before).
	AppPort int
	// Upstreams are passed to mesh-proxy as --upstream, checked first.
	Upstreams []string
	// CaptureOutbound redirects the app's outbound TCP to mesh-proxy's
	// transparent listener (ProxyOutboundPort): HTTP (to a port a Service
	// declares http, or whose first bytes are a request line) goes to the
	// Host-routed port, so a mesh service by name (api, api.ns, api.ns.svc)
	// is reached over mTLS and an outside host only through --egress (else
	// 502); anything else goes on to where it was going, as it is. Off by
	// default because it catches all of the app's outbound traffic.
	CaptureOutbound bool
}

func (o Options) withDefaults() Options {
	if o.Image == "" {
		o.Image = "minimesh/minimesh:" + version.Version
	}
	if o.ControlPlane == "" {
		o.ControlPlane = "meshd.minimesh-system.svc:15010"
	}
	if o.TrustDomain == "" {
		o.TrustDomain = "minimesh.local"
	}
	return o
}

// Inject adds mesh-proxy to every pod template of the YAML documents in
// (a stream separated by ---) and returns them, in order: a Pod,
// Deployment, StatefulSet, DaemonSet or Job re-encoded with the sidecar
// (or as it is, when annotated OptOutAnnotation: "false"), any other
// object (Service, ConfigMap...) unchanged. A workload of another kind or
// API version (CronJob, ReplicaSet, a List...), whose pods it would leave
// without the sidecar, or a workload that does not decode strictly into
// its Kubernetes type, is refused and nothing is returned.
// Inject(Inject(x)) == Inject(x).
func Inject(in []byte, opts Options) ([]byte, error) {
	opts, err := opts.check()
	if err != nil {
		return nil, err
	}
	docs, err := splitYAML(in)
	if err != nil {
		return nil, err
	}
	if len(docs) == 0 {
		return nil, errors.New("inject: no Kubernetes object in the input")
	}
	var out bytes.Buffer
	for i, doc := range docs {
		b, err := injectDoc(doc, opts)
		if err != nil {
			return nil, fmt.Errorf("inject: document %d: %w", i+1, err)
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(b)
	}
	return out.Bytes(), nil
}

// check applies the defaults and refuses options that cannot work, naming
// the flag.
func (o Options) check() (Options, error) {
	opts := o.withDefaults()
	for _, u := range opts.Upstreams {
		// The shape only (SERVICE=LOCALADDR, or with =REMOTEADDR=SPIFFEID
		// for a static endpoint); mesh-proxy checks the rest when it starts.
		f := strings.Split(u, "=")
		if (len(f) != 2 && len(f) != 4) || slices.Contains(f, "") || (len(f) == 4 && !strings.HasPrefix(f[3], "spiffe://")) || strings.ContainsAny(u, " \t\n") {
			return opts, fmt.Errorf("inject: --upstream %q: want SERVICE=LOCALADDR or SERVICE=LOCALADDR=REMOTEADDR=SPIFFEID (spiffe://)", u)
		}
	}
	if opts.AppPort < 0 || opts.AppPort > 65535 {
		return opts, fmt.Errorf("inject: --port %d: not a TCP port", opts.AppPort)
	}
	if opts.JoinTokenSecret != "" {
		if !validName(opts.JoinTokenSecret) {
			return opts, fmt.Errorf("inject: --join-token-secret %q: not a Secret name (lower case letters, digits, '-' and '.', at most 253)", opts.JoinTokenSecret)
		}
		return opts, nil
	}
	if len(opts.CAPins) == 0 {
		return opts, errors.New("inject: --ca-pin: the pins of meshd's roots are required (meshctl asks meshd for them; or --join-token-secret NAME for the join-token form)")
	}
	for _, p := range opts.CAPins {
		if _, err := certs.ParsePin(p); err != nil {
			return opts, fmt.Errorf("inject: --ca-pin %q: %w", p, err)
		}
	}
	return opts, nil
}

// validName is a DNS subdomain name, as a Secret's.
func validName(s string) bool {
	if s == "" || len(s) > 253 || s[0] == '-' || s[0] == '.' || s[len(s)-1] == '-' || s[len(s)-1] == '.' {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// splitYAML returns the non-empty documents of a YAML stream.
func splitYAML(in []byte) ([][]byte, error) {
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(in)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("inject: split documents: %w", err)
		}
		var probe any
		if err := yaml.Unmarshal(doc, &probe); err != nil {
			return nil, fmt.Errorf("inject: document %d: %w", len(docs)+1, err)
		}
		if probe != nil {
			docs = append(docs, doc)
		}
	}
}

// workloadKinds have pods that inject does not handle: passing them
// through would leave their pods without the sidecar, unnoticed.
var workloadKinds = map[string]bool{"Pod": true, "Deployment": true, "StatefulSet": true, "DaemonSet": true, "Job": true,
	"CronJob": true, "ReplicaSet": true, "ReplicationController": true}

// injectDoc decodes one workload document strictly into its type, injects
// its pod template and encodes it again; any other object is returned as
// it is.
func injectDoc(doc []byte, opts Options) ([]byte, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	var (
		obj  any
		meta *metav1.ObjectMeta
		name *metav1.ObjectMeta
		spec *corev1.PodSpec
	)
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Pod":
		o := &corev1.Pod{}
		obj, name, meta, spec = o, &o.ObjectMeta, &o.ObjectMeta, &o.Spec
	case "apps/v1 Deployment":
		o := &appsv1.Deployment{}
		obj, name, meta, spec = o, &o.ObjectMeta, &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
	case "apps/v1 StatefulSet":
		o := &appsv1.StatefulSet{}
		obj, name, meta, spec = o, &o.ObjectMeta, &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
	case "apps/v1 DaemonSet":
		o := &appsv1.DaemonSet{}
		obj, name, meta, spec = o, &o.ObjectMeta, &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
	case "batch/v1 Job":
		o := &batchv1.Job{}
		obj, name, meta, spec = o, &o.ObjectMeta, &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
	default:
		switch {
		case tm.Kind == "" || tm.APIVersion == "":
			return nil, errors.New("no kind or apiVersion: not a Kubernetes object")
		case workloadKinds[tm.Kind] || strings.HasSuffix(tm.Kind, "List"):
			return nil, fmt.Errorf("%s %q cannot be injected: only Pod (v1), Deployment, StatefulSet, DaemonSet (apps/v1) and Job (batch/v1) have pods to inject", tm.Kind, tm.APIVersion)
		}
		// Not a workload (Service, ConfigMap, ...): as it is.
		if !bytes.HasSuffix(doc, []byte("\n")) {
			doc = append(doc[:len(doc):len(doc)], '\n')
		}
		return doc, nil
	}
	if err := decodeStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if meta.Annotations[OptOutAnnotation] == "false" {
		return encodeObject(obj)
	}
	if err := injectPod(meta, spec, opts); err != nil {
		return nil, fmt.Errorf("%s %s: %w", tm.Kind, name.Name, err)
	}
	return encodeObject(obj)
}

// PodJSON is inject for one Pod as the API server sends it to a mutating
// admission webhook (JSON). before and after are the pod's JSON through
// the same typed round trip, without and with the sidecar, so their
// difference is inject's change alone: a field the pod has and k8s.io/api
// does not know (an API server newer than meshd) is in neither, and a
// patch from one to the other leaves it alone. The pod is decoded
// leniently for that reason (the API server has decoded it already), case
// sensitively. A pod annotated OptOutAnnotation: "false" has after ==
// before. The error is inject's reason, as the command would print it
// (without its "inject: document N:" prefix).
func PodJSON(raw []byte, opts Options) (before, after []byte, err error) {
	opts, err = opts.check()
	if err != nil {
		return nil, nil, err
	}
	var pod corev1.Pod
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, &pod); err != nil {
		return nil, nil, fmt.Errorf("inject: Pod: %w", err)
	}
	if before, err = encodeJSON(&pod); err != nil {
		return nil, nil, err
	}
	if pod.Annotations[OptOutAnnotation] == "false" {
		return before, before, nil
	}
	if err := injectPod(&pod.ObjectMeta, &pod.Spec, opts); err != nil {
		name := pod.Name
		if name == "" {
			name = pod.GenerateName
		}
		return nil, nil, fmt.Errorf("pod %s: %w", name, err)
	}
	if after, err = encodeJSON(&pod); err != nil {
		return nil, nil, err
	}
	return before, after, nil
}

// Encode writes a Kubernetes object as the command writes it (YAML,
// without the empty fields a typed round trip adds).
func Encode(obj any) ([]byte, error) { return encodeObject(obj) }

// decodeStrict decodes a YAML document the way the API server does: case
// sensitive, and an unknown or duplicate field is an error naming its path.
func decodeStrict(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := sigsjson.UnmarshalStrict(j, obj)
	if err != nil {
		return err
	}
	if len(strict) > 0 {
		return errors.Join(strict...)
	}
	return nil
}

// encodeObject writes obj as YAML without the empty fields a typed
// round trip adds (creationTimestamp: null, status: {}, resources: {}...).
func encodeObject(obj any) ([]byte, error) {
	m, err := pruned(obj)
	if err != nil {
		return nil, err
	}
	return yaml.Marshal(m)
}

// encodeJSON is encodeObject's JSON.
func encodeJSON(obj any) ([]byte, error) {
	m, err := pruned(obj)
	if err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

func pruned(obj any) (map[string]any, error) {
	j, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	prune(m)
	return m, nil
}

// emptyPrunable are the keys whose empty object a typed round trip
// writes out although the input had none; an empty object under any
// other key (emptyDir: {}) means something and stays.
var emptyPrunable = map[string]bool{"status": true, "resources": true, "strategy": true, "updateStrategy": true}

func prune(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			prune(x)
			if x == nil {
				delete(v, k)
				continue
			}
			if m, ok := x.(map[string]any); ok && len(m) == 0 && emptyPrunable[k] {
				delete(v, k)
			}
		}
	case []any:
		for _, x := range v {
			prune(x)
		}
	}
}

// injectPod adds the proxy to one pod template, after removing what an
// earlier injection added.
func injectPod(meta *metav1.ObjectMeta, spec *corev1.PodSpec, opts Options) error {
	if spec.HostNetwork {
		return errors.New("hostNetwork pods share the node's network namespace: the redirect would capture the node's traffic; refusing")
	}
	if len(spec.Containers) == 0 {
		return errors.New("pod has no containers")
	}
	prev, err := uninject(spec)
	if err != nil {
		return err
	}
	for _, c := range spec.Containers {
		if c.Name == ProxyContainer || c.Name == RedirectContainer {
			return fmt.Errorf("container name %q is mesh-proxy's own", c.Name)
		}
	}
	for _, v := range spec.Volumes {
		if isOurVolume(v.Name) {
			return fmt.Errorf("volume name %q is mesh-proxy's own", v.Name)
		}
	}

	sa := spec.ServiceAccountName
	if sa == "" {
		return errors.New("pod has no serviceAccountName: its mesh identity (spiffe://TD/ns/NS/sa/SA) would be the namespace's default account; give the workload a service account of its own")
	}
	service := opts.Service
	if service == "" {
		service = sa
	}
	port := opts.AppPort
	if port == 0 {
		port = prev.appPort
	}
	if port == 0 {
		if port, err = appPort(spec.Containers); err != nil {
			return err
		}
	}
	if err := checkPorts(spec, port); err != nil {
		return err
	}
	if err := checkUsers(spec); err != nil {
		return err
	}

	probes := api.AppProbes{}
	for i := range spec.Containers {
		c := &spec.Containers[i]
		for _, p := range probesOf(c) {
			if err := rewriteProbe(c, p.kind, p.probe, port, probes); err != nil {
				return err
			}
		}
		// The shared dir is read-only for the app but for its logs/.
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: SharedVolume, MountPath: SharedDir, ReadOnly: true},
			corev1.VolumeMount{Name: LogsVolume, MountPath: LogsDir})
	}

	appMetrics, err := appMetricsOf(meta.Annotations, prev.appMetrics)
	if err != nil {
		return err
	}
	externals, err := externalsOf(meta.Annotations[ExternalAnnotation], spec, port)
	if err != nil {
		return err
	}
	sidecar, err := proxyContainer(opts, service, port, probes, appMetrics, externals)
	if err != nil {
		return err
	}
	spec.InitContainers = append([]corev1.Container{redirectContainer(opts, port), sidecar}, spec.InitContainers...)
	spec.Volumes = append(spec.Volumes,
		corev1.Volume{Name: StateVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			// The SVID's private key lives here: in memory, never on
			// the node's disk.
			Medium: corev1.StorageMediumMemory, SizeLimit: ptr(resource.MustParse("4Mi")),
		}}},
		corev1.Volume{Name: SharedVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: LogsVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			SizeLimit: ptr(resource.MustParse(LogsSize)),
		}}},
		corev1.Volume{Name: SpoolVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			SizeLimit: ptr(resource.MustParse(SpoolSize)),
		}}},
		tokenVolume(opts),
	)
	spec.ShareProcessNamespace = ptr(true)
	if meta.Annotations == nil {
		meta.Annotations = map[string]string{}
	}
	meta.Annotations[InjectedAnnotation] = version.Version
	// Prometheus scrapes the proxy, which merges the app's own metrics
	// (--app-metrics, from the pod's prometheus.io annotations); a pod
	// with prometheus.io/scrape "false" keeps its annotations as they are.
	scrape := map[string]string{
		"prometheus.io/scrape": "true",
		"prometheus.io/port":   strconv.Itoa(ProxyAdminPort),
		"prometheus.io/path":   "/metrics",
	}
	if meta.Annotations["prometheus.io/scrape"] != "false" {
		maps.Copy(meta.Annotations, scrape)
	}
	return nil
}

// appMetricsOf is mesh-proxy's --app-metrics ("PORT" or "PORT/path") from
// the pod's prometheus.io/port and prometheus.io/path annotations, when
// they name the app's endpoint (not the proxy's admin port, set by an
// earlier injection: then the earlier flag is kept); "" for none or when
// prometheus.io/scrape is "false".
func appMetricsOf(ann map[string]string, prev string) (string, error) {
	port, ok := ann["prometheus.io/port"]
	if !ok || ann["prometheus.io/scrape"] == "false" {
		return "", nil
	}
	if port == strconv.Itoa(ProxyAdminPort) {
		return prev, nil
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return "", fmt.Errorf("annotation prometheus.io/port %q: not a port (1 to 65535)", port)
	}
	v := port
	if p := ann["prometheus.io/path"]; p != "" && p != api.DefaultMetricsPath {
		if !strings.HasPrefix(p, "/") {
			return "", fmt.Errorf("annotation prometheus.io/path %q: must start with /", p)
		}
		v += p
	}
	if _, err := api.ParseAppMetricsFlag(v); err != nil {
		return "", fmt.Errorf("annotations prometheus.io/port and path: %w", err)
	}
	return v, nil
}

// maxExternals bounds the entries of ExternalAnnotation.
const maxExternals = 64

// externalsOf is mesh-proxy's --external flags from the pod's
// ExternalAnnotation ("" for none): each NAME an ExternalService name (a
// DNS label), each PORT one that nobody else in the pod uses (not the
// app's, not a declared container port, not mesh-proxy's own), no name
// or port twice.
func externalsOf(ann string, spec *corev1.PodSpec, appPort int) ([]string, error) {
	if strings.TrimSpace(ann) == "" {
		return nil, nil
	}
	taken := map[int]string{appPort: "the app's port"}
	for _, p := range []int{ProxyInboundPort, ProxyAdminPort, ProxyOutboundPort, ProxyHTTPPort} {
		taken[p] = "mesh-proxy's own"
	}
	for _, cs := range [][]corev1.Container{spec.Containers, spec.InitContainers} {
		for _, c := range cs {
			for _, p := range c.Ports {
				if _, ok := taken[int(p.ContainerPort)]; !ok {
					taken[int(p.ContainerPort)] = "declared by container " + c.Name
				}
			}
		}
	}
	bad := func(entry, why string) error {
		return fmt.Errorf("annotation %s: %q: %s", ExternalAnnotation, entry, why)
	}
	if n := strings.Count(ann, ",") + 1; n > maxExternals {
		return nil, fmt.Errorf("annotation %s: %d entries, at most %d", ExternalAnnotation, n, maxExternals)
	}
	names := map[string]bool{}
	var flags []string
	for entry := range strings.SplitSeq(ann, ",") {
		entry = strings.TrimSpace(entry)
		name, port, ok := strings.Cut(entry, "=")
		if !ok {
			return nil, bad(entry, "want NAME=PORT (an ExternalService of this namespace and a local port for it)")
		}
		if !api.IsLabel(name) {
			return nil, bad(entry, "NAME is not an ExternalService name (a DNS label: lower-case letters, digits and '-', at most 63)")
		}
		if names[name] {
			return nil, bad(entry, "the service is named twice")
		}
		names[name] = true
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return nil, bad(entry, "PORT is not a port (1 to 65535)")
		}
		if who, ok := taken[int(n)]; ok {
			return nil, bad(entry, fmt.Sprintf("port %d is taken (%s)", n, who))
		}
		taken[int(n)] = "ExternalService " + name
		flags = append(flags, "--external="+name+"=127.0.0.1:"+port)
	}
	return flags, nil
}

// isOurVolume reports whether a volume name is one inject adds.
func isOurVolume(name string) bool {
	switch name {
	case StateVolume, SharedVolume, TokenVolume, LogsVolume, SpoolVolume:
		return true
	}
	return false
}

// previous is what an earlier injection chose that a new one keeps.
type previous struct {
	appPort    int
	appMetrics string // --app-metrics
}

// uninject removes an earlier injection: our containers, volumes and
// mounts, and the app's probes are restored from the proxy's
// MESH_APP_PROBES.
func uninject(spec *corev1.PodSpec) (previous, error) {
	var prev previous
	i := slices.IndexFunc(spec.InitContainers, func(c corev1.Container) bool { return c.Name == ProxyContainer })
	if i < 0 {
		if slices.ContainsFunc(spec.InitContainers, func(c corev1.Container) bool { return c.Name == RedirectContainer }) {
			return prev, fmt.Errorf("init container %q without %q: not an injection of meshctl's; refusing to guess", RedirectContainer, ProxyContainer)
		}
		return prev, nil
	}
	sidecar := spec.InitContainers[i]
	for _, a := range sidecar.Args {
		if v, ok := strings.CutPrefix(a, "--app=127.0.0.1:"); ok {
			prev.appPort, _ = strconv.Atoi(v)
		}
		if v, ok := strings.CutPrefix(a, "--app-metrics="); ok {
			prev.appMetrics = v
		}
	}
	var probes api.AppProbes
	for _, e := range sidecar.Env {
		if e.Name == "MESH_APP_PROBES" {
			var err error
			if probes, err = api.ParseAppProbes(e.Value); err != nil {
				return prev, fmt.Errorf("earlier injection: %w", err)
			}
		}
	}
	for ci := range spec.Containers {
		c := &spec.Containers[ci]
		for _, kp := range probesOf(c) {
			kind, p := kp.kind, kp.probe
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.IntValue() != ProxyAdminPort || !strings.HasPrefix(p.HTTPGet.Path, api.AppHealthPrefix) {
				continue
			}
			orig, ok := probes[api.AppProbePath(c.Name, kind)]
			if !ok {
				return prev, fmt.Errorf("earlier injection: container %s's probe %s is not in %s's MESH_APP_PROBES", c.Name, p.HTTPGet.Path, ProxyContainer)
			}
			p.HTTPGet = nil
			if h := orig.HTTPGet; h != nil {
				p.HTTPGet = &corev1.HTTPGetAction{Path: h.Path, Port: intstr.FromInt32(int32(h.Port)), Scheme: corev1.URIScheme(h.Scheme)}
				for _, hd := range h.HTTPHeaders {
					p.HTTPGet.HTTPHeaders = append(p.HTTPGet.HTTPHeaders, corev1.HTTPHeader{Name: hd.Name, Value: hd.Value})
				}
			} else {
				p.TCPSocket = &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(orig.TCPSocket.Port))}
			}
		}
		c.VolumeMounts = slices.DeleteFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == SharedVolume || m.Name == LogsVolume })
	}
	spec.InitContainers = slices.DeleteFunc(spec.InitContainers, func(c corev1.Container) bool {
		return c.Name == ProxyContainer || c.Name == RedirectContainer
	})
	spec.Volumes = slices.DeleteFunc(spec.Volumes, func(v corev1.Volume) bool { return isOurVolume(v.Name) })
	return prev, nil
}

type kindProbe struct {
	kind  string
	probe *corev1.Probe
}

// probesOf lists a container's probes with the kind each gets in its
// /app-health/ path, in a fixed order.
func probesOf(c *corev1.Container) []kindProbe {
	return []kindProbe{{"livez", c.LivenessProbe}, {"readyz", c.ReadinessProbe}, {"startupz", c.StartupProbe}}
}

// appPort is the one TCP port the app containers declare.
func appPort(cs []corev1.Container) (int, error) {
	var ports []int
	for _, c := range cs {
		for _, p := range c.Ports {
			if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
				ports = append(ports, int(p.ContainerPort))
			}
		}
	}
	slices.Sort(ports)
	ports = slices.Compact(ports)
	switch len(ports) {
	case 1:
		return ports[0], nil
	case 0:
		return 0, errors.New("the app declares no TCP containerPort: declare it, or pass --port")
	default:
		return 0, fmt.Errorf("the app declares the TCP ports %v and mesh-proxy serves one: pass --port", ports)
	}
}

// checkPorts refuses an app that uses the proxy's ports.
func checkPorts(spec *corev1.PodSpec, app int) error {
	own := []int{ProxyInboundPort, ProxyAdminPort}
	if slices.Contains(own, app) {
		return fmt.Errorf("app port %d is mesh-proxy's own", app)
	}
	for _, cs := range [][]corev1.Container{spec.Containers, spec.InitContainers} {
		for _, c := range cs {
			for _, p := range c.Ports {
				if slices.Contains(own, int(p.ContainerPort)) {
					return fmt.Errorf("container %s declares port %d, which is mesh-proxy's own", c.Name, p.ContainerPort)
				}
			}
		}
	}
	return nil
}

// checkUsers refuses an app that runs as the proxy's user: its traffic
// would never be captured.
func checkUsers(spec *corev1.PodSpec) error {
	if sc := spec.SecurityContext; sc != nil && sc.RunAsUser != nil && *sc.RunAsUser == ProxyUID {
		return fmt.Errorf("the pod runs as UID %d, mesh-proxy's: its traffic would pass the redirect", ProxyUID)
	}
	for _, cs := range [][]corev1.Container{spec.Containers, spec.InitContainers} {
		for _, c := range cs {
			if sc := c.SecurityContext; sc != nil && sc.RunAsUser != nil && *sc.RunAsUser == ProxyUID {
				return fmt.Errorf("container %s runs as UID %d, mesh-proxy's: its traffic would pass the redirect", c.Name, ProxyUID)
			}
		}
	}
	return nil
}

// rewriteProbe points an HTTP or TCP probe at the proxy's admin port and
// records the original, so kubelet's probe is not captured by the
// redirect. exec probes and probes of another host are left alone.
func rewriteProbe(c *corev1.Container, kind string, p *corev1.Probe, appPort int, probes api.AppProbes) error {
	if p == nil {
		return nil
	}
	path := api.AppProbePath(c.Name, kind)
	switch {
	case p.HTTPGet != nil:
		if p.HTTPGet.Host != "" {
			return nil // not the pod: not captured
		}
		port, err := resolvePort(c, p.HTTPGet.Port)
		if err != nil {
			return fmt.Errorf("container %s %s probe: %w", c.Name, kind, err)
		}
		h := &api.HTTPGetProbe{Path: p.HTTPGet.Path, Port: port, Scheme: string(p.HTTPGet.Scheme)}
		for _, hd := range p.HTTPGet.HTTPHeaders {
			h.HTTPHeaders = append(h.HTTPHeaders, api.HTTPHeader{Name: hd.Name, Value: hd.Value})
		}
		probes[path] = api.AppProbe{HTTPGet: h, TimeoutSeconds: int(p.TimeoutSeconds)}
	case p.TCPSocket != nil:
		if p.TCPSocket.Host != "" {
			return nil
		}
		port, err := resolvePort(c, p.TCPSocket.Port)
		if err != nil {
			return fmt.Errorf("container %s %s probe: %w", c.Name, kind, err)
		}
		probes[path] = api.AppProbe{TCPSocket: &api.TCPSocketProbe{Port: port}, TimeoutSeconds: int(p.TimeoutSeconds)}
		p.TCPSocket = nil
	case p.GRPC != nil:
		if int(p.GRPC.Port) == appPort {
			return fmt.Errorf("container %s %s probe: a gRPC probe of the captured port %d would reach the proxy's mTLS listener; use an exec or httpGet probe", c.Name, kind, appPort)
		}
		return nil
	default:
		return nil // exec: runs in the container, no network
	}
	if err := (api.AppProbes{path: probes[path]}).Validate(); err != nil {
		return fmt.Errorf("container %s %s probe: %w", c.Name, kind, err)
	}
	p.HTTPGet = &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(ProxyAdminPort), Scheme: corev1.URISchemeHTTP}
	return nil
}

// resolvePort turns a probe's port (number or a name of the container's
// ports) into a number.
func resolvePort(c *corev1.Container, p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("port name %q is not one of container %s's ports", p.StrVal, c.Name)
}

// tokenVolume is what the proxy bootstraps with: a projected
// service-account token for meshd's audience (the kubelet renews it before
// it expires; mesh-proxy re-reads it at every use), or in the old form the
// join token from a Secret. Mounted in the proxy's container alone; the
// proxy's user is not the file's owner, so it must be readable by others.
func tokenVolume(opts Options) corev1.Volume {
	if opts.JoinTokenSecret != "" {
		return corev1.Volume{Name: TokenVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName:  opts.JoinTokenSecret,
			Items:       []corev1.KeyToPath{{Key: "token", Path: "token"}},
			DefaultMode: ptr(int32(0o444)),
		}}}
	}
	return corev1.Volume{Name: TokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
			Audience: TokenAudience, ExpirationSeconds: ptr(int64(TokenExpirationSeconds)), Path: "token",
		}}},
		DefaultMode: ptr(int32(0o444)),
	}}}
}

// redirectOutbound are the redirect's flags for outbound capture.
func (o Options) redirectOutbound() []string {
	if !o.CaptureOutbound {
		return nil
	}
	return []string{"--outbound-port=" + strconv.Itoa(ProxyOutboundPort)}
}

// redirectContainer installs the iptables rules before anything else runs.
func redirectContainer(opts Options, appPort int) corev1.Container {
	return corev1.Container{
		Name:  RedirectContainer,
		Image: opts.Image,
		Args: append([]string{
			"redirect",
			"--proxy-uid=" + strconv.Itoa(ProxyUID),
			"--inbound-port=" + strconv.Itoa(ProxyInboundPort),
			"--capture-ports=" + strconv.Itoa(appPort),
			"--exclude-inbound-ports=" + strconv.Itoa(ProxyAdminPort),
		}, opts.redirectOutbound()...),
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
		SecurityContext: &corev1.SecurityContext{
			// iptables needs root with NET_ADMIN and NET_RAW in the pod's
			// network namespace, and nothing else; it writes its lock
			// file, so the root filesystem stays writable.
			RunAsUser:                ptr(int64(0)),
			RunAsGroup:               ptr(int64(0)),
			RunAsNonRoot:             ptr(false),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(false),
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
		},
	}
}

// proxyContainer is mesh-proxy as a native sidecar.
func proxyContainer(opts Options, service string, appPort int, probes api.AppProbes, appMetrics string, externals []string) (corev1.Container, error) {
	// A service-account token, sent only to a meshd that holds one of the
	// pinned roots; or a join token, with the pin from its Secret.
	credential := []string{"--sa-token-file=" + TokenDir + "/token", "--ca-pin=" + strings.Join(opts.CAPins, ",")}
	if opts.JoinTokenSecret != "" {
		credential = []string{"--token-file=" + TokenDir + "/token"}
	}
	args := append([]string{
		"--control-plane=" + opts.ControlPlane,
		"--trust-domain=" + opts.TrustDomain,
	}, credential...)
	args = append(args,
		"--namespace=$(POD_NAMESPACE)",
		"--service-account=$(SERVICE_ACCOUNT)",
		"--service="+service,
		"--app=127.0.0.1:"+strconv.Itoa(appPort),
		"--inbound=0.0.0.0:"+strconv.Itoa(ProxyInboundPort),
		"--advertise=$(POD_IP):"+strconv.Itoa(ProxyInboundPort),
		"--admin=0.0.0.0:"+strconv.Itoa(ProxyAdminPort),
		"--state-dir="+StateDir+"/proxy",
		"--shared-dir="+SharedDir,
		"--spool-dir="+SpoolDir,
	)
	if appMetrics != "" {
		args = append(args, "--app-metrics="+appMetrics)
	}
	for _, u := range opts.Upstreams {
		args = append(args, "--upstream="+u)
	}
	args = append(args, externals...)
	if opts.CaptureOutbound {
		args = append(args, "--transparent=127.0.0.1:"+strconv.Itoa(ProxyOutboundPort),
			"--outbound-http=127.0.0.1:"+strconv.Itoa(ProxyHTTPPort))
	}
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	env := []corev1.EnvVar{
		field("POD_NAMESPACE", "metadata.namespace"),
		field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
		field("POD_IP", "status.podIP"),
	}
	if opts.JoinTokenSecret != "" {
		env = append(env, corev1.EnvVar{Name: "MESH_PROXY_CA_PIN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: opts.JoinTokenSecret}, Key: "ca-pin",
		}}})
	}
	// The Go runtime keeps the heap under the container's limit.
	env = append(env, corev1.EnvVar{Name: "GOMEMLIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
		ContainerName: ProxyContainer, Resource: "limits.memory", Divisor: resource.MustParse("1"),
	}}})
	if len(probes) > 0 {
		if err := probes.Validate(); err != nil {
			return corev1.Container{}, err
		}
		b, err := json.Marshal(probes)
		if err != nil {
			return corev1.Container{}, err
		}
		env = append(env, corev1.EnvVar{Name: "MESH_APP_PROBES", Value: string(b)})
	}
	adminGet := func(path string) corev1.ProbeHandler {
		return corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(ProxyAdminPort), Scheme: corev1.URISchemeHTTP}}
	}
	return corev1.Container{
		Name:          ProxyContainer,
		Image:         opts.Image,
		Args:          args,
		Env:           env,
		RestartPolicy: ptr(corev1.ContainerRestartPolicyAlways),
		Ports: []corev1.ContainerPort{
			{Name: "mesh-inbound", ContainerPort: ProxyInboundPort, Protocol: corev1.ProtocolTCP},
			{Name: "mesh-admin", ContainerPort: ProxyAdminPort, Protocol: corev1.ProtocolTCP},
		},
		// The app's containers start once this passes: the proxy holds
		// an SVID. Bootstrapping may wait for meshd, so allow 5 minutes.
		StartupProbe:   &corev1.Probe{ProbeHandler: adminGet("/ready"), PeriodSeconds: 1, FailureThreshold: 300, TimeoutSeconds: 1},
		ReadinessProbe: &corev1.Probe{ProbeHandler: adminGet("/ready"), PeriodSeconds: 5, FailureThreshold: 3, TimeoutSeconds: 1},
		LivenessProbe:  &corev1.Probe{ProbeHandler: adminGet("/healthz"), PeriodSeconds: 10, FailureThreshold: 3, TimeoutSeconds: 1},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: StateVolume, MountPath: StateDir},
			{Name: SharedVolume, MountPath: SharedDir},
			{Name: LogsVolume, MountPath: LogsDir, ReadOnly: true},
			{Name: SpoolVolume, MountPath: SpoolDir},
			{Name: TokenVolume, MountPath: TokenDir, ReadOnly: true},
		},
		SecurityContext: &corev1.SecurityContext{
			// The redirect lets this user's traffic pass: the proxy must
			// run as it, and nothing else may.
			RunAsUser:                ptr(int64(ProxyUID)),
			RunAsGroup:               ptr(int64(ProxyUID)),
			RunAsNonRoot:             ptr(true),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}, nil
}

func ptr[T any](v T) *T { return &v }
