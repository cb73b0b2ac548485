#!/usr/bin/env bash
# Three meshd replicas on one etcd (Debian's etcd binary), two apps (web
# calls api) behind sidecars whose --control-plane lists all three, traffic;
# then the replica that is the leader and holds api's stream is SIGKILLed
# while requests flow, and meshctl (given all three addresses) shows the
# survivors and that no request failed. DEMO_ONCE=1 runs it once and exits
# (make demo-ha-check); DEMO_PORT_BASE moves every port (default 18000).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN="$ROOT/bin"
BASE=${DEMO_PORT_BASE:-18000}
ONCE=${DEMO_ONCE:-0}

if ! command -v etcd >/dev/null; then
	echo "== installing Debian's etcd (etcd-server)"
	if [ "$(id -u)" = 0 ]; then apt-get install -y etcd-server >/dev/null; else sudo apt-get install -y etcd-server >/dev/null; fi
fi

WORK=$(mktemp -d -t minimesh-demo-ha.XXXXXX)
chmod 700 "$WORK"
ETCD=127.0.0.1:$((BASE + 379))
ETCD_PEER=127.0.0.1:$((BASE + 380))
M1=127.0.0.1:$((BASE + 11))
M2=127.0.0.1:$((BASE + 12))
M3=127.0.0.1:$((BASE + 13))
ALL=$M1,$M2,$M3
PREFIX=/minimesh/
API_APP=127.0.0.1:$((BASE + 81))
WEB_APP=127.0.0.1:$((BASE + 80))
API_IN=127.0.0.1:$((BASE + 106))
API_ADMIN=127.0.0.1:$((BASE + 100))
WEB_IN=127.0.0.1:$((BASE + 206))
WEB_ADMIN=127.0.0.1:$((BASE + 200))
WEB_TO_API=127.0.0.1:$((BASE + 201))

pids=()
declare -A meshd_pid
DEMO_NAME=demo-ha WAIT_TRIES=300
# shellcheck source=deploy/local/lib.sh
. "$(dirname "$0")/lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

# etcd_range KEY [RANGE_END]: "create_revision value" lines, through
# etcd's JSON gateway (no etcdctl needed).
etcd_range() {
	local body
	body=$(jq -nc --arg k "$(printf %s "$1" | base64 -w0)" --arg e "$(printf %s "${2:-}" | base64 -w0)" \
		'{key: $k} + (if $e == "" then {} else {range_end: $e} end)')
	curl -sf -X POST "http://$ETCD/v3/kv/range" -d "$body" |
		jq -r '.kvs // [] | .[] | "\(.create_revision) \(.value | @base64d)"'
}
# The leader is the election key with the lowest create revision; its
# value is the replica's name (host-PID-random).
leader_pid() { etcd_range "${PREFIX}leader/" "${PREFIX}leader0" | sort -n | head -1 | awk '{print $2}' | awk -F- '{print $(NF-1)}'; }
holder_pid() { etcd_range "${PREFIX}presence/$1" | awk '{print $2}' | awk -F- '{print $(NF-1)}'; }
leads() { [ "$(leader_pid)" = "$1" ]; }
moved_from() { # pid: a leader and api's stream exist, on another replica than pid
	local l h
	l=$(leader_pid) h=$(holder_pid "$API_ID")
	[ -n "$l" ] && [ "$l" != "$1" ] && [ -n "$h" ] && [ "$h" != "$1" ]
}

export MESHCTL_SERVER=$ALL MESHCTL_CREDENTIALS=$WORK/m1/operator
meshctl() { "$BIN/meshctl" "$@"; }

echo "== etcd on $ETCD ($(etcd --version | head -1))"
start etcd etcd --name demo --data-dir "$WORK/etcd" --listen-client-urls "http://$ETCD" --advertise-client-urls "http://$ETCD" \
	--listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" --initial-cluster "demo=http://$ETCD_PEER" \
	--auto-compaction-mode=periodic --auto-compaction-retention=1h
wait_ok etcd curl -sf "http://$ETCD/health"

head -c 32 /dev/urandom >"$WORK/ca.key"
chmod 600 "$WORK/ca.key"
meshd() { # n addr
	start "meshd-$1" "$BIN/meshd" --data-dir "$WORK/m$1" --listen "$2" --store "etcd://$ETCD" --ca-key-file "$WORK/ca.key"
	meshd_pid[$1]=${pids[-1]}
}

echo "== meshd replica 1 on $M1 (--store etcd://$ETCD, --ca-key-file generated)"
meshd 1 "$M1"
wait_ok meshd-1 meshctl --server "$M1" proxies
wait_ok "replica 1 leading" leads "${meshd_pid[1]}"

