#!/usr/bin/env bash
# The sidecar's other roles on this machine. Ambassador: web's app reaches
# an HTTPS service outside the mesh as plain HTTP on localhost; web's
# mesh-proxy originates TLS, verifies the server against the
# ExternalService's caBundle and server name, and answers 502 with the
# reason when it does not verify. (The "outside" HTTPS service is a
# demo-app behind a mesh-proxy's public TLS port, with a certificate of its
# own: no mesh identity is involved.) Log shipping: the partner proxy's
# access log goes to an S3-compatible store (versitygw, make
# .bin/versitygw) in gzip batches. Adapter: the partner app's own log
# file (a stack trace per failed request) becomes one JSON record per
# entry on its proxy's output, and its own /metrics joins the proxy's.
# DEMO_ONCE=1 runs it once and exits
# (make demo-roles-check); DEMO_PORT_BASE moves every port (default 19000).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN="$ROOT/bin"
BASE=${DEMO_PORT_BASE:-19000}
ONCE=${DEMO_ONCE:-0}
WORK=$(mktemp -d -t minimesh-demo-roles.XXXXXX)
chmod 700 "$WORK"

MESHD=127.0.0.1:$((BASE + 10))
PARTNER_APP=127.0.0.1:$((BASE + 81))
PARTNER_IN=127.0.0.1:$((BASE + 106))
PARTNER_ADMIN=127.0.0.1:$((BASE + 100))
PARTNER_HTTPS=127.0.0.1:$((BASE + 443))
WEB_APP=127.0.0.1:$((BASE + 80))
WEB_IN=127.0.0.1:$((BASE + 206))
WEB_ADMIN=127.0.0.1:$((BASE + 200))
WEB_TO_PARTNER=127.0.0.1:$((BASE + 301))
WEB_TO_IMPOSTOR=127.0.0.1:$((BASE + 302))
WEB_HOST_ROUTED=127.0.0.1:$((BASE + 300))
S3=127.0.0.1:$((BASE + 70))

pids=()
DEMO_NAME=demo-roles WAIT_TRIES=100
# shellcheck source=deploy/local/lib.sh
. "$(dirname "$0")/lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

export MESHCTL_SERVER=$MESHD MESHCTL_CREDENTIALS=$WORK/meshd/operator
meshctl() { "$BIN/meshctl" "$@"; }

echo "== meshd on $MESHD (data in $WORK/meshd)"
start meshd "$BIN/meshd" --data-dir "$WORK/meshd" --listen "$MESHD"
wait_ok meshd meshctl proxies

partner_out=$(meshctl token create --ns default --sa partner)
web_out=$(meshctl token create --ns default --sa web)
PIN=$(awk '/^ca-pin:/{print $2}' <<<"$web_out")
(umask 077 && awk '/^token:/{print $2}' <<<"$partner_out" >"$WORK/partner.token" &&
	awk '/^token:/{print $2}' <<<"$web_out" >"$WORK/web.token")

echo "== the outside HTTPS service on $PARTNER_HTTPS (its own certificate for localhost and 127.0.0.1)"
mkdir -p "$WORK/partner-shared/logs" # in Kubernetes: inject's mesh-shared and mesh-logs volumes
start partner-app "$BIN/demo-app" serve --name partner --listen "$PARTNER_APP" --log "$WORK/partner-shared/logs/app.log"
"$BIN/demo-app" gencert --cert "$WORK/partner.crt" --key "$WORK/partner.key"
start partner-proxy "$BIN/mesh-proxy" --control-plane "$MESHD" --token-file "$WORK/partner.token" --ca-pin "$PIN" \
	--service partner --app "$PARTNER_APP" --inbound "$PARTNER_IN" --admin "$PARTNER_ADMIN" --state-dir "$WORK/partner-proxy" \
	--public "$PARTNER_HTTPS" --public-cert "$WORK/partner.crt" --public-key "$WORK/partner.key" \
	--access-log "$WORK/partner-access.log" --spool-dir "$WORK/partner-spool" \
	--shared-dir "$WORK/partner-shared" --app-metrics "${PARTNER_APP##*:}"
# Another certificate for the same names, which the caBundle does not hold.
"$BIN/demo-app" gencert --cert "$WORK/impostor.crt" --key "$WORK/impostor.key"

