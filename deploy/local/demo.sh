#!/usr/bin/env bash
# The whole mesh on this machine: meshd, two sample apps (web calls api),
# each behind its own mesh-proxy, traffic over mTLS, and meshctl showing it.
# Ctrl-C stops everything. DEMO_ONCE=1 prints and exits (CI); DEMO_PORT_BASE
# moves every port (default 17000).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN="$ROOT/bin"
BASE=${DEMO_PORT_BASE:-17000}
ONCE=${DEMO_ONCE:-0}
WORK=$(mktemp -d -t minimesh-demo.XXXXXX)
chmod 700 "$WORK"

MESHD=127.0.0.1:$((BASE + 10))
API_APP=127.0.0.1:$((BASE + 81))
WEB_APP=127.0.0.1:$((BASE + 80))
API_IN=127.0.0.1:$((BASE + 106))
API_ADMIN=127.0.0.1:$((BASE + 100))
API_PUBLIC=127.0.0.1:$((BASE + 443))
WEB_IN=127.0.0.1:$((BASE + 206))
WEB_ADMIN=127.0.0.1:$((BASE + 200))
WEB_TO_API=127.0.0.1:$((BASE + 201))

pids=()
DEMO_NAME=demo WAIT_TRIES=100
# shellcheck source=deploy/local/lib.sh
. "$(dirname "$0")/lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

export MESHCTL_SERVER=$MESHD MESHCTL_CREDENTIALS=$WORK/meshd/operator
meshctl() { "$BIN/meshctl" "$@"; }

echo "== meshd on $MESHD (data in $WORK/meshd)"
start meshd "$BIN/meshd" --data-dir "$WORK/meshd" --listen "$MESHD"
wait_ok meshd meshctl proxies

echo "== join tokens (one use each, bound to default/web and default/api)"
api_out=$(meshctl token create --ns default --sa api)
web_out=$(meshctl token create --ns default --sa web)
PIN=$(awk '/^ca-pin:/{print $2}' <<<"$api_out")
API_TOKEN=$(awk '/^token:/{print $2}' <<<"$api_out")
WEB_TOKEN=$(awk '/^token:/{print $2}' <<<"$web_out")
echo "ca-pin: $PIN"
# The tokens go to mesh-proxy in files (0600), never on its command line,
# where ps and /proc show them to anyone in the pod.
(umask 077 && printf '%s\n' "$API_TOKEN" >"$WORK/api.token" && printf '%s\n' "$WEB_TOKEN" >"$WORK/web.token")

echo "== apps: api on $API_APP, web on $WEB_APP (web calls api at $WEB_TO_API, its sidecar's upstream port)"
start api-app "$BIN/demo-app" serve --name api --listen "$API_APP"
start web-app "$BIN/demo-app" serve --name web --listen "$WEB_APP" --call "http://$WEB_TO_API/hello"
"$BIN/demo-app" gencert --cert "$WORK/public.crt" --key "$WORK/public.key"

echo "== sidecars: api (mTLS in on $API_IN, public HTTPS on $API_PUBLIC), web (upstream api on $WEB_TO_API)"
start api-proxy "$BIN/mesh-proxy" --control-plane "$MESHD" --token-file "$WORK/api.token" --ca-pin "$PIN" \
	--service api --app "$API_APP" --inbound "$API_IN" --admin "$API_ADMIN" --state-dir "$WORK/api-proxy" \
	--public "$API_PUBLIC" --public-cert "$WORK/public.crt" --public-key "$WORK/public.key"
start web-proxy "$BIN/mesh-proxy" --control-plane "$MESHD" --token-file "$WORK/web.token" --ca-pin "$PIN" \
	--service web --app "$WEB_APP" --inbound "$WEB_IN" --admin "$WEB_ADMIN" --state-dir "$WORK/web-proxy" \
	--upstream "api=$WEB_TO_API"
wait_ok api-proxy "$BIN/demo-app" get "http://$API_ADMIN/ready"
wait_ok web-proxy "$BIN/demo-app" get "http://$WEB_ADMIN/ready"

echo "== the mesh's resources: web and api (on their apps' ports), a route with a timeout and retries"
write_mesh_yaml "$WORK/mesh.yaml" "${API_APP##*:}" "${WEB_APP##*:}"
echo "\$ meshctl apply -f mesh.yaml"
meshctl apply -f "$WORK/mesh.yaml"
# web finds api through the endpoints meshd pushes: wait until it has them.
wait_ok discovery "$BIN/demo-app" get "http://$WEB_TO_API/ready-check"

echo
echo "== web -> web's mesh-proxy -> mTLS -> api's mesh-proxy -> api, and back"
echo "\$ demo-app get http://$WEB_APP/call"
"$BIN/demo-app" get "http://$WEB_APP/call"
echo
echo "== an outside client -> api's public HTTPS port -> api"
echo "\$ demo-app get --cacert public.crt https://$API_PUBLIC/public"
"$BIN/demo-app" get --cacert "$WORK/public.crt" "https://$API_PUBLIC/public"
echo
echo "== meshctl proxies"
meshctl proxies
echo
echo "== meshctl proxy-status (each proxy ACKed the snapshot meshd computes for it)"
for _ in $(seq 1 50); do
	status=$(meshctl proxy-status)
	[ "$(grep -c SYNCED <<<"$status")" -ge 2 ] && break
	sleep 0.1
done
echo "$status"
echo
echo "== meshctl certs"
meshctl certs
echo
echo "== the api sidecar's certificate (http://$API_ADMIN/certs)"
"$BIN/demo-app" get "http://$API_ADMIN/certs"
echo
echo "== meshctl check (the mesh's health: fails the demo on any ✖)"
meshctl check

if [ "$ONCE" = 1 ]; then
	exit 0
fi
echo
echo "The mesh is running. Try: MESHCTL_SERVER=$MESHD MESHCTL_CREDENTIALS=$WORK/meshd/operator bin/meshctl proxies"
echo "Press Ctrl-C to stop everything."
wait
