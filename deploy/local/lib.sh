# Shared by demo.sh and demo-ha.sh (sourced): process bookkeeping, waiting
# for a component, and the mesh's resources. Expects WORK, and an array
# pids; DEMO_NAME names the script in errors, WAIT_TRIES bounds wait_ok
# (tenths of a second).

cleanup() {
	trap - EXIT INT TERM
	echo
	echo "== stopping (logs were in $WORK)"
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$WORK"
}

start() { # name command...
	local name=$1
	shift
	"$@" >"$WORK/$name.log" 2>&1 &
	pids+=($!)
}

wait_ok() { # what command...
	local what=$1
	shift
	for _ in $(seq 1 "${WAIT_TRIES:-100}"); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	echo "${DEMO_NAME:-demo}: $what did not come up; the logs:" >&2
	tail -n 20 "$WORK"/*.log >&2 || true
	exit 1
}

# write_mesh_yaml FILE API_PORT WEB_PORT: the Services web and api (on
# their apps' ports) and a Route with a timeout and retries.
write_mesh_yaml() {
	cat >"$1" <<YAML
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: api}
spec:
  ports: [{name: http, port: $2, protocol: http}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/api"]
---
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: $3, protocol: http}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/web"]
---
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: api}
spec:
  service: api
  backends: [{service: api}]
  timeout: 2s
  retries: {attempts: 2, perTryTimeout: 500ms, retryOn: [connect-failure, gateway-error]}
YAML
}