echo "== web's app (no TLS code) and its mesh-proxy: --external partner=$WEB_TO_PARTNER, --external impostor=$WEB_TO_IMPOSTOR"
start web-app "$BIN/demo-app" serve --name web --listen "$WEB_APP" --call "http://$WEB_TO_PARTNER/public"
start web-proxy "$BIN/mesh-proxy" --control-plane "$MESHD" --token-file "$WORK/web.token" --ca-pin "$PIN" \
	--service web --app "$WEB_APP" --inbound "$WEB_IN" --admin "$WEB_ADMIN" --state-dir "$WORK/web-proxy" \
	--external "partner=$WEB_TO_PARTNER" --external "impostor=$WEB_TO_IMPOSTOR" --outbound-http "$WEB_HOST_ROUTED"
wait_ok partner-proxy "$BIN/demo-app" get "http://$PARTNER_ADMIN/ready"
wait_ok web-proxy "$BIN/demo-app" get "http://$WEB_ADMIN/ready"

echo "== the Service web, and the ExternalServices (allowed for web only)"
{
	cat <<YAML
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: ${WEB_APP##*:}, protocol: http}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/web"]
---
apiVersion: minimesh.io/v1alpha1
kind: ExternalService
metadata: {name: partner}
spec:
  hosts: ["127.0.0.1"]
  port: ${PARTNER_HTTPS##*:}
  protocol: https
  serverName: localhost
  connectTimeout: 2s
  allowedServices: [web]
  caBundle: |
YAML
	sed 's/^/    /' "$WORK/partner.crt"
	cat <<YAML
---
apiVersion: minimesh.io/v1alpha1
kind: ExternalService
metadata: {name: impostor}
spec:
  hosts: ["localhost"]
  port: ${PARTNER_HTTPS##*:}
  protocol: https
  serverName: localhost
  allowedServices: [web]
  caBundle: |
YAML
	sed 's/^/    /' "$WORK/impostor.crt"
} >"$WORK/external.yaml"
sed -n '8,20s/^/  /p' "$WORK/external.yaml"
echo "  ..."
echo "\$ meshctl apply -f external.yaml"
meshctl apply -f "$WORK/external.yaml"
echo "\$ meshctl get ext"
meshctl get ext
wait_ok "the partner through localhost" "$BIN/demo-app" get "http://$WEB_TO_PARTNER/public"

echo
echo "== web's app -> plain HTTP on localhost -> web's mesh-proxy -> HTTPS, verified -> the partner"
echo "\$ demo-app get http://$WEB_TO_PARTNER/public"
"$BIN/demo-app" get "http://$WEB_TO_PARTNER/public"
echo
echo "== the same by Host on web's --outbound-http port"
echo "\$ curl -H 'Host: 127.0.0.1:${PARTNER_HTTPS##*:}' http://$WEB_HOST_ROUTED/public"
if command -v curl >/dev/null; then curl -sS -H "Host: 127.0.0.1:${PARTNER_HTTPS##*:}" "http://$WEB_HOST_ROUTED/public"; fi
echo
echo "== a server whose certificate the caBundle does not hold: 502, and why"
echo "\$ demo-app get http://$WEB_TO_IMPOSTOR/public"
if "$BIN/demo-app" get "http://$WEB_TO_IMPOSTOR/public"; then
	echo "demo-roles: the impostor was not refused" >&2
	exit 1
fi
echo
echo "== the calls in web's metrics (destination_service is the ExternalService, destination_kind=\"external\")"
"$BIN/demo-app" get "http://$WEB_ADMIN/metrics" | grep '^minimesh_proxy_outbound_requests_total' | grep -v ' 0$' || true
echo
echo "== web's view of its ExternalServices: hosts, failures in a row, ejection; its local ports (loopback only)"
echo "\$ curl http://$WEB_ADMIN/external"
"$BIN/demo-app" get "http://$WEB_ADMIN/external" | grep -E '"(name|address|consecutive_failures|ejected|declared)"' | sed 's/^ *//' | paste -sd' ' | sed 's/ "name"/\n"name"/g'

echo
echo "== log shipping: partner's access log to an S3-compatible store (versitygw, posix backend in $WORK/s3) on $S3"
# The Makefile names the tool by its absolute path ($(CURDIR)/.bin/...).
[ -x "$ROOT/.bin/versitygw" ] || make -C "$ROOT" "$(cd "$ROOT" && pwd -P)/.bin/versitygw"
mkdir -p "$WORK/s3/mesh-logs"
S3_ACCESS=demo$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n') S3_SECRET=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
(umask 077 && printf 'access_key_id=%s\nsecret_access_key=%s\n' "$S3_ACCESS" "$S3_SECRET" >"$WORK/s3-credentials")
ROOT_ACCESS_KEY_ID=$S3_ACCESS ROOT_SECRET_ACCESS_KEY=$S3_SECRET start s3 "$ROOT/.bin/versitygw" --port "$S3" --quiet posix "$WORK/s3"
cat >"$WORK/logs.yaml" <<YAML
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: partner}
spec:
  ports: [{name: http, port: ${PARTNER_APP##*:}, protocol: http}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/partner"]
---
apiVersion: minimesh.io/v1alpha1
kind: AccessLog
metadata: {name: partner-log}
spec:
  service: partner
  enabled: true
  fields: [time, source_address, method, path, status, duration_ms, request_id]
---
apiVersion: minimesh.io/v1alpha1
kind: LogShipping
metadata: {name: partner-logs}
spec:
  service: partner
  endpoint: http://$S3
  bucket: mesh-logs
  pathStyle: true
  credentialsFile: $WORK/s3-credentials
  batchAge: 2s
YAML
sed 's/^/  /' "$WORK/logs.yaml"
echo "\$ meshctl apply -f logs.yaml"
meshctl apply -f "$WORK/logs.yaml"
wait_ok "partner's LogShipping" grep -q 'log shipping on' "$WORK/partner-proxy.log"
for _ in 1 2 3; do "$BIN/demo-app" get "http://$WEB_TO_PARTNER/public" >/dev/null; done
echo "== three calls later, the batch in the bucket (object key <service>/<pod>/<instance>/<first>-<last>.jsonl.gz):"
WAIT_TRIES=150 wait_ok "the shipped batch" sh -c "find '$WORK/s3/mesh-logs' -name '*.jsonl.gz' | grep -q ."
find "$WORK/s3/mesh-logs" -name '*.jsonl.gz' -printf '  mesh-logs/%P\n'
find "$WORK/s3/mesh-logs" -name '*.jsonl.gz' -exec gzip -dc {} + | sed 's/^/  /'
"$BIN/demo-app" get "http://$PARTNER_ADMIN/metrics" | grep -E '^minimesh_logship_(records_shipped|batches_uploaded)_total' | sed 's/^/  /' || true

echo
echo "== adapter: the partner app writes its own log (a Python stack trace per failure) in $WORK/partner-shared/logs"
cat >"$WORK/adapter.yaml" <<'YAML'
apiVersion: minimesh.io/v1alpha1
kind: LogAdapter
metadata: {name: partner-app-log}
spec:
  service: partner
  files: ["logs/*.log"]
  recordStart: '\d{4}-\d{2}-\d{2}T'
  format: regex
  pattern: '^(?P<time>\S+) (?P<level>[A-Z]+) (?P<message>(?s:.*))'
YAML
sed 's/^/  /' "$WORK/adapter.yaml"
echo "\$ meshctl apply -f adapter.yaml"
meshctl apply -f "$WORK/adapter.yaml"
echo "\$ meshctl get la"
meshctl get la
"$BIN/demo-app" get "http://$WEB_TO_PARTNER/fail/order-7" >/dev/null 2>&1 || true
"$BIN/demo-app" get "http://$WEB_TO_PARTNER/public" >/dev/null
echo "== the app's log file:"
sed 's/^/  /' "$WORK/partner-shared/logs/app.log"
echo "== its records on the proxy's output (the access-log file here; stdout by default), the stack trace one record:"
wait_ok "the adapted records" grep -q '"level":"ERROR"' "$WORK/partner-access.log"
grep '"source":"app"' "$WORK/partner-access.log" | sed 's/^/  /'
echo "== the app's own metrics on the proxy's /metrics (--app-metrics ${PARTNER_APP##*:}), labelled source=\"app\":"
"$BIN/demo-app" get "http://$PARTNER_ADMIN/metrics" | grep -E '^demo_requests_total|^minimesh_proxy_(app_metrics_up|logadapter_records_total)' | sed 's/^/  /' || true

if [ "$ONCE" = 1 ]; then
	exit 0
fi
echo
echo "Running. Try: bin/demo-app get http://$WEB_TO_PARTNER/public"
echo "Press Ctrl-C to stop everything."
wait
