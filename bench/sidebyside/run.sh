#!/usr/bin/env bash
# make bench-sidebyside: installs what the side-by-side benchmark loads and
# compares against (wrk, nginx, haproxy; perf for the profile; Caddy and
# vegeta, pinned, with go install into .bin/bench) when missing, then runs
# bench/sidebyside against the binaries `make build` put in bin/.
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

# Go tools, pinned, each in a directory of its version (the paths and
# versions main.go looks for: keep in step with tools.go).
CADDY_VERSION=v2.11.9
VEGETA_VERSION=v12.13.0
cache=$PWD/.bin/bench
if [ ! -x "$cache/caddy-$CADDY_VERSION/caddy" ]; then
	echo "== installing caddy $CADDY_VERSION (go install, a few minutes)"
	GOBIN="$cache/caddy-$CADDY_VERSION" go install "github.com/caddyserver/caddy/v2/cmd/caddy@$CADDY_VERSION"
fi
if [ ! -x "$cache/vegeta-$VEGETA_VERSION/vegeta" ]; then
	echo "== installing vegeta $VEGETA_VERSION (go install)"
	GOBIN="$cache/vegeta-$VEGETA_VERSION" go install "github.com/tsenart/vegeta/v12@$VEGETA_VERSION"
fi

exec go run ./bench/sidebyside "$@"
