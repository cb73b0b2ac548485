#!/usr/bin/env bash
# make bench-sidebyside: installs what the side-by-side benchmark loads and
# compares against (wrk, nginx, haproxy; perf for the profile) when missing,
# then runs bench/sidebyside against the binaries `make build` put in bin/.
# Arguments are passed on, e.g. bench/sidebyside/run.sh -rounds 1 -duration 3s.
# On a machine with systemd, installing nginx and haproxy also starts their
# default services; the benchmark runs its own instances on loopback ports.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
if ((${#need[@]})); then
	sudo=()
	if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi
	echo "== installing ${need[*]}"
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v perf >/dev/null; then
	sudo=()
	if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi
	# The profile is optional: without perf the table is still written.
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq linux-perf >/dev/null 2>&1 ||
		echo "== perf not installed: no profile" >&2
fi

exec go run ./bench/sidebyside "$@"