echo "== join tokens"
api_out=$(meshctl token create --ns default --sa api)
web_out=$(meshctl token create --ns default --sa web)
PIN=$(awk '/^ca-pin:/{print $2}' <<<"$api_out")
(umask 077 && awk '/^token:/{print $2}' <<<"$api_out" >"$WORK/api.token" && awk '/^token:/{print $2}' <<<"$web_out" >"$WORK/web.token")

write_mesh_yaml "$WORK/mesh.yaml" "${API_APP##*:}" "${WEB_APP##*:}"
meshctl apply -f "$WORK/mesh.yaml"

echo "== apps and sidecars (--control-plane $ALL)"
start api-app "$BIN/demo-app" serve --name api --listen "$API_APP"
start web-app "$BIN/demo-app" serve --name web --listen "$WEB_APP" --call "http://$WEB_TO_API/hello"
# api's sidecar starts while replica 1 is the only one up, so that its
# stream is on the leader: the replica this demo kills holds both.
start api-proxy "$BIN/mesh-proxy" --control-plane "$ALL" --token-file "$WORK/api.token" --ca-pin "$PIN" \
	--service api --app "$API_APP" --inbound "$API_IN" --admin "$API_ADMIN" --state-dir "$WORK/api-proxy"
wait_ok api-proxy "$BIN/demo-app" get "http://$API_ADMIN/ready"

echo "== meshd replicas 2 and 3 on $M2 and $M3"
meshd 2 "$M2"
meshd 3 "$M3"
wait_ok meshd-2 meshctl --server "$M2" proxies
wait_ok meshd-3 meshctl --server "$M3" proxies
start web-proxy "$BIN/mesh-proxy" --control-plane "$ALL" --token-file "$WORK/web.token" --ca-pin "$PIN" \
	--service web --app "$WEB_APP" --inbound "$WEB_IN" --admin "$WEB_ADMIN" --state-dir "$WORK/web-proxy" \
	--upstream "api=$WEB_TO_API"
wait_ok web-proxy "$BIN/demo-app" get "http://$WEB_ADMIN/ready"
wait_ok discovery "$BIN/demo-app" get "http://$WEB_APP/call"

API_ID=$(meshctl proxies -o json | jq -r '.proxies[] | select(.service == "api") | .instanceId')
LEADER=$(leader_pid)
HOLDER=$(holder_pid "$API_ID")
echo "leader: meshd pid $LEADER; api ($API_ID) streams to meshd pid $HOLDER"
if [ "$LEADER" != "${meshd_pid[1]}" ] || [ "$HOLDER" != "${meshd_pid[1]}" ]; then
	echo "demo-ha: replica 1 (pid ${meshd_pid[1]}) should lead and hold api's stream" >&2
	exit 1
fi

echo
echo "== traffic: web -> api through both sidecars, every 50 ms"
(
	ok=0 failed=0
	while [ ! -e "$WORK/stop-traffic" ]; do
		if "$BIN/demo-app" get "http://$WEB_APP/call" >/dev/null 2>&1; then ok=$((ok + 1)); else failed=$((failed + 1)); fi
		echo "$ok $failed" >"$WORK/traffic"
		sleep 0.05
	done
) &
pids+=($!)
sleep 2

echo "== SIGKILL replica 1 (pid ${meshd_pid[1]}: the leader, holding api's stream)"
kill -KILL "${meshd_pid[1]}"
start_kill=$(date +%s)
wait_ok "a new leader and api's stream on a survivor" moved_from "${meshd_pid[1]}"
echo "after $(($(date +%s) - start_kill))s: leader meshd pid $(leader_pid), api streams to meshd pid $(holder_pid "$API_ID")"
for _ in $(seq 1 100); do
	status=$(meshctl proxy-status)
	[ "$(grep -c SYNCED <<<"$status")" -ge 2 ] && break
	sleep 0.2
done
sleep 2
touch "$WORK/stop-traffic"
sleep 0.3
read -r ok failed <"$WORK/traffic"

echo
echo "== meshctl --server $ALL proxy-status (replica 1 is dead: meshctl fails over)"
echo "$status"
echo
echo "== the survivors (etcd's election keys: every live replica campaigns)"
etcd_range "${PREFIX}leader/" "${PREFIX}leader0" | sort -n | awk '{print "replica", $2, (NR == 1 ? "(leader)" : "")}'
echo
echo "== requests: $ok answered, $failed failed"
if [ "$failed" != 0 ] || [ "$ok" -lt 10 ]; then
	echo "demo-ha: requests failed across the kill" >&2
	exit 1
fi
if [ "$(grep -c SYNCED <<<"$status")" -lt 2 ]; then
	echo "demo-ha: the proxies are not SYNCED on the survivors" >&2
	exit 1
fi

if [ "$ONCE" = 1 ]; then
	exit 0
fi
echo
echo "Two replicas run on. Try: MESHCTL_SERVER=$ALL MESHCTL_CREDENTIALS=$WORK/m1/operator bin/meshctl proxy-status"
echo "Press Ctrl-C to stop everything."
wait
